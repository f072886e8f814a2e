"""The short record of a step's usual outcome (flowbus/flows/fastrecord.py), on both backend sets:
one statement on PostgreSQL + RabbitMQ, a guarded transaction on SQLite.

It must write exactly what the general path writes, and write nothing — leaving the general path to
read everything again — whenever what it relies on changed after the claim: the document (another
writer, a cancellation), the journal head (another process), or a row another transaction holds.
The handler is called directly; no worker runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.bus.base import Message
from flowbus.clock import utcnow
from flowbus.connectors.base import Outcome
from flowbus.connectors.testing import InstantConnector
from flowbus.flows import fastrecord
from flowbus.flows.model import DEFAULT_REJECTED_STATE
from flowbus.flows.runner import QUEUE


@pytest.fixture
def fast_results(returns_of: Any) -> list[bool]:
    """What each call of the short record returned (True: it recorded the outcome)."""
    return returns_of(fastrecord, "record_done")


@pytest.fixture
def connector_does(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Actions the test connector runs during its step (then it returns what it normally returns,
    or the Outcome an action returns)."""
    actions: list[Any] = []
    original = InstantConnector.start

    async def start(self: InstantConnector, ctx: Any) -> Outcome:
        outcome = await original(self, ctx)
        for action in actions:
            outcome = await action(ctx) or outcome
        return outcome

    monkeypatch.setattr(InstantConnector, "start", start)
    return actions


async def _runtime(runtime_factory: Any, engine_config: Any, backend: str = "scaleout") -> Any:
    rt = await runtime_factory(backend, config_dir=engine_config, workers=False)
    assert rt.engine._fast, "the short record applies on both backend sets"
    return rt


async def _started(rt: Any, ent_id: str, **fields: Any) -> Any:
    doc = await documents.create_document(rt, entity_id=ent_id, flow_id="four", fields={"title": "t", **fields},
                                          actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return doc


async def _one_started(runtime_factory: Any, engine_config: Any, backend: str) -> tuple[Any, Any, Any]:
    """A runtime, an entity and one started document of the four-step flow (on step one)."""
    rt = await _runtime(runtime_factory, engine_config, backend)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")
    return rt, ent, await _started(rt, ent.id)


async def _run_step(rt: Any, doc_id: str, msg_id: str) -> None:
    async with rt.store.transaction() as tx:
        row = await tx.fetchrow("SELECT d.step, d.step_seq, s.attempt FROM documents d JOIN step_states s "
                                "ON s.document_id = d.id AND s.step = d.step WHERE d.id = $1", doc_id)
    body = {"document": doc_id, "flow": "four", "step": row["step"], "attempt": int(row["attempt"]),
            "seq": int(row["step_seq"]), "op": "start"}
    await rt.engine.handle(Message(queue=QUEUE, body=body, key=f"{doc_id}:{row['step']}", id=msg_id))


async def _written(rt: Any, doc_id: str) -> dict[str, Any]:
    """What the engine wrote for a document, without ids and times."""
    async with rt.store.transaction() as tx:
        doc = await tx.fetchrow("SELECT state, step, step_seq, version, fields, last_error FROM documents "
                                "WHERE id = $1", doc_id)
        steps = await tx.fetch("SELECT step, attempt, status, data, checks, last_error FROM step_states "
                               "WHERE document_id = $1 ORDER BY step", doc_id)
        entries = [(e.actor, e.kind, e.data) for e in await journal.for_document(tx, doc_id)]
    return {"document": doc, "steps": steps, "journal": entries}


async def _assert_chain_whole(rt: Any, entity_id: str) -> None:
    async with rt.store.transaction() as tx:
        assert await journal.verify(tx, entity_id) == []


async def test_writes_what_the_general_path_writes(backend, runtime_factory, engine_config, fast_results,
                                                    connector_does):
    rt = await _runtime(runtime_factory, engine_config, backend)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")

    async def with_fields(ctx: Any) -> Outcome | None:
        if ctx.step_id == "one":
            return Outcome.done(fields={"title": "modifié"}, data={"n": 1}, message="fait")
        return None

    connector_does.append(with_fields)
    fast = await _started(rt, ent.id, skip_third=True)  # step three is skipped on the way
    for i in range(3):  # one, two (→ skips three), four
        await _run_step(rt, fast.id, f"fast-{i}")
    rt.engine._fast = False
    general = await _started(rt, ent.id, skip_third=True)
    for i in range(3):
        await _run_step(rt, general.id, f"general-{i}")
    # the last step ends the document: a state change, short too while no webhook listens
    assert fast_results == [True, True, True]
    assert await _written(rt, fast.id) == await _written(rt, general.id)
    kinds = [kind for _actor, kind, _data in (await _written(rt, fast.id))["journal"]]
    assert kinds.count("fields.changed") == 1 and kinds.count("step.skipped") == 1 and kinds.count("step.done") == 3
    assert (await documents.get_document(rt, fast.id)).state == "done"
    await _assert_chain_whole(rt, ent.id)


async def test_a_rejection_writes_what_the_general_path_writes(backend, runtime_factory, engine_config,
                                                               fast_results, connector_does):
    """A business refusal at step two: the document goes to the flow's refusal state with the reason."""
    rt = await _runtime(runtime_factory, engine_config, backend)
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="test")

    async def refuse_step_two(ctx: Any) -> Outcome | None:
        return Outcome.rejected("Pièce manquante", fields={"title": "refusé"}) if ctx.step_id == "two" else None

    connector_does.append(refuse_step_two)
    fast = await _started(rt, ent.id)
    for i in range(2):
        await _run_step(rt, fast.id, f"fast-{i}")
    rt.engine._fast = False
    general = await _started(rt, ent.id)
    for i in range(2):
        await _run_step(rt, general.id, f"general-{i}")
    assert fast_results == [True, True]
    assert await _written(rt, fast.id) == await _written(rt, general.id)
    refused = await documents.get_document(rt, fast.id)
    assert refused.state == DEFAULT_REJECTED_STATE and refused.fields["rejection_reason"] == "Pièce manquante"
    await _assert_chain_whole(rt, ent.id)


