"""Every shipped flow end to end with the test connectors of config/demo/connectors.yml, on both backend sets.

Each flow runs twice: with every « cheminement » box ticked (every step runs) and with them all
unticked (every step is skipped), and the journal shows which.
"""

from __future__ import annotations

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import calls_for
from tests.support.pdfs import pdf

PDF = pdf("Acte de test")
PES = b'<?xml version="1.0" encoding="ISO-8859-1"?><PES_Aller/>'

CASES = {
    "deliberation": ({"objet": "Budget primitif 2027", "nature": "1", "numero_acte": "DEL2027_001",
                      "date_decision": "2026-11-20", "classification": "7.1"},
                     {"arrete": ("deliberation.pdf", "application/pdf", PDF)},
                     ("envoi_signature", "envoi_tdt", "envoi_publication", "envoi_sae")),
    "pes": ({"objet": "Bordereaux de novembre"}, {"pes_aller": ("PES.xml", "application/xml", PES)},
            ("envoi_signature", "envoi_tdt", "envoi_sae")),
    "rh-contrat": ({"agent_nom": "Martin", "agent_prenom": "Léa", "agent_email": "lea.martin@example.org",
                    "type_contrat": "cdd", "date_debut": "2027-01-01"},
                   {"contrat": ("contrat.pdf", "application/pdf", PDF)},
                   ("envoi_signature_autorite", "envoi_signature_agent", "envoi_mailsec", "envoi_sae")),
    "rh-paie": ({"agent_nom": "Martin", "agent_email": "lea.martin@example.org", "periode": "2026-11"},
                {"bulletin": ("bulletin.pdf", "application/pdf", PDF)}, ("envoi_mailsec", "envoi_sae")),
    "cimetiere": ({"objet": "Concession trentenaire", "cimetiere": "Cimetière de l'Est",
                   "numero_concession": "C-2026/041", "concessionnaire_nom": "Famille Durand", "duree": "30",
                   "date_decision": "2026-11-02", "famille_email": "durand@example.org"},
                  {"arrete": ("concession.pdf", "application/pdf", PDF)},
                  ("envoi_signature", "envoi_mailsec", "envoi_ged", "envoi_sae")),
}


async def _run(rt, flow_id: str, ticked: bool, wait_state):
    fields, files, switches = CASES[flow_id]
    ent = await create_entity(rt, name=f"Commune {flow_id}", siren=None, parent=None, actor_name="test")
    values = {**fields, **{s: ticked for s in switches}}
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id=flow_id, fields=values, actor="test")
    for field, (name, media, content) in files.items():
        async def chunks(data=content):
            yield data
        await documents.attach_file(rt, doc.id, field, filename=name, media_type=media, chunks=chunks(), actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    await wait_state(rt, doc.id, "done", timeout=60)
    async with rt.store.transaction() as tx:
        entries = await journal.for_document(tx, doc.id)
        assert await journal.verify(tx, ent.id) == []
    return doc, entries


@pytest.mark.parametrize("flow_id", sorted(CASES))
async def test_shipped_flow_runs_every_step(backend, runtime_factory, flow_id, wait_state):
    rt = await runtime_factory(backend)
    doc, entries = await _run(rt, flow_id, True, wait_state)
    flow = rt.flow(flow_id)
    done = [e.data["step"] for e in entries if e.kind == "step.done"]
    assert done == [s.id for s in flow.steps]
    assert calls_for(rt).count(doc.id) == len(flow.steps)


@pytest.mark.parametrize("flow_id", sorted(CASES))
async def test_shipped_flow_skips_unticked_steps(runtime_factory, flow_id, wait_state):
    rt = await runtime_factory("embedded")
    doc, entries = await _run(rt, flow_id, False, wait_state)
    skipped = [e.data["step"] for e in entries if e.kind == "step.skipped"]
    assert skipped == [s.id for s in rt.flow(flow_id).steps]
    assert calls_for(rt).count(doc.id) == 0
