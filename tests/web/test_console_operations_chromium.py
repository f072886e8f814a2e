"""Operations page in Chromium: queues, a dead letter re-queued (the document then finishes), processes seen alive."""

from __future__ import annotations

import asyncio

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.heartbeat import Heartbeat

pytestmark = pytest.mark.chromium


async def test_admin_requeues_a_dead_letter(backend, runtime_factory, server_factory, engine_config, browser, people,
                                            wait_state, screenshots):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune de l'Exploitation", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": "Arrêté bloqué"},
                                          actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")

    async def crash(message):
        raise RuntimeError("worker crashed while handling the step")

    crashing = await rt.bus.consume("steps", crash, max_attempts=1)
    for _ in range(200):
        if await rt.bus.dead_letters("steps"):
            break
        await asyncio.sleep(0.05)
    await crashing.stop()
    [letter] = await rt.bus.dead_letters("steps")
    await rt.engine.start_workers()
    Heartbeat(rt, "worker").start()
    from flowbus.jobs import platform_jobs
    from flowbus.scheduler import Scheduler
    await Scheduler(rt, platform_jobs()).run_due()  # what `flowbus serve` runs in the background

    await people.admin(rt, "camille")
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "camille")
    await page.get_by_role("link", name="Exploitation").click()
    steps_row = page.locator("section[aria-labelledby=files] tr", has_text="Étapes des documents")
    assert (await steps_row.locator("td").nth(4).inner_text()).strip() == "1"
    article = page.locator("article", has_text=letter.message.key)
    assert "RuntimeError: worker crashed while handling the step" in await article.inner_text()
    assert "« Arrêté bloqué », étape « Un »" in await article.inner_text()
    assert "en service" in await page.inner_text("section[aria-labelledby=processus]")
    waiting = await page.inner_text("section[aria-labelledby=attente]")
    assert "Quatre étapes" in waiting and "Arrêté bloqué" in waiting
    scheduled = page.locator("section[aria-labelledby=planifiees] tr", has_text="Purge des sessions")
    assert "fait" in await scheduled.inner_text() and "0 session(s)" in await scheduled.inner_text()
    assert "compteur(s) d'échecs de connexion supprimés" in await scheduled.inner_text()
    inbox = await page.locator("section[aria-labelledby=planifiees] tr", has_text="Relève des courriers").inner_text()
    assert "0 courrier(s), 0 PES Retour, 0 relève(s) en échec" in inbox
    await screenshots(page, "console-operations")
    await article.get_by_role("button", name="Remettre en file").click()
    assert await page.inner_text("[role=status]") == "Message remis en file."
    assert "Aucune lettre morte." in await page.inner_text("section[aria-labelledby=lettres]")
    await wait_state(rt, doc.id, "done", timeout=30)
    async with rt.store.transaction() as tx:
        kinds = [r["kind"] for r in await tx.fetch("SELECT kind, actor FROM journal WHERE entity_id = 'platform'")]
    assert "admin.dead_letter.requeued" in kinds


async def test_operations_are_for_platform_administrators_only(runtime_factory, server_factory, browser, people):
    from flowbus.people.access import Grant
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune A", siren=None, parent=None, actor_name="t")
    await people.user(rt, "admin-a", grants=(Grant(ent.id, "admin"),))
    page = await browser.new_page()
    await people.sign_in(page, srv.url, "admin-a")
    assert "Exploitation" not in await page.inner_text("nav.main")
    resp = await page.goto(f"{srv.url}/admin/operations")
    assert resp.status == 403
    assert "réservée aux administrateurs de la plateforme" in await page.inner_text("[role=alert]")
