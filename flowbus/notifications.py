"""Notifications by e-mail: people subscribe per collectivité (and the ones below it), flow and event,
immediately or in a daily digest; signers are told when a folder arrives on their desk.

How it works:

* ``on_state_change`` (a ``Runtime.state_hooks`` hook, inside the engine's transaction) turns a state
  change into an event — ``error``, ``refused`` (a refusal state the flow names: préfecture, signer,
  DGFiP…), ``done`` — and ``on_step_done`` (a ``Runtime.step_hooks`` hook) a step ended done —
  ``signed``, ``acknowledged`` (AR, PES Acquit), ``mailsec`` —; each writes one ``notifications`` row per
  matching subscription.  Immediate ones
  also get an ``outbox_mails`` row and a bus message (queue ``mails``): nothing is announced unless the
  change committed, nothing is lost if it did.  ``idle_sql`` lets the engine's short record skip the
  hook where nobody subscribed.
* The ``mails`` consumer sends one outbox mail through the platform's SMTP server (settings
  ``FLOWBUS_SMTP_*``) and marks it sent; a failure is retried by the bus, then left visible with its
  error (``flowbus doctor`` and the operations page count unsent mails).
* ``send_digests(rt)`` gathers each person's digest notifications not sent yet into one mail; the
  scheduler (``flowbus.jobs``) runs it once a day, at ``DIGEST_HOUR`` (Paris time), in one process.
* Whether the person may still read the document is checked when the mail is written: a right
  revoked in between means no mail.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import structlog

from flowbus.bus.base import Message
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import ConfigError, ValidationError
from flowbus.people import access, accounts
from flowbus.people import mail as platform_mail
from flowbus.store.base import Tx

log = structlog.get_logger("flowbus.notifications")

QUEUE = "mails"
EVENTS = {"error": "Document en erreur", "refused": "Document refusé (préfecture, signataire, DGFiP…)",
          "signed": "Document signé (parapheur)", "acknowledged": "Acquitté (AR de la préfecture, PES Acquit)",
          "mailsec": "Courriel sécurisé envoyé (ou lu, si l'étape attend la lecture)",
          "done": "Circuit terminé"}
# the step events: a step of these connector families ended done
STEP_EVENTS = {"signature": "signed", "tdt-actes": "acknowledged", "tdt-helios": "acknowledged",
               "mailsec": "mailsec"}
MODES = {"immediate": "Immédiatement", "digest": "Résumé quotidien"}
ALL_FLOWS = "*"
DIGEST_HOUR = 7  # Paris time
_CHAIN = ("WITH RECURSIVE chain(id) AS (SELECT CAST({entity} AS TEXT) UNION SELECT e.parent_id "
          "FROM entities e JOIN chain ON e.id = chain.id WHERE e.parent_id IS NOT NULL)")


@dataclass(frozen=True)
class Subscription:
    id: str
    user_id: str
    entity_id: str
    flow_id: str  # ALL_FLOWS for every flow
    event: str
    mode: str


def event_of(flow: Any, new_state: str) -> str | None:
    if new_state == "error":
        return "error"
    if new_state == "done":
        return "done"
    if new_state == "rejected" or (flow is not None and new_state in flow.states):
        return "refused"
    return None


# ---- subscriptions ------------------------------------------------------------------------------

async def subscribe(tx: Tx, *, user_id: str, entity_id: str, flow_id: str, event: str, mode: str,
                    now: datetime) -> Subscription:
    if event not in EVENTS:
        raise ValidationError(f"Événement inconnu « {event} ».", field="event")
    if mode not in MODES:
        raise ValidationError(f"Mode d'envoi inconnu « {mode} ».", field="mode")
    existing = await tx.fetchrow("SELECT id FROM subscriptions WHERE user_id = $1 AND entity_id = $2 AND flow_id = $3 "
                                 "AND event = $4", user_id, entity_id, flow_id or ALL_FLOWS, event)
    if existing is not None:
        await tx.execute("UPDATE subscriptions SET mode = $2 WHERE id = $1", existing["id"], mode)
        sub_id = existing["id"]
    else:
        sub_id = uuid.uuid4().hex
        await tx.execute("INSERT INTO subscriptions (id, user_id, entity_id, flow_id, event, mode, created_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7)", sub_id, user_id, entity_id, flow_id or ALL_FLOWS,
                         event, mode, isoformat(now))
    return Subscription(sub_id, user_id, entity_id, flow_id or ALL_FLOWS, event, mode)


async def unsubscribe(tx: Tx, *, user_id: str, subscription_id: str) -> bool:
    return bool(await tx.execute("DELETE FROM subscriptions WHERE id = $1 AND user_id = $2", subscription_id, user_id))


async def subscriptions_of(tx: Tx, user_id: str) -> list[Subscription]:
    rows = await tx.fetch("SELECT * FROM subscriptions WHERE user_id = $1 ORDER BY created_at LIMIT 500", user_id)
    return [Subscription(r["id"], r["user_id"], r["entity_id"], r["flow_id"], r["event"], r["mode"]) for r in rows]


# ---- the engine's hook --------------------------------------------------------------------------

class NotificationService:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._consumer: Any = None

    step_families = tuple(STEP_EVENTS)

    async def on_state_change(self, tx: Tx, document: Any, old_state: str, new_state: str) -> None:
        flow = self.rt.flows.get(document.flow_id)
        event = event_of(flow, new_state)
        if event is None:
            return
        await self._notify(tx, document, event, flow.state_label(new_state) if flow else new_state,
                           document.last_error if new_state == "error" else None)

    async def on_step_done(self, tx: Tx, document: Any, step: Any, outcome: Any) -> None:
        event = STEP_EVENTS.get(step.family)
        if event is not None:
            await self._notify(tx, document, event, f"{step.label} : fait", outcome.message or None)

    async def _notify(self, tx: Tx, document: Any, event: str, state_label: str, detail: str | None) -> None:
        subs = await tx.fetch(f"{_CHAIN.format(entity='$1')} SELECT s.user_id, s.mode FROM subscriptions s "
                              "JOIN chain ON s.entity_id = chain.id WHERE s.event = $2 AND s.flow_id IN ($3, $4)",
                              document.entity_id, event, document.flow_id, ALL_FLOWS)
        if not subs:
            return
        now = isoformat(self.rt.clock.now())
        for user_id, mode in {(s["user_id"], s["mode"]) for s in subs}:  # one per person and mode
            note_id = uuid.uuid4().hex
            await tx.execute(
                "INSERT INTO notifications (id, user_id, document_id, entity_id, flow_id, event, state_label, "
                "detail, mode, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                note_id, user_id, document.id, document.entity_id, document.flow_id, event, state_label,
                detail, mode, now)
            if mode == "immediate":
                await self.rt.bus.publish(Message(queue=QUEUE, body={"notification": note_id},
                                                  key=f"notification:{note_id}"), tx=tx)

    @staticmethod
    def idle_sql(entity: str) -> str:
        """True (PostgreSQL) when ``on_state_change`` would write nothing for a document of ``entity``."""
        return (f"NOT EXISTS ({_CHAIN.format(entity=entity)} SELECT 1 FROM subscriptions s "
                "JOIN chain ON s.entity_id = chain.id)")

    # ---- sending --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Send the immediate notifications and the queued mails (the digests are a scheduled job: flowbus.jobs)."""
        if self._consumer is None:
            self._consumer = await self.rt.bus.consume(QUEUE, self.handle, prefetch=4)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def handle(self, msg: Message) -> None:
        try:
            if "notification" in msg.body:
                await self._send_notification(msg.body["notification"])
            elif "mail" in msg.body:
                await self._send_outbox(msg.body["mail"])
        except ConfigError as exc:  # no SMTP server: kept unsent (doctor says so), not retried in a loop
            log.warning("notification.not_sent", reason=exc.message, message=msg.body)

    async def _send_notification(self, note_id: str) -> None:
        async with self.rt.store.transaction() as tx:
            note = await tx.fetchrow("SELECT * FROM notifications WHERE id = $1", note_id)
            if note is None or note["sent_at"] is not None:
                return
            user, lines = await self._lines(tx, note["user_id"], [note])
        if user is not None and lines:
            title = lines[0][1]
            await platform_mail.send(self.rt.settings, to=user.email, purpose="notification",
                                     subject=f"[flowbus] {EVENTS[note['event']].split(' (')[0]} : {title}",
                                     body=_body(user.name, lines, self.rt.settings.base_url))
        async with self.rt.store.transaction() as tx:
            await tx.execute("UPDATE notifications SET sent_at = $2 WHERE id = $1", note_id,
                             isoformat(self.rt.clock.now()))
        log.info("notification.sent", notification=note_id, event=note["event"], document=note["document_id"],
                 mailed=bool(lines))

    async def _lines(self, tx: Tx, user_id: str, notes: list[Any]) -> tuple[Any, list[tuple[str, str, str]]]:
        """(the person, [(document id, title, sentence)]) for the notes the person may still read."""
        user = await accounts.get(tx, user_id)
        if not user.active or not user.email:
            return None, []
        who = await accounts.principal(tx, user)
        out = []
        from flowbus.store import repo
        from flowbus.web.admin import document_title
        docs = await repo.documents_by_ids(tx, list({n["document_id"] for n in notes}))
        entities = await repo.entities_by_ids(tx, {n["entity_id"] for n in notes})
        for n in notes:
            doc = docs.get(n["document_id"])
            if doc is None or await access.role_on(tx, who, doc.entity_id, doc.flow_id) is None:
                continue
            flow = self.rt.flows.get(doc.flow_id)
            ent = entities.get(doc.entity_id)
            sentence = (f"{flow.label if flow else doc.flow_id} — {ent.name if ent else doc.entity_id} : "
                        f"{n['state_label']}" + (f" ({n['detail']})" if n["detail"] else "")
                        + f", le {_when(parse_iso(n['created_at']))}")
            out.append((doc.id, document_title(doc, self.rt.flows), sentence))
        return user, out

    async def send_digests(self) -> int:
        """One mail per person with digest notifications not sent yet; returns how many mails were sent."""
        sent = 0
        while True:
            async with self.rt.store.transaction() as tx:
                row = await tx.fetchrow("SELECT user_id FROM notifications WHERE mode = 'digest' AND sent_at IS NULL "
                                        "ORDER BY created_at LIMIT 1")
                if row is None:
                    return sent
                notes = await tx.fetch("SELECT * FROM notifications WHERE user_id = $1 AND mode = 'digest' "
                                       "AND sent_at IS NULL ORDER BY created_at LIMIT 500", row["user_id"])
                user, lines = await self._lines(tx, row["user_id"], notes)
            if user is not None and lines:
                await platform_mail.send(self.rt.settings, to=user.email, purpose="digest",
                                         subject=f"[flowbus] Résumé du jour : {len(lines)} événement"
                                                 f"{'s' if len(lines) > 1 else ''}",
                                         body=_body(user.name, lines, self.rt.settings.base_url))
                sent += 1
            async with self.rt.store.transaction() as tx:
                now = isoformat(self.rt.clock.now())
                for n in notes:
                    await tx.execute("UPDATE notifications SET sent_at = $2 WHERE id = $1", n["id"], now)
            log.info("notification.digest_sent", user=row["user_id"], events=len(lines))

    # ---- signers' mail (outbox) ----------------------------------------------------------------

    async def queue_mail(self, tx: Tx, *, to: str, subject: str, body: str, purpose: str) -> None:
        mail_id = uuid.uuid4().hex
        await tx.execute("INSERT INTO outbox_mails (id, to_addr, subject, body, purpose, created_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6)", mail_id, to, subject, body, purpose,
                         isoformat(self.rt.clock.now()))
        await self.rt.bus.publish(Message(queue=QUEUE, body={"mail": mail_id}, key=f"mail:{mail_id}"), tx=tx)

    async def _send_outbox(self, mail_id: str) -> None:
        async with self.rt.store.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM outbox_mails WHERE id = $1", mail_id)
        if row is None or row["sent_at"] is not None:
            return
        await platform_mail.send(self.rt.settings, to=row["to_addr"], subject=row["subject"], body=row["body"],
                                 purpose=row["purpose"])
        async with self.rt.store.transaction() as tx:
            await tx.execute("UPDATE outbox_mails SET sent_at = $2 WHERE id = $1", mail_id,
                             isoformat(self.rt.clock.now()))


