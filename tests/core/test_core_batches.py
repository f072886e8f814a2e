"""Batch actions as a service: rights checked per document, a result per document, a batch taken up again
after its process stopped, nothing done twice."""

from __future__ import annotations

import pytest

from flowbus import batches, documents
from flowbus.api.entities import create_entity
from flowbus.people import accounts
from flowbus.people.access import Grant
from tests.conftest import make_user


async def _principal(rt, user):
    async with rt.store.transaction() as tx:
        return await accounts.principal(tx, user)


@pytest.mark.parametrize("backend", ["embedded", "scaleout"], indirect=True)
async def test_rights_results_and_resume_after_a_stop(runtime):
    rt = runtime
    mine = await create_entity(rt, name="Commune A", siren=None, parent=None, actor_name="t")
    other = await create_entity(rt, name="Commune B", siren=None, parent=None, actor_name="t")
    docs = [await documents.create_document(rt, entity_id=mine.id, flow_id="demo", fields={"title": f"d{i}"},
                                            actor="t") for i in range(4)]
    foreign = await documents.create_document(rt, entity_id=other.id, flow_id="demo", fields={"title": "b"},
                                              actor="t")
    who = await _principal(rt, await make_user(rt, "agent-a", grants=(Grant(mine.id, "editor"),)))
    batch_id = await batches.create(rt, who, "cancel", [*docs, foreign], title=lambda d: d.fields["title"])
    async with rt.store.transaction() as tx:
        rows = await batches.items(tx, batch_id)
    assert [r["outcome"] for r in rows] == ["refused"] * 5, "cancel needs an administrator"

    admin = await _principal(rt, await make_user(rt, "admin-a", grants=(Grant(mine.id, "admin"),)))
    batch_id = await batches.create(rt, admin, "cancel", [*docs, foreign], title=lambda d: d.fields["title"])
    # the process stopped while handling the second document: the first was done, the second claimed
    await documents.run_action(rt, docs[0].id, "cancel", actor=admin.actor)
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE batch_items SET outcome = 'ok' WHERE batch_id = $1 AND position = 0", batch_id)
        await tx.execute("UPDATE batch_items SET outcome = 'running' WHERE batch_id = $1 AND position = 1", batch_id)
    assert await batches.resume(rt) == 2  # both unfinished batches
    for task in list(rt.__dict__["_batch_tasks"]):
        await task
    async with rt.store.transaction() as tx:
        batch = await batches.get(tx, batch_id)
        rows = await batches.items(tx, batch_id)
    assert batch.finished and (batch.done, batch.failed) == (3, 2)
    assert [r["outcome"] for r in rows] == ["ok", "error", "ok", "ok", "refused"]
    assert rows[1]["message"].startswith("Interrompu par l'arrêt du serveur")
    for d in docs[2:]:
        assert (await documents.get_document(rt, d.id)).state == "cancelled"
    assert (await documents.get_document(rt, foreign.id)).state == "draft"
    again = await batches.create(rt, admin, "cancel", docs[2:3], title=lambda d: d.fields["title"])
    await batches.run(rt, again)
    async with rt.store.transaction() as tx:
        [row] = await batches.items(tx, again)
    assert row["outcome"] == "error" and row["message"] == "Un document annulé ne peut plus être annulé."
