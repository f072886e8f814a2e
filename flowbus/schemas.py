"""The official XSDs the product validates what it produces against, shipped in ``schemas/`` (see
``schemas/SOURCES.md``): SEDA 2.1/2.2/2.3, ACTES 1.1, PES V2 acquit.

Found next to the configuration (``FLOWBUS_SCHEMAS_DIR``, default ``./schemas``, as the Docker image and a
checkout run) or next to the package; missing schemas are a configuration error, never a reason to skip
validation.  Compiled once per process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lxml import etree

from flowbus.errors import ConfigError, PermanentError

_PACKAGE_SIDE = Path(__file__).resolve().parents[1] / "schemas"
_COMPILED: dict[str, etree.XMLSchema] = {}
_LOCK = threading.Lock()


def directory(settings: Any = None) -> Path:
    """Where the shipped schemas are.

    Raises:
        ConfigError: no schemas folder (field ``FLOWBUS_SCHEMAS_DIR``).
    """
    candidates = [Path(getattr(settings, "schemas_dir", None) or "schemas"), _PACKAGE_SIDE]
    for candidate in candidates:
        if (candidate / "actes" / "actesv1_1.xsd").is_file():
            return candidate
    raise ConfigError("Les schémas XSD officiels sont introuvables (dossier schemas/ du projet) : flowbus ne produit "
                      "aucun message qu'il ne peut valider.", field="FLOWBUS_SCHEMAS_DIR",
                      hint=f"copy the project's schemas/ folder and set FLOWBUS_SCHEMAS_DIR (looked in "
                           f"{', '.join(str(c) for c in candidates)})")


def seda_dir(settings: Any = None) -> Path:
    configured = getattr(settings, "seda_xsd_dir", None)
    return Path(configured) if configured else directory(settings) / "seda"


def _compiled(path: Path) -> etree.XMLSchema:
    key = str(path.resolve())
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = etree.XMLSchema(etree.parse(str(path)))
        return _COMPILED[key]


def actes() -> etree.XMLSchema:
    return _compiled(directory() / "actes" / "actesv1_1.xsd")


def pes_acquit() -> etree.XMLSchema:
    return _compiled(directory() / "pes" / "PES_V2" / "Rev0" / "PES_V2_Acquit_Autonome_V2.xsd")


def check_actes(xml: bytes, what: str) -> bytes:
    """``xml`` if it validates against ACTES 1.1.

    Raises:
        PermanentError: the XSD's messages with their lines (field ``actes``).
    """
    schema = actes()
    root = etree.fromstring(xml)
    if not schema.validate(root):
        errors = "; ".join(f"ligne {e.line} : {e.message}" for e in list(schema.error_log)[:10])
        raise PermanentError(f"Le message ACTES « {what} » produit n'est pas valide selon le schéma officiel "
                             f"ACTES 1.1 : {errors}", field="actes")
    return xml