def next_digest(now: datetime) -> datetime:
    """The next DIGEST_HOUR o'clock, Paris time, after ``now``."""
    from flowbus.web.french import PARIS
    local = now.astimezone(PARIS)
    at = datetime.combine(local.date(), time(DIGEST_HOUR), PARIS)
    if at <= local:
        at = datetime.combine(local.date() + timedelta(days=1), time(DIGEST_HOUR), PARIS)
    return at


def _when(value: datetime) -> str:
    from flowbus.web.french import datetime_fr
    return datetime_fr(value)


def _body(name: str, lines: list[tuple[str, str, str]], base_url: str) -> str:
    parts = [f"Bonjour {name},", ""]
    parts.append("Voici ce qui est arrivé aux documents que vous suivez :" if len(lines) > 1
                 else "Un document que vous suivez a changé d'état :")
    for doc_id, title, sentence in lines:
        parts += ["", f"• {title}", f"  {sentence}", f"  {base_url}/admin/documents/{doc_id}"]
    parts += ["", "Vous recevez ce message parce que vous suivez ces documents ; vos abonnements se règlent sur "
              f"{base_url}/compte/notifications."]
    return "\n".join(parts) + "\n"


async def folder_arrived(rt: Any, tx: Tx, *, folder: Any, desk_id: str | None, kind: str) -> int:
    """Tell the members of the desk (with an e-mail address) that a folder waits for them; returns how many."""
    if kind == "external" or desk_id is None:
        return 0  # an external signer gets a personal link instead
    if not platform_mail.configured(rt.settings):
        return 0
    from flowbus.signature import parapheur
    service = install(rt)
    desk = await parapheur.get_desk(tx, desk_id)
    told = 0
    for signer in await parapheur.members(tx, desk_id):
        if not signer.email:
            continue
        await service.queue_mail(
            tx, to=signer.email, purpose="parapheur",
            subject=f"[flowbus] Un dossier vous attend : {folder.title}",
            body=(f"Bonjour {signer.name},\n\nLe dossier « {folder.title} » est arrivé sur le bureau « {desk.name} » "
                  f"et attend votre décision.\n\nOuvrez votre parapheur : {rt.settings.base_url}/parapheur/\n"))
        told += 1
    return told


def install(runtime: Any) -> NotificationService:
    """Attach the service once: its hook joins ``runtime.state_hooks``; ``start()`` in worker processes."""
    service = getattr(runtime, "notifications", None)
    if service is None:
        service = NotificationService(runtime)
        runtime.notifications = service
        runtime.state_hooks.append(service.on_state_change)
        runtime.step_hooks.append(service.on_step_done)
        runtime.on_close(service.stop)
    return service


def subscription_json(s: Subscription) -> str:
    return json.dumps(s.__dict__)
