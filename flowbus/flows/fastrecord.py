"""The usual outcome of a step recorded with the fewest statements: one on PostgreSQL, a guarded few on SQLite.

The usual outcome: the step is done (or, on SQLite, rejected), with no new file.  What the general
path (``Engine._record``) writes for it is written here without reading the document again: the claim
already read it, and a guard checks that nothing it relies on changed since — the document still
at the version the claim read, the step run still claimed by this message.  If anything changed,
nothing is written and the engine records the outcome through the general path, which reads
everything again.

PostgreSQL (with RabbitMQ), when a ``running`` document goes on to another step, or ends, or reaches
a named state while no state hook has anything to do (each hook says so in SQL with ``idle_sql``:
the webhooks', no live webhook on the entity or its parents): one autocommitted statement, no
BEGIN/COMMIT.  The guard locks the document and the step state (SKIP LOCKED: never wait on them while
holding the in-process journal lock, which the transaction holding them may be waiting for) and the
entity's journal head row (waited for: every transaction writes its journal entries last, just
before it commits, so whoever holds that row waits for nothing; in this process, only a holder of
the in-process lock can hold it).  PostgreSQL chains the journal entries after the head row it
locked (``journal.sql_chain``: the same SHA-256 as ``journal.chain``), wherever another process
(the API, another worker) left it.  The guard checks the hooks' condition too, and every write
depends on it.  The next step's message is published once the statement has returned, as the
general path's after-commit callback does.

SQLite: a transaction whose first statement is the guarded update of the step state, then the
general path's own writes (any target: next step, end, named state; rejections too).  The store
runs one transaction's statements at a time, so once the guard matched, what it checked holds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import asyncpg

from flowbus import journal
from flowbus.bus.base import Message
from flowbus.clock import isoformat
from flowbus.connectors.base import Outcome
from flowbus.errors import FlowbusError
from flowbus.flows import machine
from flowbus.metrics import DOCUMENT_STATES
from flowbus.models import Document
from flowbus.store import repo

ENGINE = "engine"


def applies(runtime: Any) -> bool:
    """SQLite; PostgreSQL with a bus that does not write into it (a one-statement record cannot publish)."""
    if runtime.store.dialect == "sqlite":
        return True
    return runtime.store.dialect == "postgres" and not getattr(runtime.bus, "publishes_in_store", True)


async def record_done(engine: Any, msg: Message, doc: Document, ss: dict[str, Any], step_id: str, seq: int,
                      outcome: Outcome) -> bool:
    """Record ``outcome`` if it is the usual case and nothing changed since the claim; False if nothing
    was written (the general path then records it)."""
    if outcome.files or outcome.status not in ("done", "rejected"):
        return False
    flow = engine.rt.flow_of(doc)
    if outcome.status == "done" and _step_hooks_want(engine.rt, flow, step_id):
        return False  # a step hook has work to do: the general path calls it
    fields = dict(doc.fields)
    fields.update(outcome.fields)
    try:
        target = machine.decide(flow, step_id, outcome.name, status=outcome.status)
    except FlowbusError:
        return False  # the general path records the error
    data = json.dumps(dict(outcome.data)) if outcome.data else (ss["data"] or "{}")  # the stored JSON, kept
    if engine.rt.store.dialect == "sqlite":
        return await _record_sqlite(engine, msg, doc, ss, step_id, seq, outcome, fields, target, data)
    try:
        landing, skipped = engine.land(doc, target, fields)
    except FlowbusError:
        return False
    if doc.state != "running" or (landing.kind == "step" and landing.name == step_id):
        return False  # a state already changed by the step, or the same step again: the general path
    idle = None if landing.kind == "step" else _hooks_idle_sql(engine.rt)
    if landing.kind != "step" and idle is None:
        return False  # a state change whose hooks cannot say in SQL that they have nothing to do
    now = engine.rt.clock.now()
    step_kind = "step.done" if outcome.status == "done" else "step.rejected"
    entries = []
    if outcome.fields:
        entries.append(("fields.changed", {"fields": sorted(outcome.fields), "step": step_id}))
    entries.append((step_kind, {"step": step_id, "outcome": outcome.name, "message": outcome.message,
                                "reason": outcome.reason}))
    entries.extend(("step.skipped", skip) for skip in skipped)
    state, new_step = "running", landing.name
    if landing.kind != "step":  # what Engine._enter and _set_state write for the end or a named state
        state, new_step = ("done", None) if landing.kind == "end" else (landing.name, step_id)
        if landing.kind == "state" and outcome.reason:
            fields = {**fields, "rejection_reason": outcome.reason}
        change: dict[str, Any] = {"from": doc.state, "to": state, "step": new_step}
        if outcome.reason:
            change["reason"] = outcome.reason
        entries.append(("state.changed", change))
    pending = [journal.entry(entity_id=doc.entity_id, actor=ENGINE, kind=kind, at=now, document_id=doc.id,
                             data=entry_data) for kind, entry_data in entries]
    now_s = isoformat(now)
    attempt = await _write(engine, doc, ss, msg, step_id, seq, landing, idle, pending, {
        "now": now_s, "data": data, "next": new_step, "fields": json.dumps(fields),
        "search": repo.search_text(fields), "state": state})
    if attempt is None:
        return False
    if landing.kind != "step":
        DOCUMENT_STATES.labels(doc.flow_id, state).inc()
    if landing.kind == "step":
        await engine.rt.bus.publish(engine._message(doc.id, doc.flow_id, landing.name, int(attempt), seq + 1))
    return True


async def _write(engine: Any, doc: Document, ss: dict[str, Any], msg: Message, step_id: str, seq: int,
                 landing: Any, idle: Any, pending: list[Any], values: dict[str, Any]) -> Any:
    """The guarded statement; the journal entries are chained by PostgreSQL after the head row it
    locked (``journal.sql_chain``).  Returns the attempt of the step entered (1 when none is), or None
    when the guard failed (or PostgreSQL broke a lock cycle this analysis missed): nothing written."""
    hints = engine.rt.store.hints
    # the connection first, then the lock: a lock holder never waits for the pool, where transactions
    # waiting for this lock hold connections.  (The lock keeps this process's writes to one entity from
    # queueing on its head row inside PostgreSQL, each holding a pooled connection.)
    async with engine.rt.store.statements() as tx, journal.head_lock(hints, doc.entity_id):
        args: list[Any] = [doc.id, doc.version, step_id, msg.id, int(ss["attempt"]), doc.entity_id, values["now"],
                           values["data"], values["next"], values["fields"], values["search"], doc.version + 1,
                           seq + 1, values["state"]]
        p = {name: f"${i + 1}" for i, name in enumerate(
            ("doc", "version", "step", "claim", "attempt", "entity", "now", "data", "next", "fields", "search",
             "new_version", "new_seq", "state"))}
        chained, chain_args = journal.sql_chain("l", p["entity"], pending, len(args) + 1)
        args += chain_args
        guarded = "EXISTS (SELECT 1 FROM l)"
        if landing.kind == "step":
            enter = (f"nxt AS (INSERT INTO step_states (document_id, step, attempt, status, data, checks, "
                     f"started_at, updated_at) SELECT {p['doc']}, {p['next']}, 1, 'pending', '{{}}', 0, {p['now']}, "
                     f"{p['now']} WHERE {guarded} ON CONFLICT (document_id, step) DO UPDATE SET "
                     f"attempt = step_states.attempt + 1, status = 'pending', claim = NULL, lease_until = NULL, "
                     f"data = '{{}}', checks = 0, last_error = NULL, started_at = excluded.started_at, "
                     f"updated_at = excluded.updated_at RETURNING attempt), ")
            result, quiet = "(SELECT attempt FROM nxt)", ""
        else:  # no step entered; the state hooks would have nothing to do (their condition is in the guard)
            enter, result, quiet = "", "(SELECT 1 FROM l)", f"AND {idle(p['entity'])} "
        try:
            row = await tx.fetchrow(
                f"WITH l AS (SELECT h.seq, h.hash FROM documents d, step_states s, journal_heads h "
                f"WHERE d.id = {p['doc']} AND d.version = {p['version']} AND s.document_id = {p['doc']} "
                f"AND s.step = {p['step']} AND s.claim = {p['claim']} AND s.attempt = {p['attempt']} "
                f"AND s.status = 'running' AND h.entity_id = {p['entity']} {quiet}"
                f"FOR UPDATE OF d, s SKIP LOCKED FOR UPDATE OF h), {chained}, "
                f"cur AS (UPDATE step_states SET status = 'done', data = {p['data']}, last_error = NULL, "
                f"updated_at = {p['now']} WHERE document_id = {p['doc']} AND step = {p['step']} AND {guarded}), "
                f"{enter}"
                f"doc AS (UPDATE documents SET state = {p['state']}, step = {p['next']}, last_error = NULL, "
                f"fields = {p['fields']}, search_text = {p['search']}, version = {p['new_version']}, "
                f"updated_at = {p['now']}, step_seq = {p['new_seq']} WHERE id = {p['doc']} AND {guarded}) "
                f"SELECT {result} AS result", *args)
        except asyncpg.DeadlockDetectedError:
            return None
        return None if row is None else row["result"]


def _step_hooks_want(runtime: Any, flow: Any, step_id: str) -> bool:
    """True when a step hook cares about this step's connector family (``step_families`` of its owner)."""
    if not runtime.step_hooks:
        return False
    family = flow.step(step_id).family
    return any(family in getattr(getattr(h, "__self__", None), "step_families", (family,)) for h in runtime.step_hooks)


