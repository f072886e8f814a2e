"""How a worker claims a step run, on both backend sets: the message of the step runs it once; a
duplicate is dropped while another message's claim holds; a redelivery of the claiming message takes
it over (same idempotency key); a stale message runs nothing; a message from before the flow id was
carried (no ``flow`` in the body) still runs.  The handler is called directly, no worker running."""

from __future__ import annotations

from datetime import timedelta

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.bus.base import Message
from flowbus.clock import isoformat
from flowbus.connectors.testing import calls_for
from flowbus.flows.runner import QUEUE


async def _started(rt):
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": "t"}, actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    async with rt.store.transaction() as tx:
        row = await tx.fetchrow("SELECT step, step_seq FROM documents WHERE id = $1", doc.id)
    assert row["step"] == "one"
    return doc, int(row["step_seq"])


def _msg(doc, step, seq, *, msg_id, attempt=1, with_flow=True):
    body = {"document": doc.id, "step": step, "attempt": attempt, "seq": seq, "op": "start"}
    if with_flow:
        body["flow"] = doc.flow_id
    return Message(queue=QUEUE, body=body, key=f"{doc.id}:{step}:{attempt}:start", id=msg_id)


async def _state(rt, doc_id):
    async with rt.store.transaction() as tx:
        return await tx.fetchrow("SELECT step, state, step_seq FROM documents WHERE id = $1", doc_id)


async def test_step_message_runs_once_and_moves_on(backend, runtime_factory, engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    doc, seq = await _started(rt)
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="m-1"))
    assert calls_for(rt).count(f"{doc.id}:one:1") == 1
    after = await _state(rt, doc.id)
    assert after["step"] == "two" and int(after["step_seq"]) == seq + 1
    # the same message again (the broker redelivered it after the outcome was recorded): nothing runs
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="m-1"))
    assert calls_for(rt).count(f"{doc.id}:one:1") == 1
    assert (await _state(rt, doc.id))["step"] == "two"


async def test_duplicate_dropped_while_claim_holds_redelivery_takes_over(backend, runtime_factory, engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    doc, seq = await _started(rt)
    lease = isoformat(rt.clock.now() + timedelta(minutes=10))
    async with rt.store.transaction() as tx:  # a worker claimed the run with message m-1, then died
        await tx.execute("UPDATE step_states SET claim = 'm-1', status = 'running', lease_until = $3 "
                         "WHERE document_id = $1 AND step = $2", doc.id, "one", lease)
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="m-2"))  # a duplicate publish of the same step
    assert calls_for(rt).count(f"{doc.id}:one:1") == 0
    assert (await _state(rt, doc.id))["step"] == "one"
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="m-1"))  # the broker delivers m-1 again
    assert calls_for(rt).count(f"{doc.id}:one:1") == 1
    assert (await _state(rt, doc.id))["step"] == "two"


async def test_expired_claim_is_taken_by_another_message(backend, runtime_factory, engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    doc, seq = await _started(rt)
    expired = isoformat(rt.clock.now() - timedelta(seconds=1))
    async with rt.store.transaction() as tx:
        await tx.execute("UPDATE step_states SET claim = 'm-1', status = 'running', lease_until = $3 "
                         "WHERE document_id = $1 AND step = $2", doc.id, "one", expired)
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="m-2"))
    assert calls_for(rt).count(f"{doc.id}:one:1") == 1
    assert (await _state(rt, doc.id))["step"] == "two"


async def test_stale_and_wrong_attempt_messages_run_nothing(backend, runtime_factory, engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    doc, seq = await _started(rt)
    await rt.engine.handle(_msg(doc, "one", seq - 1, msg_id="old-seq"))  # from an earlier pass
    await rt.engine.handle(_msg(doc, "two", seq, msg_id="other-step"))  # a step the document is not on
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="old-attempt", attempt=7))
    assert calls_for(rt).total() == 0
    after = await _state(rt, doc.id)
    assert after["step"] == "one" and int(after["step_seq"]) == seq


async def test_message_without_flow_id_still_runs(backend, runtime_factory, engine_config):
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    doc, seq = await _started(rt)
    await rt.engine.handle(_msg(doc, "one", seq, msg_id="legacy", with_flow=False))
    assert calls_for(rt).count(f"{doc.id}:one:1") == 1
    assert (await _state(rt, doc.id))["step"] == "two"
