"""Each shipped flow runs to its end through the real engine, with the shipped (test-kind) instances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowbus import documents
from flowbus.connectors.testing import calls_for
from flowbus.errors import ValidationError
from flowbus.models import Entity
from flowbus.store import repo
from tests.support.pdfs import pdf

ROOT = Path(__file__).resolve().parents[2]

PDF = pdf("Acte de test")
PES = b'<?xml version="1.0" encoding="UTF-8"?><PES_Aller/>'

CASES: dict[str, tuple[dict[str, Any], dict[str, tuple[str, str, bytes]], list[str]]] = {
    "deliberation": (
        {"objet": "Tarifs de la cantine", "nature": "1", "numero_acte": "DEL_2024_012", "date_decision": "2024-03-15",
         "classification": "7.1", "envoi_publication": True},
        {"arrete": ("deliberation.pdf", "application/pdf", PDF)},
        ["signature", "tdt", "publication", "sae"]),
    "pes": (
        {"objet": "Bordereau 42", "envoi_signature": False},
        {"pes_aller": ("PES_Aller.xml", "application/xml", PES)},
        ["tdt", "sae"]),
    "rh-contrat": (
        {"agent_nom": "Martin", "agent_prenom": "Claire", "agent_email": "claire.martin@example.fr",
         "type_contrat": "cdd", "date_debut": "2024-09-01"},
        {"contrat": ("contrat.pdf", "application/pdf", PDF)},
        ["signature_autorite", "signature_agent", "mailsec", "sae"]),
    "rh-paie": (
        {"agent_nom": "Martin", "agent_email": "claire.martin@example.fr", "periode": "2024-10"},
        {"bulletin": ("bulletin.pdf", "application/pdf", PDF)},
        ["mailsec", "sae"]),
    "cimetiere": (
        {"objet": "Concession", "cimetiere": "Cimetière de l'Est", "numero_concession": "E-12/4",
         "concessionnaire_nom": "Famille Durand", "duree": "30", "date_decision": "2024-05-02",
         "envoi_ged": False},
        {"arrete": ("arrete.pdf", "application/pdf", PDF)},
        ["signature", "sae"]),  # no family address: mailsec skipped; GED switched off
}


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("flow_id", sorted(CASES))
async def test_shipped_flow_runs_to_the_end(flow_id: str, runtime_factory: Any, wait_state: Any) -> None:
    fields, files, expected_steps = CASES[flow_id]
    rt = await runtime_factory("embedded", config_dir=ROOT / "config")
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ent-1", "Commune", None, None, rt.clock.now()))
    doc = await documents.create_document(rt, entity_id="ent-1", flow_id=flow_id, fields=fields, actor="test")
    for name, (filename, media_type, data) in files.items():
        await documents.attach_file(rt, doc.id, name, filename=filename, media_type=media_type,
                                    chunks=_chunks(data), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    done = await wait_state(rt, doc.id, ("done", "error"), timeout=30)
    assert done.state == "done", done.last_error
    calls = calls_for(rt)
    ran = [c["step"] for c in calls.calls() if c["key"].startswith(doc.id + ":")]
    assert ran == expected_steps


async def test_start_refused_while_a_required_file_is_missing(runtime_factory: Any) -> None:
    rt = await runtime_factory("embedded", config_dir=ROOT / "config", workers=False)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ent-1", "Commune", None, None, rt.clock.now()))
    fields, _files, _steps = CASES["rh-paie"]
    doc = await documents.create_document(rt, entity_id="ent-1", flow_id="rh-paie", fields=fields, actor="test")
    with pytest.raises(ValidationError) as info:
        await documents.run_action(rt, doc.id, "start", actor="test")
    assert info.value.field == "bulletin"
