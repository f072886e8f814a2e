"""Connector kinds: (family, kind) → class, an explicit list imported lazily.

Add a line here when you add a connector class; nothing registers itself at import time.
"""

from __future__ import annotations

import importlib

from flowbus.errors import ConfigError

# family → kind → "module:Class"
CONNECTOR_CLASSES: dict[str, dict[str, str]] = {
    "test": {
        "instant": "flowbus.connectors.testing:InstantConnector",
    },
    "signature": {
        "test": "flowbus.connectors.testing:InstantConnector",
        "iparapheur": "flowbus.signature.iparapheur_connector:IParapheurConnector",
    },
    "tdt-actes": {
        "test": "flowbus.connectors.testing:InstantConnector",
        "s2low": "flowbus.connectors.tdt.steps:TdtActesConnector",
    },
    "tdt-helios": {
        "test": "flowbus.connectors.testing:InstantConnector",
        "s2low": "flowbus.connectors.tdt.steps:TdtHeliosConnector",
    },
    "mailsec": {
        "test": "flowbus.connectors.testing:InstantConnector",
    },
    "ged": {
        "test": "flowbus.connectors.testing:InstantConnector",
        "filesystem": "flowbus.connectors.ged.steps:FilesystemGed",
        "webdav": "flowbus.connectors.ged.steps:WebdavGed",
        "s3": "flowbus.connectors.ged.steps:S3Ged",
    },
    "sae": {
        "test": "flowbus.connectors.testing:InstantConnector",
    },
    "notify": {
        "test": "flowbus.connectors.testing:InstantConnector",
    },
}

FAMILIES = frozenset(CONNECTOR_CLASSES)


def connector_class(family: str, kind: str) -> type:
    kinds = CONNECTOR_CLASSES.get(family)
    if kinds is None:
        raise ConfigError(f"unknown connector family {family!r}", hint=f"known families: {', '.join(sorted(FAMILIES))}")
    target = kinds.get(kind)
    if target is None:
        raise ConfigError(f"connector family {family!r} has no kind {kind!r}",
                          hint=f"known kinds: {', '.join(sorted(kinds))}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