async def test_a_document_changed_during_the_step_goes_through_the_general_path(backend, runtime_factory,
                                                                                engine_config, fast_results,
                                                                                connector_does):
    rt, ent, doc = await _one_started(runtime_factory, engine_config, backend)

    async def another_writer(ctx: Any) -> None:  # e.g. another worker answering for the same document
        async with rt.store.transaction() as tx:
            await tx.execute("UPDATE documents SET version = version + 1, fields = $2 WHERE id = $1", ctx.document.id,
                             '{"title": "changé pendant l\'étape", "skip_third": false}')

    connector_does.append(another_writer)
    await _run_step(rt, doc.id, "m-1")
    assert fast_results == [False]
    after = await documents.get_document(rt, doc.id)
    assert after.step == "two" and after.fields["title"] == "changé pendant l'étape"
    await _assert_chain_whole(rt, ent.id)


async def test_a_cancellation_during_the_step_records_nothing(backend, runtime_factory, engine_config, fast_results,
                                                              connector_does):
    rt, ent, doc = await _one_started(runtime_factory, engine_config, backend)

    async def cancel(ctx: Any) -> None:
        await documents.run_action(rt, ctx.document.id, "cancel", actor="agent", comment="erreur de saisie")

    connector_does.append(cancel)
    await _run_step(rt, doc.id, "m-1")
    assert fast_results == [False]
    written = await _written(rt, doc.id)
    assert written["document"]["state"] == "cancelled" and written["document"]["step"] == "one"
    assert "step.done" not in [kind for _a, kind, _d in written["journal"]]
    await _assert_chain_whole(rt, ent.id)


