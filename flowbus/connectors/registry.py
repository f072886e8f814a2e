"""Connector kinds: (family, kind) → class, an explicit list imported lazily.

Add a line here when you add a connector class; nothing registers itself at import time.
"""

from __future__ import annotations

import importlib

from flowbus.errors import ConfigError

# The test connectors (connectors/testing.py) serve every family, as Pastell's fakes do.
TEST_KINDS: dict[str, str] = {
    "test": "flowbus.connectors.testing:InstantConnector",
    "test-fail": "flowbus.connectors.testing:FailNTimesConnector",
    "test-reject": "flowbus.connectors.testing:RejectConnector",
    "test-wait": "flowbus.connectors.testing:WaitThenDoneConnector",
}

# family → kind → "module:Class"
CONNECTOR_CLASSES: dict[str, dict[str, str]] = {
    "test": {
        "instant": "flowbus.connectors.testing:InstantConnector",
        **TEST_KINDS,
    },
    "signature": {
        **TEST_KINDS,
        "iparapheur": "flowbus.signature.iparapheur_connector:IParapheurConnector",
        "seal": "flowbus.signature.steps:SealConnector",
        "local": "flowbus.signature.local_connector:LocalParapheurConnector",
    },
    "tdt-actes": {
        **TEST_KINDS,
        "s2low": "flowbus.connectors.tdt.steps:TdtActesConnector",
    },
    "tdt-helios": {
        **TEST_KINDS,
        "s2low": "flowbus.connectors.tdt.steps:TdtHeliosConnector",
    },
    "mailsec": {
        **TEST_KINDS,
        "smtp": "flowbus.connectors.mailsec.steps:MailsecConnector",
    },
    "ged": {
        **TEST_KINDS,
        "filesystem": "flowbus.connectors.ged.steps:FilesystemGed",
        "webdav": "flowbus.connectors.ged.steps:WebdavGed",
        "s3": "flowbus.connectors.ged.steps:S3Ged",
    },
    "sae": {
        **TEST_KINDS,
        "store": "flowbus.archive.steps:SaeStoreConnector",
        "asalae": "flowbus.archive.steps:SaeAsalaeConnector",
    },
    "notify": {
        **TEST_KINDS,
        "smtp": "flowbus.connectors.notify:NotifyEmailConnector",
        "http": "flowbus.connectors.notify:NotifyHttpConnector",
    },
}

FAMILIES = frozenset(CONNECTOR_CLASSES)


FAMILY_WORDS = {"signature": "signature", "tdt-actes": "télétransmission ACTES", "tdt-helios": "télétransmission "
                "PES (Hélios)", "mailsec": "courriel sécurisé", "ged": "GED", "sae": "archivage (SAE)",
                "notify": "notification", "test": "test"}


def is_test_kind(family: str, kind: str) -> bool:
    return family == "test" or kind in TEST_KINDS


def check_allowed(instance: object, *, demo: bool) -> None:
    """A test connector does nothing real: only the tests and ``flowbus serve --demo`` may run one.

    Raises:
        ConfigError: a test connector in a real install (field ``connector``).
    """
    family, kind = getattr(instance, "family", ""), getattr(instance, "kind", "")
    if not demo and is_test_kind(family, kind):
        raise ConfigError(f"Connecteur de test « {getattr(instance, 'id', '')} » ({kind}) refusé : les connecteurs "
                          "de test ne servent qu'aux tests et à la démonstration (flowbus serve --demo), ils "
                          "n'envoient rien. Configurez le vrai service dans « Connecteurs ».", field="connector")


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