def _hooks_idle_sql(runtime: Any) -> Any:
    """A function of the entity's SQL parameter giving a predicate true when no state hook would do
    anything, or None when a hook cannot tell (its owner has no ``idle_sql``)."""
    parts = []
    for hook in runtime.state_hooks:
        idle = getattr(getattr(hook, "__self__", None), "idle_sql", None)
        if idle is None:
            return None
        parts.append(idle)
    return lambda entity: " AND ".join(part(entity) for part in parts) if parts else "TRUE"


async def _record_sqlite(engine: Any, msg: Message, doc: Document, ss: dict[str, Any], step_id: str, seq: int,
                         outcome: Outcome, fields: dict[str, Any], target: Any, data: str) -> bool:
    """The general path's writes (``Engine._enter`` included, for every kind of target), without its
    read: the guard stands for it."""
    now = engine.rt.clock.now()
    try:
        async with engine.rt.store.transaction() as tx:
            guarded = await tx.execute(
                "UPDATE step_states SET status = 'done', data = $5, last_error = NULL, updated_at = $6 "
                "WHERE document_id = $1 AND step = $2 AND claim = $3 AND attempt = $4 AND status = 'running' "
                "AND EXISTS (SELECT 1 FROM documents WHERE id = $1 AND version = $7)",
                doc.id, step_id, msg.id, int(ss["attempt"]), data, isoformat(now), doc.version)
            if not guarded:
                return False  # nothing written: the transaction commits nothing
            if outcome.fields:
                await engine._journal(tx, doc, "fields.changed", ENGINE,
                                      {"fields": sorted(outcome.fields), "step": step_id})
            await engine._journal(tx, doc, "step.done" if outcome.status == "done" else "step.rejected", ENGINE,
                                  {"step": step_id, "outcome": outcome.name, "message": outcome.message,
                                   "reason": outcome.reason})
            # the row the general path would have read: the guard says it is still the one the claim read
            row = {"version": doc.version, "state": doc.state, "step_seq": seq}
            await engine._enter(tx, replace(doc, fields=fields), target, fields, actor=ENGINE, reason=outcome.reason,
                                row=row, hand_off=True)  # the claim read the document with its files
    except FlowbusError:  # e.g. a loop of skipped steps: rolled back, nothing written; the general path records it
        return False
    return True
