"""The built-in parapheur (signature kind ``local``) driving the shipped délibération flow."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowbus import documents, journal
from flowbus.errors import Conflict, Forbidden, ValidationError
from flowbus.signature import parapheur
from flowbus.signature.pades import verify_pdf
from flowbus.signature.parapheur_actions import Actor, decide
from flowbus.signature.parapheur_demo import seed_commune
from flowbus.signature.pki import SEAL_CN


def local_instance(pki) -> dict:
    return {"kind": "local", "settings": {"seal_p12_path": str(pki.seal_p12), "seal_password": pki.password,
                                          "circuit": "Délibérations"}}


def actor(signer) -> Actor:
    return Actor(f"signataire:{signer.login}", signer.name, signer=signer)


async def active_task(rt, signer):
    async with rt.store.transaction() as tx:
        items = await parapheur.inbox(tx, signer, rt.clock.now())
    assert len(items) == 1, items
    return items[0]


async def wait_for_task(rt, signer, timeout=15.0):
    import asyncio
    for _ in range(int(timeout / 0.05)):
        async with rt.store.transaction() as tx:
            items = await parapheur.inbox(tx, signer, rt.clock.now())
        if items:
            return items[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no task reached {signer.login}'s inbox")


async def test_visa_then_signature_by_delegation_seals_the_act(backend, seal_pki, acte_pdf, deliberation_runtime,
                                                                 deliberation, wait_state):
    rt = await deliberation_runtime(local_instance(seal_pki), backend)
    c = await seed_commune(rt)
    now = rt.clock.now()
    async with rt.store.transaction() as tx:  # the mayor is away: the first deputy signs for her this week
        await parapheur.add_delegation(tx, from_desk=c["desk_maire"].id, to_desk=c["desk_adjoint"].id,
                                       starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=6),
                                       created_by="test", now=now)
    doc = await deliberation(rt, c["entity"].id, acte_pdf)
    await wait_state(rt, doc.id, "waiting")

    visa = await wait_for_task(rt, c["dgs"])
    assert visa.task.kind == "visa" and visa.folder.title == "Subvention au club de voile"
    with pytest.raises(Forbidden):  # not the mayor's turn yet, and the DGS task is not hers
        await decide(rt, visa.task.id, "approve", actor(c["maire"]))
    await decide(rt, visa.task.id, "approve", actor(c["dgs"]), comment="Vu")
    with pytest.raises(Conflict):  # a second click changes nothing
        await decide(rt, visa.task.id, "approve", actor(c["dgs"]))

    maire_inbox = await active_task(rt, c["maire"])
    deputy = await active_task(rt, c["adjoint"])  # same task, reached through the delegation
    assert deputy.task.id == maire_inbox.task.id and deputy.delegated and not maire_inbox.delegated
    result = await decide(rt, deputy.task.id, "approve", actor(c["adjoint"]))
    assert result.decision == "signature" and result.folder.status == "approved"

    done = await wait_state(rt, doc.id, "done", timeout=30)
    signed = await rt.blobs.read(done.files_of("arrete")[0].blob_key)
    results = verify_pdf(signed, trusted=seal_pki.trusted)
    assert len(results) == 1 and results[0].intact and results[0].signer == SEAL_CN
    assert results[0].chain_status == "trusted"
    assert signed.startswith(acte_pdf)  # incremental update: the original bytes are kept
    assert done.fields["signataire"] == "Luc Bernard" and done.fields["signature_date"]
    assert done.files_of("bordereau_signature")[0].media_type == "application/pdf"

    async with rt.store.transaction() as tx:
        entries = [e for e in await journal.for_document(tx, doc.id) if e.kind == "signature.decision"]
        assert [(e.actor, e.data["decision"], e.data["on_behalf_of"]) for e in entries] == [
            (f"signataire:{c['dgs'].login}", "visa", None),
            (f"signataire:{c['adjoint'].login}", "signature", c["desk_maire"].id)]
        assert entries[0].data["comment"] == "Vu"
        assert await journal.verify(tx, doc.entity_id) == []
        folders = await tx.fetch("SELECT id FROM parapheur_folders WHERE document_id = $1", doc.id)
        assert len(folders) == 1


async def test_rejection_puts_the_act_in_refused_state_with_the_comment(seal_pki, acte_pdf, deliberation_runtime,
                                                                         deliberation, wait_state):
    rt = await deliberation_runtime(local_instance(seal_pki))
    c = await seed_commune(rt)
    doc = await deliberation(rt, c["entity"].id, acte_pdf)
    visa = await wait_for_task(rt, c["dgs"])
    with pytest.raises(ValidationError) as err:
        await decide(rt, visa.task.id, "reject", actor(c["dgs"]), comment="  ")
    assert err.value.field == "comment"
    await decide(rt, visa.task.id, "reject", actor(c["dgs"]), comment="Le quorum n'est pas mentionné")
    refused = await wait_state(rt, doc.id, "refuse_signature", timeout=30)
    assert refused.fields["signature_refus"] == "Le quorum n'est pas mentionné"
    assert refused.fields["signature_refus_par"] == "Paul Durand"
    async with rt.store.transaction() as tx:
        tasks = await parapheur.tasks_of(tx, visa.folder.id)
        assert (await parapheur.get_folder(tx, visa.folder.id)).comment == "Le quorum n'est pas mentionné"
        assert [t.status for t in tasks] == ["rejected", "cancelled"]
        assert await parapheur.inbox(tx, c["maire"], rt.clock.now()) == []


async def test_outside_signer_signs_through_a_mailed_link(seal_pki, acte_pdf, deliberation_runtime, wait_state):
    from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
    smtp = SmtpSimulator().start()
    instance = local_instance(seal_pki)
    instance["settings"].update(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_from="parapheur@commune.example")
    try:
        await _outside_signer(seal_pki, acte_pdf, await deliberation_runtime(instance), smtp)
    finally:
        smtp.stop()


async def _outside_signer(seal_pki, acte_pdf, rt, smtp):
    c = await seed_commune(rt)
    # the « Convention » circuit (signature, then an outside signer): folder created as the connector does
    from flowbus.signature.local_connector import LocalParapheurConnector, bordereau
    doc = await documents.create_document(rt, entity_id=c["entity"].id, flow_id="deliberation", actor="test",
                                          fields={"objet": "Convention de mise à disposition", "nature": "4",
                                                  "numero_acte": "CONV2026_3", "date_decision": "2026-03-02",
                                                  "classification": "1.4"})
    from flowbus.blobs.base import put_bytes
    blob = await put_bytes(rt.blobs, acte_pdf)
    async with rt.store.transaction() as tx:
        circuit = await parapheur.get_circuit(tx, c["entity"].id, "Convention")
        folder = await parapheur.create_folder(
            tx, entity_id=c["entity"].id, document_id=doc.id, step_id="signature", instance_id="parapheur",
            idem_key=f"{doc.id}:signature:1", title="Convention", circuit=circuit, filename="convention.pdf",
            media_type="application/pdf", blob=blob, annexes=[], now=rt.clock.now())
    first = await active_task(rt, c["maire"])
    result = await decide(rt, first.task.id, "approve", actor(c["maire"]))
    token = result.external_link_token
    assert token and result.next_task.kind == "external" and result.link_mailed
    [mail] = smtp.to("s.leroy@example.org")
    assert f"/parapheur/externe/{token}" in mail.text() and "Convention" in mail.message()["Subject"]
    async with rt.store.transaction() as tx:
        ext_task, ext_folder = await parapheur.task_for_link(tx, token)
        assert ext_folder.id == folder.id
        assert [i.task.id for i in await parapheur.external_pending(tx, c["maire"], rt.clock.now())] == [ext_task.id]
    with pytest.raises(Forbidden):  # a link only opens its own task
        await decide(rt, first.task.id, "approve", Actor("externe:x", "X", link_token=token))
    final = await decide(rt, ext_task.id, "approve", Actor(f"externe:{ext_task.id}", "Sophie Leroy",
                                                           link_token=token))
    assert final.folder.status == "approved"
    signed = await rt.blobs.read(final.folder.current_blob)
    results = verify_pdf(signed, trusted=seal_pki.trusted)
    assert len(results) == 2 and all(r.intact for r in results)
    async with rt.store.transaction() as tx:
        decisions = await parapheur.decisions_of(tx, folder.id)
        with pytest.raises(Exception):
            await parapheur.task_for_link(tx, token)  # used links are spent
    assert [d.actor_name for d in decisions] == ["Jeanne Martin", "Sophie Leroy"]
    assert bordereau(final.folder, decisions).startswith(b"%PDF-")
    assert LocalParapheurConnector.secret_keys >= {"seal_password"}


async def test_delegation_outside_its_period_gives_nothing(seal_pki, deliberation_runtime):
    rt = await deliberation_runtime(local_instance(seal_pki))
    c = await seed_commune(rt)
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        await parapheur.add_delegation(tx, from_desk=c["desk_maire"].id, to_desk=c["desk_adjoint"].id,
                                       starts_at=now + timedelta(days=3), ends_at=now + timedelta(days=5),
                                       created_by="test", now=now)
        desks = await parapheur.desks_of(tx, c["adjoint"], now)
        assert set(desks) == {c["desk_adjoint"].id}
        later = await parapheur.desks_of(tx, c["adjoint"], now + timedelta(days=4))
        assert later[c["desk_maire"].id][1] is True
        with pytest.raises(ValidationError):
            await parapheur.add_delegation(tx, from_desk=c["desk_maire"].id, to_desk=c["desk_adjoint"].id,
                                           starts_at=now, ends_at=now - timedelta(days=1), created_by="t", now=now)


async def test_inline_circuit_and_unknown_circuit(seal_pki, acte_pdf, deliberation_runtime):
    import structlog

    from flowbus.connectors.base import StepContext
    from flowbus.errors import NotFound
    from flowbus.signature.local_connector import LocalParapheurConnector

    rt = await deliberation_runtime(local_instance(seal_pki))
    c = await seed_commune(rt)
    doc = await documents.create_document(rt, entity_id=c["entity"].id, flow_id="deliberation", actor="test", fields={
        "objet": "Arrêté de voirie", "nature": "3", "numero_acte": "ARR2026_7", "date_decision": "2026-03-02",
        "classification": "8.3"})

    async def one(data: bytes):
        yield data
    await documents.attach_file(rt, doc.id, "arrete", filename="arrete.pdf", media_type="application/pdf",
                                chunks=one(acte_pdf), actor="test")
    doc = await documents.get_document(rt, doc.id)
    async with rt.store.transaction() as tx:
        instance = await rt.instances.resolve(tx, "parapheur", c["entity"].id)
    conn = LocalParapheurConnector(instance, rt)

    def ctx(params, attempt=1, data=None):
        return StepContext(runtime=rt, document=doc, flow_id="deliberation", step_id="signature", params=params,
                           instance=instance, attempt=attempt, idempotency_key=f"{doc.id}:signature:{attempt}",
                           data=dict(data or {}), started_at=doc.created_at, log=structlog.get_logger("test"))

    with pytest.raises(NotFound) as err:
        await conn.start(ctx({"input": "arrete", "circuit": "Arrêtés du maire"}))
    assert err.value.field == "circuit" and "Arrêtés du maire" in str(err.value)
    with pytest.raises(ValidationError, match="unknown kind 'signer'"):
        await conn.start(ctx({"input": "arrete", "steps": [{"kind": "signer", "desk": c["desk_maire"].id}]}))
    steps = [{"kind": "signature", "desk": c["desk_maire"].id, "label": "Signature du maire"}]
    started = await conn.start(ctx({"input": "arrete", "steps": steps, "check_every": 30}))
    again = await conn.start(ctx({"input": "arrete", "steps": steps}))  # redelivery: same folder
    retried = await conn.start(ctx({"input": "arrete", "steps": steps}, attempt=2))  # retry: the pending folder
    assert started.data == again.data == retried.data and started.check_in.total_seconds() == 30
    item = await active_task(rt, c["maire"])
    assert item.task.label == "Signature du maire" and item.folder.circuit == "deliberation/signature"
    assert (await conn.check(ctx({}, data=started.data))).status == "waiting"
