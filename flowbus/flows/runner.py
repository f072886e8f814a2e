"""The engine: step runs as bus messages; connector outcome, state change and journal in one transaction.

Message body: ``{"document", "step", "attempt", "seq", "op": "start"|"check"}``.  ``seq`` counts the
steps a document has entered, so a message for a step the document has left is recognised
as stale and dropped.  A step run is claimed (``step_states.claim`` = the message id, with a
lease) before the connector is called: a duplicate message is dropped while the claim holds,
a redelivery of the same message (its worker died) takes the claim over and calls the
connector again with the same idempotency key.  When the bus can hand the next step's message
straight to a worker of this process (``Bus.hand_off``: the embedded bus), the transaction that
enters the step claims it for that message and the message carries the claim (``Claim``), so the
worker reads nothing again before calling the connector.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import uuid4

import structlog

from flowbus import journal
from flowbus.bus.base import Message
from flowbus.clock import isoformat, parse_iso
from flowbus.connectors.base import Outcome, StepContext
from flowbus.connectors.registry import FAMILY_WORDS, check_allowed
from flowbus.errors import (Conflict, FlowbusError, NotConfigured, NotFound, PermanentError, TransientError,
                            ValidationError)
from flowbus.flows import fastrecord, machine
from flowbus.flows.model import Target
from flowbus.flows.retry import next_delay
from flowbus.metrics import CONNECTOR_ERRORS, DOCUMENT_STATES, STEP_DURATION, STEP_RUNS
from flowbus.models import Document, FileRef
from flowbus.store import repo
from flowbus.store.base import Tx

log = structlog.get_logger(__name__)

QUEUE = "steps"
ACTIVE = ("running", "waiting")
FINAL = ("done", "cancelled")
ENGINE = "engine"
# Claim a step run ($1 document, $2 step, $3 message id, $4 lease end, $5 now, $6 attempt, $7 step sequence):
# only for the document's current step and attempt, and unless another live claim holds it.
_CLAIM = ("UPDATE step_states SET claim = $3, lease_until = $4, status = 'running', updated_at = $5 "
          "WHERE document_id = $1 AND step = $2 AND attempt = $6 AND (status IN ('pending', 'waiting') "
          "OR (status = 'running' AND (claim IS NULL OR claim = $3 OR lease_until IS NULL OR lease_until <= $5))) "
          "AND EXISTS (SELECT 1 FROM documents WHERE id = $1 AND step = $2 AND step_seq = $7 "
          "AND state IN ('running', 'waiting')) RETURNING attempt, data, started_at")


OVERDUE_GRACE = timedelta(minutes=2)  # a delayed message this late is taken for lost and sent again

_STATE_WORDS = {"draft": "un brouillon", "running": "en cours", "waiting": "en attente", "error": "en erreur",
                "done": "terminé", "cancelled": "annulé", "rejected": "refusé"}


def _count(flow_id: str, step_id: str, outcome: str, seconds: float) -> None:
    STEP_RUNS.labels(flow_id, step_id, outcome).inc()
    STEP_DURATION.labels(flow_id, step_id).observe(seconds)

class Claim(NamedTuple):
    """A step run claimed for a message: what the worker needs to call the connector."""
    doc: Document
    ss: dict[str, Any]  # the step state's attempt, data and started_at
    step: Any
    instance: Any
    config_error: FlowbusError | None


class Engine:
    # Enter a step ($1 document, $2 step, $3 now) → its attempt number.  Re-entering a step (a loop, an
    # administrator's retry) continues its attempt numbers, so idempotency keys never repeat.
    ENTER_STEP_SQL = (
        "INSERT INTO step_states (document_id, step, attempt, status, data, checks, started_at, updated_at) "
        "VALUES ($1, $2, 1, 'pending', '{}', 0, $3, $3) ON CONFLICT (document_id, step) DO UPDATE SET "
        "attempt = step_states.attempt + 1, status = 'pending', claim = NULL, lease_until = NULL, data = '{}', "
        "checks = 0, last_error = NULL, started_at = excluded.started_at, updated_at = excluded.updated_at "
        "RETURNING attempt")
    # The same, claimed at once for the message about to be handed off ($4 its id, $5 the lease end).
    ENTER_CLAIMED_SQL = (
        "INSERT INTO step_states (document_id, step, attempt, status, claim, lease_until, data, checks, started_at, "
        "updated_at) VALUES ($1, $2, 1, 'running', $4, $5, '{}', 0, $3, $3) ON CONFLICT (document_id, step) DO UPDATE "
        "SET attempt = step_states.attempt + 1, status = 'running', claim = $4, lease_until = $5, data = '{}', "
        "checks = 0, last_error = NULL, started_at = excluded.started_at, updated_at = excluded.updated_at "
        "RETURNING attempt")

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self._consumer: Any = None
        self.stats = {"steps": 0, "latencies": []}
        self._files_in_conditions: dict[str, bool] = {}
        self._fast = fastrecord.applies(runtime)  # the usual outcome with the fewest statements

    # ---- workers -----------------------------------------------------------------------------

    async def start_workers(self) -> None:
        if self._consumer is None:
            self._consumer = await self.rt.bus.consume(QUEUE, self.handle, prefetch=self.rt.settings.workers,
                                                       max_attempts=10)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    # ---- helpers -----------------------------------------------------------------------------

    def _message(self, doc_id: str, flow_id: str, step: str, attempt: int, seq: int, op: str = "start", *,
                 msg_id: str | None = None, local: Any = None, due: str | None = None) -> Message:
        body = {"document": doc_id, "flow": flow_id, "step": step, "attempt": attempt, "seq": seq, "op": op,
                "sent": time.time()}
        if due is not None:  # a delayed check: the due date it answers (stale once the sweep sent another)
            body["due"] = due
        key = f"{doc_id}:{step}:{attempt}:{op}"
        if msg_id is None:
            return Message(queue=QUEUE, body=body, key=key)
        return Message(queue=QUEUE, body=body, key=key, id=msg_id, local=local)

    async def _publish(self, tx: Tx, msg: Message, delay: timedelta | None = None, hand_off: Any = None) -> None:
        await self.rt.bus.publish(msg, delay=delay if delay and delay.total_seconds() > 0 else None, tx=tx,
                                  hand_off=hand_off)

    @staticmethod
    def _lease_end(step: Any, now: datetime) -> str:
        """Until when a claim holds: a worker gone silent that long has died."""
        return isoformat(now + step.timeout * 2 + timedelta(seconds=30))

    def _conditions_test_files(self, flow: Any) -> bool:
        """Whether a condition of the flow reads ``files.…`` (only then are file rows needed to route)."""
        cached = self._files_in_conditions.get(flow.id)
        if cached is None:
            cached = any(s.when is not None and any(n.startswith("files") for n in s.when.names())
                         for s in flow.steps)
            self._files_in_conditions[flow.id] = cached
        return cached

    def _expr_ctx(self, doc: Document, fields: dict[str, Any]) -> dict[str, Any]:
        return {"fields": fields, "files": {f.field: True for f in doc.files},
                "document": {"state": doc.state, "flow": doc.flow_id}}

    async def _journal(self, tx: Tx, doc: Document, kind: str, actor: str, data: dict[str, Any]) -> None:
        await journal.append(tx, entity_id=doc.entity_id, actor=actor, kind=kind, at=self.rt.clock.now(),
                             document_id=doc.id, data=data)

    async def _set_state(self, tx: Tx, doc: Document, row: dict[str, Any], *, actor: str,
                         step_seq: int | None = None, reason: str | None = None) -> Document:
        """Write the document over ``row`` (its stored version); journal and announce a state change."""
        new = await repo.update_document(tx, doc, expected_version=int(row["version"]), at=self.rt.clock.now(),
                                         step_seq=step_seq)
        old_state = row["state"]
        if old_state != doc.state:
            data: dict[str, Any] = {"from": old_state, "to": doc.state, "step": doc.step}
            if reason:
                data["reason"] = reason
            await self._journal(tx, doc, "state.changed", actor, data)
            DOCUMENT_STATES.labels(doc.flow_id, doc.state).inc()
            for hook in self.rt.state_hooks:
                await hook(tx, new, old_state or "", doc.state)
        return new

    def land(self, doc: Document, target: Any, fields: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        """Where ``target`` lands once the steps whose condition is false are skipped, and the journal
        data of each step skipped on the way."""
        flow = self.rt.flow_of(doc)
        skipped: list[dict[str, Any]] = []
        seen: set[str] = set()
        while target.kind == "step":
            step = flow.step(target.name)
            if step.when is None or step.when.evaluate(self._expr_ctx(doc, fields)):
                break
            if step.id in seen:  # a loop of skipped steps: the validator forbids it; stay safe
                raise PermanentError(f"steps loop while skipping at {step.id!r}")
            seen.add(step.id)
            skipped.append({"step": step.id, "condition": step.when.source if hasattr(step.when, "source")
                            else str(step.when)})
            target = machine.decide(flow, step.id, "skipped")
        return target, skipped

    async def _enter(self, tx: Tx, doc: Document, target: Any, fields: dict[str, Any], *, actor: str,
                     reason: str | None = None, row: dict[str, Any] | None = None, hand_off: bool = False
                     ) -> Document:
        """Follow ``target`` (skipping steps whose condition is false) and enter where it lands.

        ``hand_off``: ``doc`` is the stored document, files included, so a worker of this process may
        run the step entered with it, if the bus can hand the message over (``Bus.hand_off``)."""
        if row is None:
            row = await repo.document_row(tx, doc.id)
        seq = int(row["step_seq"])
        target, skipped = self.land(doc, target, fields)
        for entry in skipped:
            await self._journal(tx, doc, "step.skipped", actor, entry)
        clock_now = self.rt.clock.now()
        now = isoformat(clock_now)
        if target.kind == "step":
            handing = self.rt.bus.hand_off(QUEUE, tx) if hand_off else None
            if handing is not None:  # claimed now for the message handed off: its worker reads nothing again
                step = self.rt.flow_of(doc).step(target.name)
                msg_id = uuid4().hex
                attempt = int(await tx.fetchval(self.ENTER_CLAIMED_SQL, doc.id, target.name, now, msg_id,
                                                self._lease_end(step, clock_now)))
                instance, config_error = await self._instance(tx, step, doc)
            else:
                attempt = int(await tx.fetchval(self.ENTER_STEP_SQL, doc.id, target.name, now))
            new_doc = replace(doc, state="running", step=target.name, fields=fields, last_error=None)
            new_doc = await self._set_state(tx, new_doc, row, actor=actor, step_seq=seq + 1, reason=reason)
            if handing is None:
                msg = self._message(doc.id, doc.flow_id, target.name, attempt, seq + 1)
            else:
                ss = {"attempt": attempt, "data": "{}", "started_at": now}
                msg = self._message(doc.id, doc.flow_id, target.name, attempt, seq + 1, msg_id=msg_id,
                                    local=Claim(new_doc, ss, step, instance, config_error))
            await self._publish(tx, msg, hand_off=handing)
            return new_doc
        if target.kind == "end":
            new_doc = replace(doc, state="done", step=None, fields=fields, last_error=None)
        else:  # a named state (e.g. « refusé »): the reason is kept with the document's fields
            if reason:
                fields = {**fields, "rejection_reason": reason}
            new_doc = replace(doc, state=target.name, fields=fields, last_error=None)
        return await self._set_state(tx, new_doc, row, actor=actor, step_seq=seq + 1, reason=reason)

    # ---- commands from the API ---------------------------------------------------------------

    async def start_document(self, tx: Tx, doc: Document, *, actor: str, row: dict[str, Any] | None = None
                             ) -> Document:
        """Enter the first step; ``row``: the document's stored row, if the caller read it in this transaction."""
        if doc.state != "draft":
            raise Conflict(f"Le document est déjà {_STATE_WORDS.get(doc.state, doc.state)} : seul un brouillon peut "
                           "être envoyé.", field="state")
        flow = self.rt.flow(doc.flow_id)  # a draft follows the version in service: it is pinned now
        if doc.flow_version != flow.version:
            await tx.execute("UPDATE documents SET flow_version = $2 WHERE id = $1", doc.id, flow.version)
            doc = replace(doc, flow_version=flow.version)
        from flowbus.flows.fields import missing_for_start
        missing = missing_for_start(flow, doc.fields, {f.field for f in doc.files})
        if missing:
            labels = ", ".join(f"« {flow.field(m).label} »" if flow.has_field(m) else m for m in missing)
            raise ValidationError(f"Avant l'envoi, il manque : {labels}.", field=missing[0],
                                  hint="complete them with PATCH or attach the files, then start")
        await self._journal(tx, doc, "admin.action", actor, {"action": "start"})
        if not flow.steps:
            return await self._enter(tx, doc, Target("end", None), dict(doc.fields), actor=actor, row=row)
        # with row, the caller read the document and its files in this transaction: it may be handed off
        return await self._enter(tx, doc, Target("step", flow.start), dict(doc.fields), actor=actor, row=row,
                                 hand_off=row is not None)

    async def admin_action(self, tx: Tx, doc: Document, action: str, *, actor: str, comment: str | None = None,
                           row: dict[str, Any] | None = None) -> Document:
        """retry | skip | cancel | resume — all journaled with the actor.  ``row``: as for ``start_document``."""
        await self.rt.ensure_flow_of(doc, tx)
        flow = self.rt.flow_of(doc)
        hand_off = row is not None  # as in start_document
        if row is None:
            row = await repo.document_row(tx, doc.id)
        data = {"action": action, "step": doc.step}
        if comment:
            data["comment"] = comment
        if action == "cancel":
            if doc.state in FINAL:
                raise Conflict(f"Un document {_STATE_WORDS.get(doc.state, doc.state)} ne peut plus être annulé.",
                               field="state")
            await self._journal(tx, doc, "admin.action", actor, data)
            return await self._set_state(tx, replace(doc, state="cancelled"), row, actor=actor,
                                         step_seq=int(row["step_seq"]) + 1, reason=comment)
        if action in ("retry", "resume"):
            if doc.step is None or doc.state in ("done", "draft") or (action == "retry" and doc.state != "error"):
                raise Conflict(f"Rien à {'relancer' if action == 'retry' else 'reprendre'} : le document est "
                               f"{_STATE_WORDS.get(doc.state, doc.state)}"
                               + (" (seuls les documents en erreur se relancent)." if action == "retry" else "."),
                               field="state")
            await self._journal(tx, doc, "admin.action", actor, data)
            return await self._enter(tx, doc, Target("step", doc.step), dict(doc.fields), actor=actor, row=row,
                                     hand_off=hand_off)
        if action == "skip":
            if doc.step is None or doc.state not in ("error", "waiting", "running"):
                raise Conflict(f"Aucune étape à passer : le document est {_STATE_WORDS.get(doc.state, doc.state)}.",
                               field="state")
            await self._journal(tx, doc, "admin.action", actor, data)
            await tx.execute("UPDATE step_states SET status = 'skipped', updated_at = $3 WHERE document_id = $1 "
                             "AND step = $2", doc.id, doc.step, isoformat(self.rt.clock.now()))
            return await self._enter(tx, doc, machine.decide(flow, doc.step, "done"), dict(doc.fields), actor=actor,
                                     row=row, hand_off=hand_off)
        raise NotFound(f"Action inconnue « {action} ».", field="action",
                       hint="actions: start, retry, skip, cancel, resume")

    # ---- the worker ---------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        body = msg.body
        doc_id, step_id, attempt, seq, op = (body["document"], body["step"], int(body["attempt"]), int(body["seq"]),
                                             body.get("op", "start"))
        now = self.rt.clock.now()
        claimed = msg.local if isinstance(msg.local, Claim) else None  # handed off, claimed with its step
        if claimed is None and "flow" in body:
            claimed = await self._claim(msg, doc_id, body["flow"], step_id, attempt, seq, now)
        if claimed is None:
            claimed = await self._claim_checked(msg, doc_id, step_id, attempt, seq, now)
            if claimed is None:
                return
        doc, ss, step, instance, config_error = claimed
        bound = log.bind(document_id=doc_id, entity=doc.entity_id, flow=doc.flow_id, step=step_id, attempt=attempt,
                         op=op)
        started = time.monotonic()
        if "sent" in body and op == "start":
            self.stats["latencies"].append(max(0.0, time.time() - float(body["sent"])))
        outcome: Outcome | None = None
        error: FlowbusError | None = config_error
        if instance is not None:
            ctx = StepContext(runtime=self.rt, document=doc, flow_id=doc.flow_id, step_id=step_id,
                              params=step.params, instance=instance, attempt=attempt,
                              idempotency_key=f"{doc_id}:{step_id}:{attempt}", data=json.loads(ss["data"] or "{}"),
                              started_at=parse_iso(ss["started_at"]), log=bound)
            try:
                connector = self.rt.connector(instance)
                call = connector.start(ctx) if op == "start" else connector.check(ctx)
                async with asyncio.timeout(step.timeout.total_seconds()):  # not wait_for: see EmbeddedConsumer._run
                    outcome = await call
            except TimeoutError:
                error = TransientError(f"step {step_id!r} took longer than {step.timeout} and was abandoned")
            except FlowbusError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a connector bug must not lose the document
                bound.exception("step.crashed")
                error = TransientError(f"unexpected error in connector {instance.kind!r}: {exc!r}")
        if outcome is not None and self._fast and await fastrecord.record_done(self, msg, doc, ss, step_id, seq,
                                                                               outcome):
            self.stats["steps"] += 1
            elapsed = time.monotonic() - started
            _count(doc.flow_id, step_id, outcome.name, elapsed)
            bound.info("step.finished", outcome=outcome.name, duration_ms=round(elapsed * 1000, 1))
            return
        for _ in range(5):
            try:
                async with self.rt.store.transaction() as tx:
                    await self._record(tx, doc_id, step_id, attempt, seq, op, msg, outcome, error)
                break
            except Conflict:
                continue  # the document changed meanwhile (fields PATCHed): apply again on the new version
            except FlowbusError as exc:
                # recording the outcome itself failed (e.g. the flow routes an outcome nowhere):
                # the document must not stay "running" invisibly — put it in error, with the reason
                bound.error("step.record_failed", error=str(exc))
                async with self.rt.store.transaction() as tx:
                    await self._record(tx, doc_id, step_id, attempt, seq, op, msg, None,
                                       PermanentError(f"cannot apply the outcome of step {step_id!r}: {exc}"))
                break
        self.stats["steps"] += 1
        failed = error is not None and outcome is None  # retried later or the document is now in error
        elapsed = time.monotonic() - started
        _count(doc.flow_id, step_id, outcome.name if outcome else "failed", elapsed)
        if failed:
            CONNECTOR_ERRORS.labels(instance.family if instance else step.family, instance.kind if instance else "—",
                                    "transient" if isinstance(error, TransientError) else "permanent").inc()
        (bound.warning if failed else bound.info)(
            "step.finished", outcome=outcome.name if outcome else None, error=str(error) if failed else None,
            duration_ms=round(elapsed * 1000, 1))

    async def _claim(self, msg: Message, doc_id: str, flow_id: str, step_id: str, attempt: int, seq: int,
                     now: Any) -> Claim | None:
        """The usual claim: one conditional UPDATE takes the step run if the document is on this step
        (same step sequence and attempt) and no other live claim holds it; None when it does not apply
        (stale or duplicate message, unknown flow): ``_claim_checked`` then looks at why."""
        try:
            step = self.rt.flow(flow_id).step(step_id)
        except (FlowbusError, KeyError):
            return None
        args = (doc_id, step_id, msg.id, self._lease_end(step, now), isoformat(now), attempt, seq)
        async with self.rt.store.statements() as tx:
            if tx.dialect == "postgres":  # the claim and the document with its files: one round trip
                rows = await tx.fetch(
                    f"WITH c AS ({_CLAIM}) SELECT c.attempt AS ss_attempt, c.data AS ss_data, c.started_at AS "
                    f"ss_started_at, {repo.DOCUMENT_WITH_FILES_COLUMNS} FROM c JOIN documents d ON d.id = $1 "
                    f"{repo.DOCUMENT_FILES_JOIN} ORDER BY f.field, f.idx", *args)
                doc = repo.document_from_joined_rows(rows)
                ss = rows and {"attempt": rows[0]["ss_attempt"], "data": rows[0]["ss_data"],
                               "started_at": rows[0]["ss_started_at"]}
            else:
                ss = await tx.fetchrow(_CLAIM, *args)
                doc = None if ss is None else await repo.document_with_files(tx, doc_id)
            if not ss or doc is None:
                return None
            step = await self._step_of(tx, doc, step_id, step)
            instance, config_error = await self._instance(tx, step, doc)
        return Claim(doc, ss, step, instance, config_error)

    async def _claim_checked(self, msg: Message, doc_id: str, step_id: str, attempt: int, seq: int,
                             now: Any) -> Claim | None:
        """The claim, reading first why it may not apply: a stale message (the document left the step:
        make sure its current step has a message), a duplicate while another worker's claim holds."""
        async with self.rt.store.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM documents WHERE id = $1", doc_id)
            if row is None:
                return None
            ss = await tx.fetchrow("SELECT * FROM step_states WHERE document_id = $1 AND step = $2", doc_id, step_id)
            if row["state"] not in ACTIVE or row["step"] != step_id or int(row["step_seq"]) != seq \
                    or ss is None or int(ss["attempt"]) != attempt:
                await self._recover_lost(tx, row, doc_id, seq)
                return None
            if ss["status"] in ("done", "skipped", "error"):
                return None
            if ss["claim"] and ss["claim"] != msg.id and ss["status"] == "running" and ss["lease_until"] \
                    and parse_iso(ss["lease_until"]) > now:
                return None  # a duplicate message while another worker runs this step
            doc = repo.document_from_row(row, await repo.list_files(tx, doc_id))
            step = await self._step_of(tx, doc, step_id)
            await tx.execute("UPDATE step_states SET claim = $3, lease_until = $4, status = 'running', updated_at = $5 "
                             "WHERE document_id = $1 AND step = $2", doc_id, step_id, msg.id,
                             self._lease_end(step, now), isoformat(now))
            instance, config_error = await self._instance(tx, step, doc)
        return Claim(doc, ss, step, instance, config_error)

    async def _step_of(self, tx: Tx, doc: Document, step_id: str, current: Any = None) -> Any:
        """The step as the document's flow version declares it (the version it was started with)."""
        flow = self.rt.flows.get(doc.flow_id)
        if flow is not None and flow.version == doc.flow_version and current is not None:
            return current
        await self.rt.ensure_flow_of(doc, tx)
        return self.rt.flow_of(doc).step(step_id)

    async def _instance(self, tx: Tx, step: Any, doc: Document) -> tuple[Any, FlowbusError | None]:
        """The step's connector instance for the document's collectivité, or the error that puts the
        document in a visible error: none configured, or a test connector in a real install."""
        try:
            instance = await self.rt.instances.resolve(tx, step.connector, doc.entity_id)
            check_allowed(instance, demo=self.rt.settings.demo)
            return instance, None
        except NotConfigured:
            entity = (await repo.entities_by_ids(tx, [doc.entity_id])).get(doc.entity_id)
            name = entity.name if entity else doc.entity_id
            return None, NotConfigured(
                f"Connecteur non configuré pour « {name} » : {FAMILY_WORDS.get(step.family, step.family)} "
                f"(instance « {step.connector} » de l'étape « {step.label} »). Configurez-la dans « Connecteurs » "
                "pour cette collectivité ou une collectivité mère, puis relancez l'étape.", field="connector")
        except FlowbusError as exc:
            return None, exc

    async def resend_overdue(self, *, grace: timedelta = OVERDUE_GRACE, limit: int = 500) -> int:
        """Send again the delayed message of every step whose check or retry is overdue by ``grace``: a broker
        may keep a message past its delay (RabbitMQ quorum queues: rabbitmq-server#10718) or a process may die
        between its commit and its publish. One index range; returns how many were sent again."""
        now = self.rt.clock.now()
        rows = await self._overdue(now - grace, limit)
        sent = 0
        for r in rows:
            async with self.rt.store.transaction() as tx:
                ss = await tx.fetchrow("SELECT s.status, s.attempt, s.due_at, d.flow_id, d.step, d.step_seq, d.state "
                                       "FROM step_states s JOIN documents d ON d.id = s.document_id "
                                       "WHERE s.document_id = $1 AND s.step = $2", r["document_id"], r["step"])
                if ss is None or ss["due_at"] != r["due_at"] or ss["status"] not in ("waiting", "pending") \
                        or ss["step"] != r["step"] or ss["state"] not in ACTIVE:
                    continue  # it moved meanwhile: its message came
                due = isoformat(now + max(grace, timedelta(minutes=1)))  # the resent message's own due date
                await tx.execute("UPDATE step_states SET due_at = $3 WHERE document_id = $1 AND step = $2",
                                 r["document_id"], r["step"], due)
                op = "check" if ss["status"] == "waiting" else "start"
                await self._publish(tx, self._message(r["document_id"], ss["flow_id"], r["step"], int(ss["attempt"]),
                                                      int(ss["step_seq"]), op, due=due if op == "check" else None))
            log.warning("engine.message_resent", document_id=r["document_id"], step=r["step"], op=op,
                        due_at=r["due_at"], overdue_s=round((now - parse_iso(r["due_at"])).total_seconds()))
            sent += 1
        return sent

    async def _overdue(self, before: datetime, limit: int) -> list[dict[str, Any]]:
        async with self.rt.store.transaction() as tx:
            return await tx.fetch("SELECT document_id, step, due_at FROM step_states WHERE status IN ('waiting', "
                                  "'pending') AND due_at IS NOT NULL AND due_at < $1 ORDER BY due_at LIMIT $2",
                                  isoformat(before), limit)

    async def _recover_lost(self, tx: Tx, row: dict[str, Any], doc_id: str, seq: int) -> None:
        """A message for a step the document already left: make sure the current step has its message.

        With a broker that is not transactional with the store, the worker may have died after
        the commit that entered the next step and before publishing its message.
        """
        if row["state"] != "running" or int(row["step_seq"]) != seq + 1 or row["step"] is None:
            return
        ss = await tx.fetchrow("SELECT attempt, status FROM step_states WHERE document_id = $1 AND step = $2",
                               doc_id, row["step"])
        if ss is not None and ss["status"] == "pending":
            await self._publish(tx, self._message(doc_id, row["flow_id"], row["step"], int(ss["attempt"]),
                                                        int(row["step_seq"])))

    async def _record(self, tx: Tx, doc_id: str, step_id: str, attempt: int, seq: int, op: str, msg: Message,
                      outcome: Outcome | None, error: FlowbusError | None) -> None:
        row = await tx.fetchrow(
            "SELECT d.*, s.attempt AS ss_attempt, s.status AS ss_status, s.claim AS ss_claim, s.data AS ss_data, "
            "s.checks AS ss_checks, s.started_at AS ss_started_at, s.due_at AS ss_due_at FROM documents d "
            "LEFT JOIN step_states s "
            "ON s.document_id = d.id AND s.step = $2 WHERE d.id = $1", doc_id, step_id)
        if row is None:
            raise NotFound(f"document {doc_id!r} does not exist", field="id")
        ss = None if row["ss_attempt"] is None else {
            "attempt": row["ss_attempt"], "status": row["ss_status"], "claim": row["ss_claim"],
            "data": row["ss_data"], "checks": row["ss_checks"], "started_at": row["ss_started_at"],
            "due_at": row["ss_due_at"]}
        if row["step"] != step_id or int(row["step_seq"]) != seq or ss is None or int(ss["attempt"]) != attempt \
                or ss["claim"] != msg.id or row["state"] not in ACTIVE:
            return  # an administrator acted meanwhile (cancel, skip): the outcome is no longer wanted
        doc = repo.document_from_row(row, [])
        flow = self.rt.flow_of(doc)
        step = flow.step(step_id)
        now = self.rt.clock.now()
        if outcome is None:
            assert error is not None
            await self._failed(tx, doc, step, ss, seq, op, error, row)
            return
        fields = dict(doc.fields)
        fields.update(outcome.fields)
        for nf in outcome.files:
            ref = await repo.put_file(tx, FileRef(doc.id, nf.field, 0, nf.filename, nf.media_type, nf.blob.size,
                                                  nf.blob.sha256, nf.blob.key, now), replace=not nf.append)
            await self._journal(tx, doc, "file.added", ENGINE, {"field": ref.field, "filename": ref.filename,
                                                                "sha256": ref.sha256, "size": ref.size,
                                                                "step": step_id})
        if outcome.fields:
            await self._journal(tx, doc, "fields.changed", ENGINE, {"fields": sorted(outcome.fields), "step": step_id})
        if outcome.files or self._conditions_test_files(flow):
            doc = replace(doc, files=tuple(await repo.list_files(tx, doc_id)))  # conditions may test files.x
        data = json.dumps(dict(outcome.data) if outcome.data else json.loads(ss["data"] or "{}"))
        if outcome.status == "waiting":
            deadline = step.wait.deadline if step.wait else None
            started = parse_iso(ss["started_at"])
            if deadline is not None and now - started > deadline:
                await tx.execute("UPDATE step_states SET status = 'done', data = $3, updated_at = $4 "
                                 "WHERE document_id = $1 AND step = $2", doc.id, step_id, data, isoformat(now))
                reason = f"délai dépassé pour l'étape « {step.label} » ({deadline})"
                await self._journal(tx, doc, "step.deadline", ENGINE, {"step": step_id, "deadline": str(deadline)})
                if "timeout" in step.on:
                    await self._enter(tx, doc, machine.decide(flow, step_id, "timeout"), fields, actor=ENGINE,
                                      reason=reason, row=row)
                else:
                    await self._set_state(tx, replace(doc, state="error", fields=fields, last_error=reason), row,
                                          actor=ENGINE, reason=reason)
                return
            checks = int(ss["checks"]) + (1 if op == "check" else 0)
            delay = outcome.check_in or (step.wait.check_every if step.wait else timedelta(minutes=5))
            # a check message the overdue sweep replaced (it carries an older due date) runs, but does not start
            # a second chain of checks
            current = op != "check" or msg.body.get("due") in (None, ss.get("due_at"))
            due = isoformat(now + delay) if current else ss.get("due_at")
            await tx.execute("UPDATE step_states SET status = 'waiting', data = $3, checks = $4, claim = NULL, "
                             "updated_at = $5, due_at = $6 WHERE document_id = $1 AND step = $2", doc.id, step_id,
                             data, checks, isoformat(now), due)
            if op == "start" or outcome.message:
                await self._journal(tx, doc, "step.waiting", ENGINE, {"step": step_id, "message": outcome.message})
            if current:
                await self._publish(tx, self._message(doc.id, doc.flow_id, step_id, int(ss["attempt"]), seq, "check",
                                                      due=due), delay)
            if doc.state != "waiting" or outcome.fields:
                await self._set_state(tx, replace(doc, state="waiting", fields=fields), row, actor=ENGINE)
            return
        await tx.execute("UPDATE step_states SET status = 'done', data = $3, last_error = NULL, updated_at = $4 "
                         "WHERE document_id = $1 AND step = $2", doc.id, step_id, data, isoformat(now))
        kind = "step.done" if outcome.status == "done" else "step.rejected"
        await self._journal(tx, doc, kind, ENGINE, {"step": step_id, "outcome": outcome.name,
                                                    "message": outcome.message, "reason": outcome.reason})
        if outcome.status == "done":
            for hook in self.rt.step_hooks:
                await hook(tx, replace(doc, fields=fields), step, outcome)
        target = machine.decide(flow, step_id, outcome.name, status=outcome.status)
        await self._enter(tx, replace(doc, fields=fields), target, fields, actor=ENGINE, reason=outcome.reason, row=row)

    async def _failed(self, tx: Tx, doc: Document, step: Any, ss: dict[str, Any], seq: int, op: str,
                      error: FlowbusError, row: dict[str, Any]) -> None:
        now = self.rt.clock.now()
        attempt = int(ss["attempt"])
        failures = int(ss["checks"]) + 1 if op == "check" else attempt
        retryable = isinstance(error, TransientError) and failures < step.retry.attempts
        message = str(error)
        await self._journal(tx, doc, "step.failed", ENGINE, {"step": step.id, "attempt": attempt, "error": message,
                                                             "field": error.field, "will_retry": retryable})
        if retryable:
            retry_in = getattr(error, "retry_in", None)
            delay = timedelta(seconds=retry_in) if retry_in is not None else next_delay(step.retry, failures)
            due = isoformat(now + delay)
            if op == "check":
                await tx.execute("UPDATE step_states SET status = 'waiting', claim = NULL, checks = $3, last_error = $4,"
                                 " updated_at = $5, due_at = $6 WHERE document_id = $1 AND step = $2", doc.id, step.id,
                                 failures, message, isoformat(now), due)
                await self._publish(tx, self._message(doc.id, doc.flow_id, step.id, attempt, seq, "check", due=due),
                                    delay)
            else:
                await tx.execute("UPDATE step_states SET status = 'pending', claim = NULL, attempt = $3, "
                                 "last_error = $4, updated_at = $5, due_at = $6 WHERE document_id = $1 AND step = $2",
                                 doc.id, step.id, attempt + 1, message, isoformat(now), due)
                await self._publish(tx, self._message(doc.id, doc.flow_id, step.id, attempt + 1, seq), delay)
            return
        await tx.execute("UPDATE step_states SET status = 'error', claim = NULL, last_error = $3, updated_at = $4 "
                         "WHERE document_id = $1 AND step = $2", doc.id, step.id, message, isoformat(now))
        await self._set_state(tx, replace(doc, state="error", last_error=message), row, actor=ENGINE,
                              reason=message)
