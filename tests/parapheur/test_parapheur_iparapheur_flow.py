"""The shipped délibération flow through the i-Parapheur simulator (signature kind ``iparapheur``)."""

from __future__ import annotations

import pytest

from flowbus import journal
from flowbus.signature.iparapheur_sim import IParapheurSimulator
from flowbus.signature.pades import verify_pdf


@pytest.fixture
async def sim():
    async with IParapheurSimulator() as s:
        yield s


def instance(sim) -> dict:
    return {"kind": "iparapheur", "settings": {
        "url": sim.url, "username": "flowbus", "password": "flowbus-secret", "tenant_id": "t-collectivite",
        "desk_id": "d-secretariat", "type": "Pades", "subtype": "Délibération", "timeout": 10}}


async def _entity(rt):
    from flowbus.api.entities import create_entity
    return await create_entity(rt, name="Commune de Flowbus-sur-Mer", siren=None, parent=None, actor_name="test")


async def test_approve_path(backend, sim, acte_pdf, deliberation_runtime, deliberation, wait_state):
    rt = await deliberation_runtime(instance(sim), backend)
    ent = await _entity(rt)
    doc = await deliberation(rt, ent.id, acte_pdf)
    await wait_state(rt, doc.id, "waiting")
    [folder] = sim.folders.values()
    assert folder.state == "PENDING" and folder.subtype["name"] == "Délibération"
    assert [(f.name, f.main) for f in folder.files] == [("deliberation.pdf", True)]
    sim.approve(folder.id)
    done = await wait_state(rt, doc.id, "done", timeout=30)
    signed = await rt.blobs.read(done.files_of("arrete")[0].blob_key)
    [result] = verify_pdf(signed)
    assert result.intact and result.signer == "Simulateur i-Parapheur"
    assert done.fields["signataire"] == "Jeanne Martin" and done.fields["iparapheur_dossier"] == folder.id
    assert done.files_of("bordereau_signature")[0].filename.endswith("_bordereau.pdf")
    assert sim.count("create_folder", folder.name) == 1
    async with rt.store.transaction() as tx:
        kinds = [e.kind for e in await journal.for_document(tx, doc.id)]
        assert "step.waiting" in kinds and kinds.count("step.done") >= 1


async def test_reject_path(sim, acte_pdf, deliberation_runtime, deliberation, wait_state):
    rt = await deliberation_runtime(instance(sim))
    ent = await _entity(rt)
    doc = await deliberation(rt, ent.id, acte_pdf)
    await wait_state(rt, doc.id, "waiting")
    [folder] = sim.folders.values()
    sim.reject(folder.id, "Le montant de la subvention est erroné")
    refused = await wait_state(rt, doc.id, "refuse_signature", timeout=30)
    assert refused.fields["signature_refus"] == "Le montant de la subvention est erroné"
    async with rt.store.transaction() as tx:
        rejected = [e for e in await journal.for_document(tx, doc.id) if e.kind == "step.rejected"]
        assert rejected and rejected[0].data["reason"] == "Le montant de la subvention est erroné"


async def test_server_error_while_polling_is_retried_and_the_document_not_lost(sim, acte_pdf, deliberation_runtime,
                                                                               deliberation, wait_state):
    rt = await deliberation_runtime(instance(sim))
    ent = await _entity(rt)
    doc = await deliberation(rt, ent.id, acte_pdf)
    await wait_state(rt, doc.id, "waiting")
    [folder] = sim.folders.values()
    sim.fail("premis", status=500, times=2)
    sim.script(folder.name, "approve")
    await wait_state(rt, doc.id, "done", timeout=60)
    async with rt.store.transaction() as tx:
        failed = [e for e in await journal.for_document(tx, doc.id) if e.kind == "step.failed"]
    assert len(failed) == 2 and all(e.data["will_retry"] for e in failed)
    assert sim.count("create_folder", folder.name) == 1
