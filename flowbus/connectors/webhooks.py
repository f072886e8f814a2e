"""Webhooks: every state change of an entity's documents POSTed as signed JSON, in order per document.

How it works:

* ``on_state_change(tx, document, old_state, new_state)`` runs inside the engine's transaction
  (``Runtime.state_hooks``).  For each matching webhook it writes one ``webhook_events`` row with a
  per-(webhook, document) ``seq`` and publishes a bus message ``{"webhook", "document"}`` in the
  same transaction: no state change is announced unless it committed, none is lost if it did.
* The handler of queue ``webhooks`` takes a lease on the (webhook, document) *stream* and delivers
  that stream's oldest undelivered event, then the next, and so on.  Events of one document
  therefore leave strictly in ``seq`` order; different documents are delivered in parallel.
* A failed POST (network error, timeout, non-2xx) schedules a delayed "timer" message with an
  exponential backoff (``WebhookPolicy``) and stops the stream; later events wait behind it.  An
  event older than ``max_age`` is given up (status ``failed``) so one dead event cannot block a
  document's stream forever.  Every attempt is kept in ``webhook_attempts`` (the delivery log).

Signature: ``X-Flowbus-Signature: sha256=<hex>`` is HMAC-SHA256 of the raw request body with the
webhook's secret; ``X-Flowbus-Timestamp`` (Unix seconds of the attempt) and ``X-Flowbus-Event`` (the
event id, stable across attempts) are sent too.  Delivery is at-least-once: a receiver dedupes on
the event id (a worker killed between the POST and its bookkeeping sends the event again).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from flowbus.bus.base import Message, Retry
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import NotFound, ValidationError
from flowbus.models import Document
from flowbus.outbound import STRICT, OutboundRefused, client_session
from flowbus.store import repo
from flowbus.store.base import Tx

log = structlog.get_logger(__name__)

QUEUE = "webhooks"
SIGNATURE_HEADER = "X-Flowbus-Signature"
TIMESTAMP_HEADER = "X-Flowbus-Timestamp"
EVENT_HEADER = "X-Flowbus-Event"
EVENT_TYPE = "document.state_changed"

# the entity and its parents up to the root, as the table ``chain(id)`` (UNION: a cycle cannot loop)
_ENTITY_CHAIN = ("WITH RECURSIVE chain(id) AS (SELECT CAST({entity} AS TEXT) UNION SELECT e.parent_id "
                 "FROM entities e JOIN chain ON e.id = chain.id WHERE e.parent_id IS NOT NULL)")


@dataclass(frozen=True)
class WebhookPolicy:
    """Backoff and limits of deliveries (seconds)."""

    base_delay: float = 2.0  # first retry after ~2 s, then 4, 8… up to max_delay
    max_delay: float = 900.0
    max_age: float = 3 * 86400.0  # an event not delivered after 3 days is given up
    timeout: float = 10.0  # one POST
    lease: float = 60.0  # a stream is held this long by one worker at most
    allow_http: bool = False  # plain http only to loopback addresses unless allowed

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookPolicy:
        base = cls()
        return cls(**{name: type(getattr(base, name))(getattr(settings, f"webhook_{name}"))
                      for name in base.__dataclass_fields__ if hasattr(settings, f"webhook_{name}")})

    def delay(self, attempts: int) -> float:
        """Delay before attempt ``attempts + 1``: exponential with ±10 % jitter, capped."""
        raw = min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1)))
        return min(self.max_delay, raw * random.uniform(0.9, 1.1))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Flowbus-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the HMAC over the raw body, compare in constant time."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header)


def check_url(url: str, *, allow_http: bool) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"webhook url {url!r} must be an absolute http(s) URL", field="url")
    if parts.scheme == "http" and not allow_http:
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValidationError("webhook url must use https (plain http is only accepted for loopback "
                                  "addresses)", field="url", hint="use an https:// URL")
    return url


def _json_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(f"{field} must be a list of names", field=field)
    return value


class WebhookService:
    """Registrations, the state-change hook, and the delivery handler of queue ``webhooks``."""

    def __init__(self, runtime: Any, policy: WebhookPolicy | None = None) -> None:
        self.rt = runtime
        self.policy = policy or WebhookPolicy.from_settings(runtime.settings)
        self._consumer: Any = None
        self._session: aiohttp.ClientSession | None = None

    # ---- registrations -----------------------------------------------------------------------

    async def create(self, *, entity_id: str, url: str, actor: str, secret: str | None = None,
                     flows: list[str] | None = None, states: list[str] | None = None,
                     description: str = "") -> tuple[dict[str, Any], str]:
        """Register a webhook; return it and its secret (shown once)."""
        await getattr(self.rt, "outbound", STRICT).check_url(url)  # first: it names the rule, in French
        check_url(url, allow_http=self.policy.allow_http)
        flows = _json_list(flows, "flows")
        states = _json_list(states, "states")
        unknown = [f for f in flows if f not in self.rt.flows]
        if unknown:
            raise ValidationError(f"unknown flow(s) {', '.join(unknown)}", field="flows",
                                  hint=f"known flows: {', '.join(sorted(self.rt.flows))}")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            raise ValidationError("a webhook secret must have at least 16 characters", field="secret")
        secret = secret or secrets.token_urlsafe(32)
        wid = uuid.uuid4().hex
        now = isoformat(self.rt.clock.now())
        async with self.rt.store.transaction() as tx:
            await repo.get_entity(tx, entity_id)
            await tx.execute("INSERT INTO webhooks (id, entity_id, url, secret, flows, states, description, "
                             "created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                             wid, entity_id, url, self._seal(secret), json.dumps(flows), json.dumps(states),
                             description or "", actor, now)
            row = await tx.fetchrow("SELECT * FROM webhooks WHERE id = $1", wid)
        log.info("webhook.created", webhook=wid, entity=entity_id, actor=actor)
        return self._public(row), secret

    @staticmethod
    def _public(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "entity": row["entity_id"], "url": row["url"], "flows": json.loads(row["flows"]),
                "states": json.loads(row["states"]), "description": row["description"],
                "created_by": row["created_by"], "created_at": row["created_at"]}

    async def get(self, webhook_id: str) -> dict[str, Any]:
        async with self.rt.store.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM webhooks WHERE id = $1 AND deleted_at IS NULL", webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} does not exist", field="webhook")
        return self._public(row)

    async def list(self, entity_ids: list[str] | None) -> list[dict[str, Any]]:
        async with self.rt.store.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, id")
        return [self._public(r) for r in rows if entity_ids is None or r["entity_id"] in entity_ids]

    async def delete(self, webhook_id: str, *, actor: str) -> None:
        now = isoformat(self.rt.clock.now())
        async with self.rt.store.transaction() as tx:
            changed = await tx.execute("UPDATE webhooks SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                                       webhook_id, now)
            if not changed:
                raise NotFound(f"webhook {webhook_id} does not exist", field="webhook")
            await tx.execute("UPDATE webhook_events SET status = 'cancelled' WHERE webhook_id = $1 "
                             "AND status = 'pending'", webhook_id)
        log.info("webhook.deleted", webhook=webhook_id, actor=actor)

    async def deliveries(self, webhook_id: str, *, document_id: str | None = None, status: str | None = None,
                         limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """The delivery log: events (newest first) with every attempt made."""
        sql = "SELECT * FROM webhook_events WHERE webhook_id = $1"
        args: list[Any] = [webhook_id]
        if document_id:
            args.append(document_id)
            sql += f" AND document_id = ${len(args)}"
        if status:
            args.append(status)
            sql += f" AND status = ${len(args)}"
        args.extend([max(1, min(limit, 1000)), max(0, offset)])
        sql += f" ORDER BY created_at DESC, seq DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}"
        async with self.rt.store.transaction() as tx:
            await self._webhook_row(tx, webhook_id, deleted_ok=True)
            events = await tx.fetch(sql, *args)
            out = []
            for ev in events:
                attempts = await tx.fetch("SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts "
                                          "WHERE event_id = $1 ORDER BY attempt", ev["id"])
                out.append({"event": ev["id"], "document": ev["document_id"], "sequence": int(ev["seq"]),
                            "status": ev["status"], "attempts": int(ev["attempts"]), "created_at": ev["created_at"],
                            "delivered_at": ev["delivered_at"], "next_attempt_at": ev["next_at"],
                            "last_status": ev["last_status"], "last_error": ev["last_error"],
                            "body": json.loads(ev["body"]), "log": attempts})
        return out

    async def _webhook_row(self, tx: Tx, webhook_id: str, *, deleted_ok: bool = False) -> dict[str, Any]:
        row = await tx.fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
        if row is None or (row["deleted_at"] and not deleted_ok):
            raise NotFound(f"webhook {webhook_id} does not exist", field="webhook")
        return row

    # ---- secrets at rest (flowbus.secretbox) ---------------------------------------------------

    def _seal(self, secret: str) -> str:
        box = getattr(self.rt, "secrets", None)
        return box.seal(secret) if box is not None else secret

    def _open(self, stored: str) -> str:
        box = getattr(self.rt, "secrets", None)
        return box.open(stored) if box is not None else stored

    # ---- the engine's hook -------------------------------------------------------------------

    async def on_state_change(self, tx: Tx, document: Document, old_state: str, new_state: str) -> None:
        """Record and enqueue one event per matching webhook, inside the caller's transaction."""
        hooks = await tx.fetch(f"{_ENTITY_CHAIN.format(entity='$1')} SELECT w.id, w.flows, w.states FROM webhooks w "
                               "JOIN chain ON w.entity_id = chain.id WHERE w.deleted_at IS NULL ORDER BY w.id",
                               document.entity_id)
        if not hooks:
            return
        now = self.rt.clock.now()
        for hook in hooks:
            flows, states = json.loads(hook["flows"]), json.loads(hook["states"])
            if (flows and document.flow_id not in flows) or (states and new_state not in states):
                continue
            seq = int(await tx.fetchval("SELECT COALESCE(MAX(seq), 0) FROM webhook_events WHERE webhook_id = $1 "
                                        "AND document_id = $2", hook["id"], document.id)) + 1
            event_id = uuid.uuid4().hex
            body = {"id": event_id, "type": EVENT_TYPE, "webhook": hook["id"], "sequence": seq,
                    "occurred_at": isoformat(now),
                    "document": {"id": document.id, "entity": document.entity_id, "flow": document.flow_id,
                                 "state": new_state, "previous_state": old_state or None, "step": document.step,
                                 "version": document.version, "last_error": document.last_error,
                                 "updated_at": isoformat(document.updated_at)},
                    "links": {"document": f"{self.rt.settings.base_url}/api/v1/documents/{document.id}"}}
            await tx.execute("INSERT INTO webhook_events (id, webhook_id, document_id, seq, body, status, attempts, "
                             "created_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6)",
                             event_id, hook["id"], document.id, seq, json.dumps(body, ensure_ascii=False),
                             isoformat(now))
            await tx.execute("INSERT INTO webhook_streams (webhook_id, document_id) VALUES ($1, $2) "
                             "ON CONFLICT DO NOTHING", hook["id"], document.id)
            await self.rt.bus.publish(self._message(hook["id"], document.id, f"e{seq}"), tx=tx)

    @staticmethod
    def idle_sql(entity: str) -> str:
        """A PostgreSQL predicate true when ``on_state_change`` would do nothing for a document of the
        entity ``entity`` (an SQL parameter): no live webhook on the entity nor on its parents."""
        return (f"NOT EXISTS ({_ENTITY_CHAIN.format(entity=entity)} SELECT 1 FROM webhooks w "
                "JOIN chain ON w.entity_id = chain.id WHERE w.deleted_at IS NULL)")

    @staticmethod
    def _message(webhook_id: str, document_id: str, tag: str, retry_of: str | None = None) -> Message:
        body = {"webhook": webhook_id, "document": document_id}
        if retry_of:
            body["retry_of"] = retry_of
        return Message(queue=QUEUE, body=body, key=f"{webhook_id}:{document_id}:{tag}")

    # ---- delivery ----------------------------------------------------------------------------

    async def start(self, *, prefetch: int = 16) -> None:
        if self._consumer is None:
            self._consumer = await self.rt.bus.consume(QUEUE, self.handle, prefetch=prefetch)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self.rt.http is not None and not self.rt.http.closed:
            return self.rt.http
        if self._session is None or self._session.closed:
            self._session = client_session(getattr(self.rt, "outbound", STRICT))
        return self._session

    async def _claim(self, webhook_id: str, document_id: str, token: str) -> float | None:
        """Take the stream's lease; None when taken, else seconds until the current lease ends."""
        now = self.rt.clock.now()
        until = isoformat(now + timedelta(seconds=self.policy.lease))
        async with self.rt.store.transaction() as tx:
            changed = await tx.execute(
                "UPDATE webhook_streams SET claim = $3, lease_until = $4 WHERE webhook_id = $1 AND document_id = $2 "
                "AND (claim IS NULL OR claim = $3 OR lease_until < $5)",
                webhook_id, document_id, token, until, isoformat(now))
            if changed:
                return None
            row = await tx.fetchrow("SELECT lease_until FROM webhook_streams WHERE webhook_id = $1 "
                                    "AND document_id = $2", webhook_id, document_id)
        if row is None or not row["lease_until"]:
            return 0.0
        return max(0.0, (parse_iso(row["lease_until"]) - now).total_seconds())

    async def _release(self, tx: Tx, webhook_id: str, document_id: str, token: str) -> None:
        await tx.execute("UPDATE webhook_streams SET claim = NULL, lease_until = NULL WHERE webhook_id = $1 "
                         "AND document_id = $2 AND claim = $3", webhook_id, document_id, token)

    async def _oldest(self, tx: Tx, webhook_id: str, document_id: str) -> dict[str, Any] | None:
        return await tx.fetchrow("SELECT * FROM webhook_events WHERE webhook_id = $1 AND document_id = $2 "
                                 "AND status = 'pending' ORDER BY seq LIMIT 1", webhook_id, document_id)

    async def handle(self, msg: Message) -> None:
        """Deliver the stream's oldest undelivered events, in order, until none is due or one fails."""
        wid, did = msg.body["webhook"], msg.body["document"]
        timer_for = msg.body.get("retry_of")
        token = uuid.uuid4().hex
        while True:
            wait = await self._claim(wid, did, token)
            if wait is not None:
                # Another worker holds the stream; it re-checks after releasing.  If it died, this
                # message, delivered again past its lease, picks the stream up.
                raise Retry(timedelta(seconds=wait + 0.5), "webhook stream held by another worker")
            again = await self._run_stream(wid, did, token, timer_for)
            timer_for = None
            if not again:
                return

    async def _run_stream(self, wid: str, did: str, token: str, timer_for: str | None) -> bool:
        """Deliver while events are due; return True if the stream must be looked at again."""
        while True:
            async with self.rt.store.transaction() as tx:
                hook = await tx.fetchrow("SELECT * FROM webhooks WHERE id = $1", wid)
                event = await self._oldest(tx, wid, did)
                now = self.rt.clock.now()
                if hook is None or hook["deleted_at"]:
                    await tx.execute("UPDATE webhook_events SET status = 'cancelled' WHERE webhook_id = $1 "
                                     "AND document_id = $2 AND status = 'pending'", wid, did)
                    event = None
                if event is not None and event["next_at"] and parse_iso(event["next_at"]) > now \
                        and timer_for != event["id"]:
                    event = None  # in backoff: its timer message will come
                if event is not None and (now - parse_iso(event["created_at"])).total_seconds() > self.policy.max_age:
                    await tx.execute("UPDATE webhook_events SET status = 'failed', next_at = NULL WHERE id = $1",
                                     event["id"])
                    log.warning("webhook.given_up", webhook=wid, document=did, event=event["id"],
                                attempts=event["attempts"])
                    continue
                if event is None:
                    await self._release(tx, wid, did, token)
                    break
                await tx.execute("UPDATE webhook_streams SET lease_until = $4 WHERE webhook_id = $1 AND "
                                 "document_id = $2 AND claim = $3", wid, did, token,
                                 isoformat(now + timedelta(seconds=self.policy.lease)))
            ok = await self._post(hook, event)
            timer_for = None
            if not ok:
                return False
        # Released: an event committed while we held the lease may have had its message dropped.
        async with self.rt.store.transaction() as tx:
            event = await self._oldest(tx, wid, did)
        return event is not None and (not event["next_at"] or parse_iso(event["next_at"]) <= self.rt.clock.now())

    async def _post(self, hook: dict[str, Any], event: dict[str, Any]) -> bool:
        body = event["body"].encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "flowbus-webhooks",
                   SIGNATURE_HEADER: sign(self._open(hook["secret"]), body), TIMESTAMP_HEADER: str(int(time.time())),
                   EVENT_HEADER: event["id"]}
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with self.http.post(hook["url"], data=body, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.policy.timeout)) as resp:
                status = resp.status
                await resp.read()
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except OutboundRefused as exc:  # the address it leads to now (or after a redirect) is not allowed
            error = str(exc)[:500]
            log.warning("webhook.refused", webhook=hook["id"], error=error)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration = int((time.monotonic() - started) * 1000)
        attempts = int(event["attempts"]) + 1
        now = self.rt.clock.now()
        async with self.rt.store.transaction() as tx:
            await tx.execute("INSERT INTO webhook_attempts (event_id, attempt, at, status_code, error, duration_ms) "
                             "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                             event["id"], attempts, isoformat(now), status, error, duration)
            if error is None:
                await tx.execute("UPDATE webhook_events SET status = 'delivered', attempts = $2, delivered_at = $3, "
                                 "next_at = NULL, last_status = $4, last_error = NULL WHERE id = $1",
                                 event["id"], attempts, isoformat(now), status)
                log.info("webhook.delivered", webhook=hook["id"], document=event["document_id"],
                         seq=event["seq"], attempts=attempts, duration_ms=duration)
                return True
            delay = self.policy.delay(attempts)
            await tx.execute("UPDATE webhook_events SET attempts = $2, next_at = $3, last_status = $4, "
                             "last_error = $5 WHERE id = $1", event["id"], attempts,
                             isoformat(now + timedelta(seconds=delay)), status, error)
            await self.rt.bus.publish(self._message(hook["id"], event["document_id"], f"r{event['seq']}-{attempts}",
                                                    retry_of=event["id"]),
                                      delay=timedelta(seconds=delay), tx=tx)
            await tx.execute("UPDATE webhook_streams SET claim = NULL, lease_until = NULL WHERE webhook_id = $1 "
                             "AND document_id = $2", hook["id"], event["document_id"])
        log.info("webhook.failed", webhook=hook["id"], document=event["document_id"], seq=event["seq"],
                 attempts=attempts, error=error, retry_in=round(delay, 2))
        return False


async def rotate_secrets(tx: Tx, box: Any) -> int:
    """Every webhook secret sealed again with the first key of ``box`` (``flowbus secrets rotate``)."""
    rows = await tx.fetch("SELECT id, secret FROM webhooks")
    for row in rows:
        await tx.execute("UPDATE webhooks SET secret = $2 WHERE id = $1", row["id"], box.rotate(row["secret"]))
    return len(rows)


def install(runtime: Any, policy: WebhookPolicy | None = None) -> WebhookService:
    """Attach the webhook service to a runtime once: its hook joins ``runtime.state_hooks``.

    Call ``await service.start()`` in every process that runs workers (the delivery consumer).
    """
    service = getattr(runtime, "webhooks", None)
    if service is None:
        service = WebhookService(runtime, policy)
        runtime.webhooks = service
        runtime.state_hooks.append(service.on_state_change)
        if hasattr(runtime, "on_close"):
            runtime.on_close(service.stop)
    return service