async def test_a_journal_head_moved_by_another_process(backend, runtime_factory, engine_config, fast_results,
                                                        connector_does, short_statements):
    rt, ent, doc = await _one_started(runtime_factory, engine_config, backend)
    writes: list[int] = []  # guarded statements sent by each step

    async def run(msg_id: str) -> None:
        before = len(short_statements)
        await _run_step(rt, doc.id, msg_id)
        writes.append(len(short_statements) - before)
    if backend == "scaleout":
        from flowbus.store.postgres import PostgresStore
        other: Any = PostgresStore(rt.store.dsn)
    else:
        from flowbus.store.sqlite import SQLiteStore
        other = SQLiteStore(rt.store.path)

    async def other_process_writes(ctx: Any) -> None:
        async with other.transaction() as tx:
            await journal.append(tx, entity_id=ent.id, actor="api", kind="test.entry", at=utcnow(), data={})

    connector_does.append(other_process_writes)
    try:
        await run("m-1")
        await run("m-2")
    finally:
        await other.close()
    connector_does.clear()
    await run("m-3")
    # PostgreSQL: the statement chains the entries after the head row it locks, wherever another
    # process left it: one statement each time.  SQLite: the entries are chained at commit like any
    # transaction's, reading the moved head.
    assert fast_results == [True, True, True]
    if backend == "scaleout":
        assert writes == [1, 1, 1]
    assert (await documents.get_document(rt, doc.id)).step == "four"
    await _assert_chain_whole(rt, ent.id)


async def test_a_row_held_by_another_transaction_is_not_waited_for(runtime_factory, engine_config, fast_results,
                                                                   connector_does):
    """SKIP LOCKED: the statement never waits on a row lock while it holds the in-process journal lock,
    because the transaction holding that row may be waiting for the journal lock — as here, where it
    then writes a journal entry of the same entity (waiting would deadlock: the test would time out)."""
    rt, ent, doc = await _one_started(runtime_factory, engine_config, "scaleout")
    locked, release = asyncio.Event(), asyncio.Event()
    holders: list[asyncio.Future[None]] = []

    async def hold_document_row() -> None:
        async with rt.store.transaction() as tx:
            await tx.fetchrow("SELECT id FROM documents WHERE id = $1 FOR UPDATE", doc.id)
            locked.set()
            await release.wait()
            await journal.append(tx, entity_id=ent.id, actor="agent", kind="test.entry", at=utcnow(),
                                 document_id=doc.id, data={})

    async def release_once_the_short_record_returned() -> None:
        while not fast_results:  # with SKIP LOCKED it returns at once; without it, never (deadlock)
            await asyncio.sleep(0.01)
        release.set()

    async def lock_then_return(ctx: Any) -> None:
        holders.append(asyncio.ensure_future(hold_document_row()))
        await locked.wait()
        holders.append(asyncio.ensure_future(release_once_the_short_record_returned()))

    connector_does.append(lock_then_return)
    async with asyncio.timeout(20):
        await _run_step(rt, doc.id, "m-1")
    await asyncio.gather(*holders)
    assert fast_results == [False]  # skipped the locked row; the general path waited for it
    assert (await documents.get_document(rt, doc.id)).step == "two"
    await _assert_chain_whole(rt, ent.id)


async def test_a_journal_head_held_by_another_process_is_waited_for(runtime_factory, engine_config, fast_results,
                                                                   connector_does, short_statements):
    """The journal head row, locked by another process's transaction (its journal entries are written
    last, just before its commit): the statement waits for it (no one holding it waits for this
    process) and chains after the head that process committed — one statement, no general path."""
    from flowbus.store.postgres import PostgresStore
    rt, ent, doc = await _one_started(runtime_factory, engine_config, "scaleout")
    other = PostgresStore(rt.store.dsn)
    holding = asyncio.Event()

    async def other_process() -> None:
        async with other.transaction() as tx:
            await tx.fetchrow("SELECT seq FROM journal_heads WHERE entity_id = $1 FOR UPDATE", ent.id)
            holding.set()
            async with other.transaction() as watch:  # until the short record waits for the row
                while not await watch.fetchval("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = "
                                               "'Lock' AND query LIKE 'WITH l AS%'"):
                    await asyncio.sleep(0.01)
            await journal.append(tx, entity_id=ent.id, actor="api", kind="test.entry", at=utcnow(), data={})

    holder: list[asyncio.Future[None]] = []

    async def lock_the_head(ctx: Any) -> None:
        holder.append(asyncio.ensure_future(other_process()))
        await holding.wait()

    connector_does.append(lock_the_head)
    try:
        async with asyncio.timeout(20):
            await _run_step(rt, doc.id, "m-1")
            await asyncio.gather(*holder)
    finally:
        await other.close()
    assert fast_results == [True] and short_statements == [1]  # one statement, step two entered (attempt 1)
    assert (await documents.get_document(rt, doc.id)).step == "two"
    await _assert_chain_whole(rt, ent.id)


