"""Notifications: a person subscribes in the browser, gets an e-mail at once when a followed document
falls in error, and the next morning a digest of the day's events (test clock); nothing for what they
may not read; signers are told when a folder arrives on their desk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from flowbus import documents, notifications
from flowbus.api.entities import create_entity
from flowbus.clock import ManualClock
from flowbus.people.access import Grant


async def _mails(smtp_server, address, count, timeout=20.0):
    for _ in range(int(timeout * 20)):
        got = smtp_server.to(address)
        if len(got) >= count:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(smtp_server.to(address))} mails to {address}, {count} expected")


@pytest.mark.chromium
async def test_subscribed_agent_gets_an_immediate_mail_on_error(runtime_factory, server_factory, engine_config,
                                                                browser, people, smtp_server, wait_state,
                                                                screenshots):
    rt = await runtime_factory("embedded", config_dir=engine_config, smtp_host="127.0.0.1",
                               smtp_port=smtp_server.port, public_url="https://flowbus.example.fr")
    await notifications.install(rt).start()
    srv = await server_factory(rt)
    commune = await create_entity(rt, name="Commune Suivie", siren=None, parent=None, actor_name="t")
    hameau = await create_entity(rt, name="Hameau de la Commune", siren=None, parent=commune.id, actor_name="t")
    voisine = await create_entity(rt, name="Commune Voisine", siren=None, parent=None, actor_name="t")
    await people.user(rt, "agent.suivi", name="Agent Suivi", email="agent.suivi@commune.fr",
                      grants=(Grant(commune.id, "editor"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "agent.suivi")
    await page.get_by_role("link", name="Mes notifications").click()
    assert await page.locator("#entity option").all_inner_texts() == ["Commune Suivie", "Hameau de la Commune"]
    await page.select_option("#entity", label="Commune Suivie")
    await page.select_option("#flow", label="En panne")
    await page.select_option("#event", "error")
    await page.select_option("#mode", "immediate")
    await page.get_by_role("button", name="S'abonner").click()
    assert "Abonnement enregistré pour « Commune Suivie »." in await page.inner_text("[role=status]")
    rows = await page.locator("table.stack tbody tr").all_inner_texts()
    assert len(rows) == 1 and "En panne" in rows[0] and "Immédiatement" in rows[0]
    await screenshots(page, "notifications")

    docs = {}
    for ent, title in ((hameau, "Arrêté du hameau"), (voisine, "Arrêté voisin")):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="broken", fields={"title": title},
                                              actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        docs[title] = doc
    for doc in docs.values():
        await wait_state(rt, doc.id, "error", timeout=30)
    [mail] = await _mails(smtp_server, "agent.suivi@commune.fr", 1)
    msg = mail.message()
    assert msg["Subject"] == "[flowbus] Document en erreur : Arrêté du hameau"
    body = msg.get_content()
    assert "En panne — Hameau de la Commune : En erreur" in body
    assert f"https://flowbus.example.fr/admin/documents/{docs['Arrêté du hameau'].id}" in body
    await asyncio.sleep(0.5)
    assert len(smtp_server.to("agent.suivi@commune.fr")) == 1, "nothing about the neighbour's document"

    await page.get_by_role("button", name="Supprimer l'abonnement « Document en erreur » pour Commune Suivie").click()
    assert "Abonnement supprimé." in await page.inner_text("[role=status]")


async def test_digest_next_morning_with_what_the_person_may_still_read(runtime_factory, people, smtp_server,
                                                                       engine_config):
    clock = ManualClock(datetime(2026, 12, 2, 14, 0, tzinfo=UTC))  # 15 h in Paris
    rt = await runtime_factory("embedded", config_dir=engine_config, clock=clock, smtp_host="127.0.0.1",
                               smtp_port=smtp_server.port)
    service = notifications.install(rt)
    await service.start()
    commune = await create_entity(rt, name="Commune du Résumé", siren=None, parent=None, actor_name="t")
    user = await people.user(rt, "lecteur.resume", name="Lecteur Résumé", email="resume@commune.fr",
                             grants=(Grant(commune.id, "reader", ("four",)),))
    async with rt.store.transaction() as tx:
        for event in ("done", "error"):
            await notifications.subscribe(tx, user_id=user.id, entity_id=commune.id, flow_id="*", event=event,
                                          mode="digest", now=clock.now())
    titles = ["Premier arrêté", "Second arrêté"]
    for title in titles:
        doc = await documents.create_document(rt, entity_id=commune.id, flow_id="four", fields={"title": title},
                                              actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        await _until_done(rt, doc.id)
    hidden = await documents.create_document(rt, entity_id=commune.id, flow_id="broken",
                                             fields={"title": "Hors de ses flux"}, actor="t")
    await documents.run_action(rt, hidden.id, "start", actor="t")
    await _until(rt, hidden.id, "error")
    assert smtp_server.to("resume@commune.fr") == [], "a digest waits for the morning"

    morning = notifications.next_digest(clock.now())
    assert morning == datetime(2026, 12, 3, 7, 0, tzinfo=morning.tzinfo) and morning.utcoffset() == timedelta(hours=1)
    clock.advance(morning - clock.now())
    assert await service.send_digests() == 1
    [mail] = smtp_server.to("resume@commune.fr")
    msg = mail.message()
    assert msg["Subject"] == "[flowbus] Résumé du jour : 2 événements"
    body = msg.get_content()
    assert all(t in body for t in titles) and "Hors de ses flux" not in body, "only what the person may read"
    assert "2 décembre 2026 à 15 h" in body
    assert await service.send_digests() == 0, "each event is in one digest only"


async def _until(rt, doc_id, state):
    for _ in range(400):
        doc = await documents.get_document(rt, doc_id)
        if doc.state == state:
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"document {doc_id} is {doc.state}, not {state}")


async def _until_done(rt, doc_id):
    return await _until(rt, doc_id, "done")


async def test_signers_are_told_when_a_folder_arrives_and_not_without_smtp(runtime_factory, smtp_server):
    from flowbus.signature import parapheur
    rt = await runtime_factory("embedded", workers=False, smtp_host="127.0.0.1", smtp_port=smtp_server.port,
                               public_url="https://flowbus.example.fr")
    await notifications.install(rt).start()
    commune = await create_entity(rt, name="Commune des Élus", siren=None, parent=None, actor_name="t")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        desk = await parapheur.create_desk(tx, entity_id=commune.id, name="Maire", now=now)
        for login, email in (("maire", "maire@commune.fr"), ("adjoint", None)):
            signer = await parapheur.create_signer(tx, entity_id=commune.id, login=login, name=login.title(),
                                                   password="correct-cheval-agrafe-9", now=now, email=email)
            await parapheur.add_member(tx, desk.id, signer.id)
        folder = type("F", (), {"title": "Délibération 2026-12"})()
        told = await notifications.folder_arrived(rt, tx, folder=folder, desk_id=desk.id, kind="signature")
    assert told == 1, "only the member with an address"
    [mail] = await _mails(smtp_server, "maire@commune.fr", 1)
    assert mail.message()["Subject"] == "[flowbus] Un dossier vous attend : Délibération 2026-12"
    assert "https://flowbus.example.fr/parapheur/" in mail.message().get_content()
