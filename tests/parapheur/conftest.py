"""Fixtures of the parapheur flow tests: the shipped délibération flow bound to a chosen signature connector."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbus import documents
from flowbus.blobs.base import CHUNK
from flowbus.signature.pades import make_test_pdf
from flowbus.signature.pki import TestPKI, make_test_pki

ROOT = Path(__file__).resolve().parents[2]
SLOW_WAIT = "wait: {check_every: 15m, deadline: 30d}"
# poll every second and retry after 1 s (the shipped flow waits 15 min and uses the default backoff)
FAST_WAIT = "wait: {check_every: 1s, deadline: 30d}\n    retry: {attempts: 5, backoff: 1s, max_backoff: 2s}"


def deliberation_config(directory: Path, parapheur_instance: dict[str, Any]) -> Path:
    """The shipped délibération flow (signature step polling every second) with instance ``parapheur`` replaced."""
    cfg = directory / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    text = (ROOT / "config" / "flows" / "deliberation.yml").read_text(encoding="utf-8")
    assert SLOW_WAIT in text, "the signature step's wait policy of config/flows/deliberation.yml changed"
    (cfg / "flows" / "deliberation.yml").write_text(text.replace(SLOW_WAIT, FAST_WAIT, 1), encoding="utf-8")
    shipped = yaml.safe_load((ROOT / "config" / "demo" / "connectors.yml").read_text(encoding="utf-8"))["instances"]
    instances = [i for i in shipped if i["id"] != "parapheur"]
    instances.append({"id": "parapheur", "family": "signature", "entity": None, **parapheur_instance})
    (cfg / "connectors" / "instances.yml").write_text(yaml.safe_dump({"instances": instances}, allow_unicode=True),
                                                      encoding="utf-8")
    return cfg


async def _chunks(data: bytes):
    for i in range(0, len(data), CHUNK):
        yield data[i:i + CHUNK]


async def new_deliberation(rt: Any, entity_id: str, pdf: bytes, *, numero: str = "DEL2026_014",
                           objet: str = "Subvention au club de voile") -> Any:
    doc = await documents.create_document(rt, entity_id=entity_id, flow_id="deliberation", actor="test", fields={
        "objet": objet, "nature": "1", "numero_acte": numero, "date_decision": "2026-03-02",
        "classification": "7.1"})
    await documents.attach_file(rt, doc.id, "arrete", filename="deliberation.pdf", media_type="application/pdf",
                                chunks=_chunks(pdf), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return doc


@pytest.fixture(scope="session")
def seal_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("parapheur-pki"))


@pytest.fixture(scope="session")
def acte_pdf() -> bytes:
    return make_test_pdf(2, title="Délibération n° 2026-014 : subvention au club de voile")


@pytest.fixture
def deliberation_runtime(tmp_path: Path, runtime_factory: Callable[..., Any]) -> Callable[..., Any]:
    """``await deliberation_runtime({"kind": …, "settings": …})`` → a runtime with workers running."""
    async def make(instance: dict[str, Any], backend: str = "embedded") -> Any:
        return await runtime_factory(backend, config_dir=deliberation_config(tmp_path, instance))
    return make


@pytest.fixture
def deliberation() -> Callable[..., Any]:
    """``await deliberation(rt, entity_id, pdf)`` → a started délibération document."""
    return new_deliberation