async def test_an_error_while_routing_leaves_it_to_the_general_path(backend, runtime_factory, engine_config,
                                                                   fast_results, monkeypatch):
    """The outcome cannot be routed (here: Engine.land fails, as for a loop of skipped steps): the short
    record writes nothing (on SQLite its transaction, guard included, rolls back) and the general path
    puts the document in error with the reason, as before."""
    from flowbus.errors import PermanentError
    rt, ent, doc = await _one_started(runtime_factory, engine_config, backend)

    def unroutable(*args: Any, **kwargs: Any) -> Any:
        raise PermanentError("steps loop while skipping at 'two'")

    monkeypatch.setattr(rt.engine, "land", unroutable)
    await _run_step(rt, doc.id, "m-1")
    assert fast_results == [False]
    after = await documents.get_document(rt, doc.id)
    assert after.state == "error" and "steps loop while skipping" in (after.last_error or "")
    async with rt.store.transaction() as tx:
        status = await tx.fetchval("SELECT status FROM step_states WHERE document_id = $1 AND step = 'one'", doc.id)
    assert status == "error"
    await _assert_chain_whole(rt, ent.id)


async def test_a_webhook_on_a_parent_entity_sends_the_state_change_through_the_general_path(
        backend, runtime_factory, engine_config, fast_results):
    """The short record of a state change only applies while no webhook would announce it: one on the
    parent entity makes the last step take the general path, which writes the event; deleted, it no
    longer counts."""
    rt = await _runtime(runtime_factory, engine_config, backend)
    parent = await create_entity(rt, name="Département", siren=None, parent=None, actor_name="test")
    ent = await create_entity(rt, name="Commune", siren=None, parent=parent.id, actor_name="test")
    hook, _secret = await rt.webhooks.create(entity_id=parent.id, url="https://example.org/flowbus", actor="test",
                                             states=["done"])
    heard = await _started(rt, ent.id)
    for i in range(4):
        await _run_step(rt, heard.id, f"heard-{i}")
    await rt.webhooks.delete(hook["id"], actor="test")
    quiet = await _started(rt, ent.id)
    for i in range(4):
        await _run_step(rt, quiet.id, f"quiet-{i}")
    if backend == "scaleout":
        assert fast_results == [True, True, True, False] + [True] * 4
    else:  # SQLite's short record runs the general path's hooks in its own transaction
        assert fast_results == [True] * 8
    async with rt.store.transaction() as tx:
        events = await tx.fetch("SELECT document_id, body FROM webhook_events WHERE webhook_id = $1", hook["id"])
    assert [e["document_id"] for e in events] == [heard.id]
    assert '"state": "done"' in events[0]["body"]
    for doc in (heard, quiet):
        assert (await documents.get_document(rt, doc.id)).state == "done"
    assert await _written(rt, heard.id) == await _written(rt, quiet.id)
    await _assert_chain_whole(rt, ent.id)


async def test_a_state_hook_that_cannot_say_it_is_idle_is_always_run(backend, runtime_factory, engine_config,
                                                                     fast_results):
    """A state hook registered in code, without ``idle_sql``: every state change runs it."""
    rt, ent, doc = await _one_started(runtime_factory, engine_config, backend)
    heard: list[tuple[str, str]] = []

    async def hook(tx: Any, document: Any, old_state: str, new_state: str) -> None:
        heard.append((old_state, new_state))

    rt.state_hooks.append(hook)
    for i in range(4):
        await _run_step(rt, doc.id, f"m-{i}")
    assert heard == [("running", "done")]
    assert fast_results == ([True, True, True, False] if backend == "scaleout" else [True] * 4)
