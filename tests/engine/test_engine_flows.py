"""The engine on both backend sets: steps, conditions, retries, waiting, refusals, administrator actions."""

from __future__ import annotations

from flowbus import documents, journal
from flowbus.api.entities import create_entity


async def _doc(rt, flow, **fields):
    ent = await create_entity(rt, name=f"Commune {flow}", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id=flow, fields={"title": "t", **fields},
                                          actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return doc


async def _kinds(rt, doc_id):
    async with rt.store.transaction() as tx:
        return [(e.kind, e.data.get("step"), e.data.get("to")) for e in await journal.for_document(tx, doc_id)]


async def test_four_steps_run_in_order(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "four")
    done = await wait_state(rt, doc.id, "done")
    assert done.step is None
    kinds = await _kinds(rt, doc.id)
    assert [s for k, s, _ in kinds if k == "step.done"] == ["one", "two", "three", "four"]
    async with rt.store.transaction() as tx:
        assert await journal.verify(tx, doc.entity_id) == []


async def test_condition_skips_a_step(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "four", skip_third=True)
    await wait_state(rt, doc.id, "done")
    kinds = await _kinds(rt, doc.id)
    assert [s for k, s, _ in kinds if k == "step.done"] == ["one", "two", "four"]
    assert ("step.skipped", "three", None) in kinds


async def test_transient_failures_are_retried(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "retry")
    await wait_state(rt, doc.id, "done", timeout=30)
    failed = [k for k in await _kinds(rt, doc.id) if k[0] == "step.failed"]
    assert len(failed) == 2


async def test_retry_budget_then_visible_error_then_admin_actions(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "broken")
    err = await wait_state(rt, doc.id, "error", timeout=30)
    assert err.step == "down" and err.last_error
    # an administrator skips the broken step; the flow goes on
    await documents.run_action(rt, doc.id, "skip", actor="admin:alice", comment="service remplacé")
    await wait_state(rt, doc.id, "done")
    kinds = await _kinds(rt, doc.id)
    assert ("admin.action", "down", None) in kinds


async def test_refusal_leads_to_a_named_state(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "refusal")
    refused = await wait_state(rt, doc.id, "refuse")
    assert refused.fields.get("rejection_reason")
    assert not [k for k in await _kinds(rt, doc.id) if k[1] == "never"]


async def test_waiting_step_is_rechecked_until_done(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "waiting")
    await wait_state(rt, doc.id, "waiting", timeout=10)
    await wait_state(rt, doc.id, "done", timeout=30)


async def test_cancel_stops_a_waiting_document(backend, runtime_factory, engine_config, wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    doc = await _doc(rt, "waiting")
    await wait_state(rt, doc.id, "waiting", timeout=10)
    await documents.run_action(rt, doc.id, "cancel", actor="admin:bob")
    cancelled = await wait_state(rt, doc.id, "cancelled")
    assert cancelled.state == "cancelled"
