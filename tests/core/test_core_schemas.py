"""The official XSDs ship with the product and are always used: an ACTES message flowbus would produce wrong
is refused with the XSD's own words; SEDA manifests are checked against schemas/seda without configuration;
a missing schemas folder is a configuration error, never a reason to skip the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowbus import schemas
from flowbus.connectors.tdt.actes_messages import build_annulation, build_demande_classification
from flowbus.errors import ConfigError, PermanentError

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_schema_compiles_and_has_its_provenance():
    assert schemas.directory() in (Path("schemas"), ROOT / "schemas")
    schemas.actes()
    schemas.pes_acquit()
    from flowbus.archive import seda
    for version in ("2.1", "2.2", "2.3"):
        seda.schema(schemas.seda_dir(), version)
    sources = (ROOT / "schemas" / "SOURCES.md").read_text(encoding="utf-8")
    assert "cubicweb-seda==2.4.1" in sources and "SICTIAM/stela" in sources and "libriciel/s2low" in sources


def test_a_produced_actes_message_is_validated_with_the_xsds_words():
    assert b"DemandeClassification" in build_demande_classification()
    with pytest.raises(PermanentError) as caught:
        build_annulation("pas un identifiant")
    assert caught.value.field == "actes"
    assert caught.value.message.startswith("Le message ACTES « annulation » produit n'est pas valide selon le "
                                           "schéma officiel ACTES 1.1 : ligne ")
    assert "[facet 'pattern'] The value 'pas un identifiant' is not accepted" in caught.value.message


def test_missing_schemas_are_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setattr(schemas, "_PACKAGE_SIDE", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)

    class Settings:
        schemas_dir = tmp_path / "absent"
    with pytest.raises(ConfigError) as caught:
        schemas.directory(Settings())
    assert caught.value.field == "FLOWBUS_SCHEMAS_DIR" and "introuvables" in caught.value.message
