"""Step family ``mailsec`` (kind ``smtp``): send personal links, wait for reads, remind, collect replies.

Instance settings: ``host``, ``port``, ``username``, ``password`` (secret), ``starttls``
(true/false/auto), ``use_tls``, ``validate_certs``, ``ca_file``, ``from_address``, ``from_name``,
``public_base_url`` (links: ``<public_base_url>/mail/<token>``, default the server's public URL),
``link_ttl`` (``30d``), ``password_attempts`` (5) and ``password_lock_for`` (``15m``): wrong passwords
before a link is locked and for how long, ``bounce_address`` (VERP envelope sender), ``bounce_maildir`` (a Maildir the
MTA delivers bounces to, read at each check), ``max_connections``.

Step params::

    to: [agent_email, drh@mairie.fr]   # an item with "@" is an address, otherwise a field name
    cc: [], bcc: []
    files: [bulletin]                  # file fields sent (default: every file of the document)
    subject / body_text / body_html / template / page_message   # see templates.py
    password: generate                 # one random password per recipient, sent in a separate message
    password_field: code_acces         # or: the password is this field's value (not sent)
    link_ttl: 30d
    wait_for_read: true                # wait until every delivered recipient has read
    check_every: 15m                   # how often reads are looked at while waiting
    remind_every: 3d                   # reminder (a fresh link) to those who have not read
    max_reminders: 3
    deadline: 15d                      # then outcome ``unread`` (``on_deadline: done`` to finish as done)
    allow_reply: true                  # the recipient may answer (text and files)
    reply_field: mailsec_reponses      # replies come back as files of this field
    receipts_field: mailsec_accuses    # receipts file (CSV, or JSON with receipts_format: json)

Idempotency: a mailing is keyed by ``ctx.idempotency_key``; its recipients are written (status
``sending``) before the SMTP transactions, so a redelivered start never sends a second time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import structlog

from flowbus import addressbook, journal
from flowbus.clock import isoformat
from flowbus.connectors.base import BaseConnector, NewFile, Outcome, StepContext
from flowbus.connectors.mailsec import store, tokens
from flowbus.connectors.mailsec.send import Delivery, OutgoingMail, SmtpConfig, SmtpPool
from flowbus.connectors.mailsec.templates import REMINDER_PREFIX, MessageTemplates
from flowbus.errors import ConfigError, Conflict, NotFound, PermanentError, ValidationError
from flowbus.models import Document

log = structlog.get_logger(__name__)
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
_SPLIT = re.compile(r"[,;\s]+")
DEFAULT_PAGE_MESSAGE = "{{ sender.name or 'Votre administration' }} vous a adressé ce document par courrier sécurisé."
UNCERTAIN = "envoi interrompu : réception incertaine (renvoyer si besoin)"


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "oui")
    return bool(value)


def _list(value: Any, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"mailsec step param {name!r} must be a list of addresses or field names", field=name)


def _duration(value: Any, name: str) -> timedelta | None:
    return None if value in (None, "", 0) else tokens.parse_duration(value, field=name)


@dataclass(frozen=True)
class MailsecParams:
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    files: tuple[str, ...] | None
    password: str | None
    password_field: str | None
    link_ttl: timedelta | None
    wait_for_read: bool
    check_every: timedelta
    retry_every: timedelta
    remind_every: timedelta | None
    max_reminders: int
    deadline: timedelta | None
    on_deadline: str
    allow_reply: bool
    reply_field: str
    receipts_field: str
    receipts_format: str
    page_message: str

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> MailsecParams:
        password = params.get("password")
        if password not in (None, "", "generate"):
            raise ConfigError("mailsec step param 'password' accepts only 'generate' (a random password per "
                              "recipient); a fixed password goes in a field named by 'password_field'",
                              field="password")
        on_deadline = str(params.get("on_deadline") or "unread")
        if on_deadline not in ("unread", "done"):
            raise ConfigError("mailsec step param 'on_deadline' must be 'unread' or 'done'", field="on_deadline")
        fmt = str(params.get("receipts_format") or "csv")
        if fmt not in ("csv", "json"):
            raise ConfigError("mailsec step param 'receipts_format' must be 'csv' or 'json'", field="receipts_format")
        files = params.get("files")
        wait = _bool(params.get("wait_for_read"), False)
        return cls(to=_list(params.get("to"), "to"), cc=_list(params.get("cc"), "cc"),
                   bcc=_list(params.get("bcc"), "bcc"),
                   files=None if files is None else _list(files, "files"),
                   password=password or None, password_field=params.get("password_field") or None,
                   link_ttl=_duration(params.get("link_ttl"), "link_ttl"), wait_for_read=wait,
                   check_every=_duration(params.get("check_every"), "check_every") or timedelta(minutes=15),
                   retry_every=_duration(params.get("retry_every"), "retry_every") or timedelta(minutes=10),
                   remind_every=_duration(params.get("remind_every"), "remind_every"),
                   max_reminders=int(params.get("max_reminders", 3)),
                   deadline=_duration(params.get("deadline"), "deadline"), on_deadline=on_deadline,
                   allow_reply=_bool(params.get("allow_reply"), wait),
                   reply_field=str(params.get("reply_field") or "mailsec_reponses"),
                   receipts_field=str(params.get("receipts_field") or "mailsec_accuses"),
                   receipts_format=fmt, page_message=str(params.get("page_message") or DEFAULT_PAGE_MESSAGE))


def _recipient_values(params: MailsecParams, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) for to/cc/bcc: addresses and ``groupe:<nom>`` entries, fields read."""
    out: list[tuple[str, str]] = []
    for kind, items in (("to", params.to), ("cc", params.cc), ("bcc", params.bcc)):
        for item in items:
            if "@" in item or item.lower().startswith(addressbook.GROUP_PREFIX):
                parts: list[str] = [item]
            else:
                raw = fields.get(item)
                if raw in (None, ""):
                    continue
                parts = [str(v) for v in raw] if isinstance(raw, list) else re.split(r"[,;\n]+", str(raw))
            for part in parts:
                part = part.strip()
                if part.lower().startswith(addressbook.GROUP_PREFIX):
                    out.append((kind, part))
                else:
                    out += [(kind, p) for p in _SPLIT.split(part) if p]
    return out


def recipient_addresses(params: MailsecParams, fields: Mapping[str, Any],
                        groups: Mapping[str, list[str]] | None = None) -> list[tuple[str, str]]:
    """(kind, address) for to/cc/bcc, fields and address-book groups (``groups``: name → addresses)
    expanded, duplicates removed (first kind wins)."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for kind, value in _recipient_values(params, fields):
        if value.lower().startswith(addressbook.GROUP_PREFIX):
            addresses = (groups or {}).get(value[len(addressbook.GROUP_PREFIX):].strip(), [])
        else:
            addresses = [value]
        for address in addresses:
            address = address.strip()
            if address and address.lower() not in seen:
                seen.add(address.lower())
                out.append((kind, address))
    return out


class GroupCommit:
    """Runs the small writes of concurrent step runs in one shared transaction (group commit).

    ``await run(fn)`` returns once ``fn(tx)`` is committed, so a step still records its claim
    before sending and its results before returning; what changes is that 50 concurrent payslips
    take the store's write lock once instead of 50 times.  If the shared transaction fails, each
    write is retried alone, so one faulty write fails only its own step.
    """

    def __init__(self, runtime: Any, max_batch: int = 256) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, fn: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the step runs resumed in this loop iteration join the batch
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                results = []
                async with self.runtime.store.transaction() as tx:
                    for fn, _ in batch:
                        results.append(await fn(tx))
            except Exception:  # noqa: BLE001 - retried one by one below
                for fn, fut in batch:
                    try:
                        async with self.runtime.store.transaction() as tx:
                            result = await fn(tx)
                    except Exception as exc:  # noqa: BLE001 - handed to that step run
                        if not fut.done():
                            fut.set_exception(exc)
                    else:
                        if not fut.done():
                            fut.set_result(result)
                continue
            except BaseException as exc:  # cancelled: do not leave step runs waiting forever
                for _, fut in batch + self._pending:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("write cancelled"))
                raise
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


@dataclass
class _ToSend:
    recipient: store.Recipient
    token: str
    password: str | None = None
    reminder: bool = False


class MailsecConnector(BaseConnector):
    family: ClassVar[str] = "mailsec"
    kind: ClassVar[str] = "smtp"
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password", "bounce_password"})

    def __init__(self, instance: Any, runtime: Any) -> None:
        super().__init__(instance, runtime)
        self.config = SmtpConfig.from_settings(instance.settings)
        self.pool = SmtpPool(self.config, outbound=runtime.outbound)
        self.link_ttl = tokens.parse_duration(instance.settings.get("link_ttl") or "30d", field="link_ttl")
        self._templates: dict[tuple[str, str], MessageTemplates] = {}
        self._page_templates: dict[str, MessageTemplates] = {}
        self.writes = GroupCommit(runtime)

    # ---- helpers -----------------------------------------------------------------------------

    def base_url(self) -> str:
        return str(self.instance.settings.get("public_base_url") or self.runtime.settings.base_url).rstrip("/")

    def link(self, token: str) -> str:
        return f"{self.base_url()}/mail/{token}"

    def templates(self, flow_id: str, step_id: str, params: Mapping[str, Any]) -> MessageTemplates:
        key = (flow_id, step_id)
        tpl = self._templates.get(key)
        if tpl is None:
            tpl = MessageTemplates.for_step(params, flow_id=flow_id, config_dir=Path(self.runtime.settings.config_dir))
            self._templates[key] = tpl
        return tpl

    def _context(self, doc: Document, r: store.Recipient, token: str) -> dict[str, Any]:
        return {"fields": doc.fields, "document": {"id": doc.id, "flow": doc.flow_id, "entity": doc.entity_id},
                "link": self.link(token), "expires_at": r.expires_at,
                "recipient": {"address": r.address, "kind": r.kind},
                "sender": {"name": self.config.from_name, "address": self.config.from_address},
                "password_required": r.password_hash is not None}

    async def _deliver(self, doc: Document, tpl: MessageTemplates, items: list[_ToSend]) -> list[Delivery]:
        """Send the messages, then record every result in one transaction."""
        if not items:
            return []
        mails: list[OutgoingMail] = []
        for item in items:
            rendered = tpl.render(self._context(doc, item.recipient, item.token))
            subject = REMINDER_PREFIX + rendered.subject if item.reminder else rendered.subject
            mails.append(OutgoingMail(item.recipient.address, subject, rendered.text, rendered.html,
                                      kind=item.recipient.kind, recipient_id=item.recipient.id))
        # the password goes in its own message, sent alongside the link (on another pooled connection)
        password_mails = [OutgoingMail(i.recipient.address, *_password_parts(tpl, self._context(
            doc, i.recipient, i.token), i.password), kind=i.recipient.kind, recipient_id=i.recipient.id)
            for i in items if i.password]
        deliveries = (await self.pool.send_many(mails + password_mails))[:len(mails)]
        now = self.runtime.clock.now()

        async def record(tx: Any) -> None:
            for item, d in zip(items, deliveries, strict=True):
                rid = item.recipient.id
                if item.reminder:
                    if d.ok:
                        await store.reminded(tx, rid, now)
                    elif d.refused:
                        await store.set_status(tx, rid, "undelivered", now, error=_error(d), only_if=("sent",))
                elif d.ok:
                    await store.set_status(tx, rid, "sent", now, sent=True)
                elif d.refused:
                    await store.set_status(tx, rid, "undelivered", now, error=_error(d))
                else:
                    await store.set_status(tx, rid, "deferred", now, error=_error(d))

        await self.writes.run(record)
        refused = sum(1 for d in deliveries if d.refused)
        log.info("mailsec.sent", document_id=doc.id, messages=len(items), refused=refused,
                 deferred=sum(1 for d in deliveries if d.temporary))
        return deliveries

    # ---- start -------------------------------------------------------------------------------

    async def start(self, ctx: StepContext) -> Outcome:
        params = MailsecParams.parse(ctx.params)
        doc = ctx.document
        tpl = self.templates(ctx.flow_id, ctx.step_id, ctx.params)
        now = self.runtime.clock.now()
        # tokens and password hashes are computed before the transaction, which stays short
        fresh, recipients, to_send = await self._prepare(ctx, params, tpl, now)

        async def claim(tx: Any) -> store.Mailing:
            mailing = await store.mailing_by_key(tx, ctx.idempotency_key)
            if mailing is None:
                await store.insert_mailing(tx, fresh)
                for r in recipients:
                    await store.insert_recipient(tx, r, now)
                return fresh
            # a redelivered start: what was claimed may have been sent; never send it twice
            for r in await store.recipients_of(tx, mailing.id):
                if r.status == "sending":
                    await store.set_status(tx, r.id, "sent", now, error=UNCERTAIN, sent=True)
            return mailing

        mailing = await self.writes.run(claim)
        if mailing is not fresh:
            to_send = []
        deliveries = await self._deliver(doc, tpl, to_send)
        if mailing is fresh:
            # a fresh mailing: its statuses are known without reading them back
            status = {r.id: r.status for r in recipients}
            for item, d in zip(to_send, deliveries, strict=True):
                status[item.recipient.id] = "sent" if d.ok else "undelivered" if d.refused else "deferred"
            known = [replace(r, status=status[r.id], sent_at=now if status[r.id] == "sent" else None)
                     for r in recipients]
            return await self._outcome(ctx, params, mailing, started=True, recipients=known)
        return await self._outcome(ctx, params, mailing, started=True)

    async def _prepare(self, ctx: StepContext, params: MailsecParams, tpl: MessageTemplates,
                       now: datetime) -> tuple[store.Mailing, list[store.Recipient], list[_ToSend]]:
        doc = ctx.document
        wanted = addressbook.group_names([v for _k, v in _recipient_values(params, doc.fields)])
        groups: dict[str, list[str]] = {}
        if wanted:
            async with ctx.runtime.store.transaction() as tx:
                try:
                    groups = await addressbook.expand(tx, doc.entity_id, wanted)
                except ValidationError as exc:
                    raise PermanentError(exc.message, field="to",
                                         hint="add the group to the collectivité's address book (/admin/carnet)") \
                        from None
        addresses = recipient_addresses(params, doc.fields, groups)
        if not addresses:
            raise PermanentError("the mailsec step has no recipient: the fields it names are empty",
                                 field=(params.to + params.cc + params.bcc or ("to",))[0],
                                 hint="fill the recipient field(s) of the document, or set 'to' in the step params")
        if params.files is None:
            refs = [f for f in doc.files if f.field not in (params.reply_field, params.receipts_field)]
        else:
            refs = [f for name in params.files for f in doc.files_of(name)]
        files = [{"field": f.field, "filename": f.filename, "media_type": f.media_type, "size": f.size,
                  "sha256": f.sha256, "blob_key": f.blob_key} for f in refs]
        fixed_password = None
        if params.password_field:
            fixed_password = doc.fields.get(params.password_field)
            if not fixed_password:
                raise PermanentError(f"the link password field {params.password_field!r} is empty",
                                     field=params.password_field)
        page_ctx = {"fields": doc.fields, "document": {"id": doc.id, "flow": doc.flow_id, "entity": doc.entity_id},
                    "sender": {"name": self.config.from_name, "address": self.config.from_address}}
        page_tpl = self._page_templates.get(params.page_message)
        if page_tpl is None:
            page_tpl = self._page_templates[params.page_message] = MessageTemplates(
                params.page_message, "", None, origin="page_message")
        page_message = page_tpl.render_subject({**page_ctx, "link": "", "expires_at": now, "recipient": {},
                                                "password_required": False})
        expires = now + (params.link_ttl or self.link_ttl)
        subject = tpl.render_subject({**page_ctx, "link": "", "expires_at": expires,
                                      "recipient": {"address": "", "kind": "to"}, "password_required": False})
        mailing = store.Mailing(store.new_id(), doc.id, doc.entity_id, ctx.flow_id, ctx.step_id, self.instance.id,
                                ctx.idempotency_key, subject, page_message, files, params.allow_reply, now)
        plan: list[tuple[str, str, str, str | None]] = []
        for kind, address in addresses:
            password = tokens.new_password() if params.password == "generate" else fixed_password
            plan.append((kind, address, tokens.new_token(), str(password) if password else None))
        generated = params.password == "generate"
        hashes = await asyncio.to_thread(lambda: [tokens.hash_password(p, generated=generated) if p else None
                                                  for _, _, _, p in plan]) if any(p for *_, p in plan) \
            else [None] * len(plan)
        recipients: list[store.Recipient] = []
        to_send: list[_ToSend] = []
        for position, ((kind, address, token, password), pw_hash) in enumerate(zip(plan, hashes, strict=True)):
            valid = bool(_ADDRESS.match(address))
            r = store.Recipient(store.new_id(), mailing.id, doc.id, position, kind, address, tokens.hash_token(token),
                                pw_hash, None, expires, "sending" if valid else "undelivered",
                                last_error=None if valid else "adresse électronique invalide")
            recipients.append(r)
            if valid:
                to_send.append(_ToSend(r, token, password if generated else None))
        return mailing, recipients, to_send

    # ---- check -------------------------------------------------------------------------------

    async def check(self, ctx: StepContext) -> Outcome:
        params = MailsecParams.parse(ctx.params)
        async with self.runtime.store.transaction() as tx:
            mailing = await store.mailing_by_key(tx, ctx.idempotency_key)
        if mailing is None:
            raise PermanentError("the mailsec step has no mailing recorded for this attempt", field="step",
                                 hint="retry the step: it sends the messages again")
        await self.read_bounces()
        tpl = self.templates(ctx.flow_id, ctx.step_id, ctx.params)
        now = self.runtime.clock.now()
        to_send: list[_ToSend] = []
        async with self.runtime.store.transaction() as tx:
            for r in await store.recipients_of(tx, mailing.id):
                if r.status == "deferred":  # the earlier link never reached the server: a fresh one
                    token = tokens.new_token()
                    await store.replace_first_token(tx, r.id, tokens.hash_token(token), now)
                    to_send.append(_ToSend(r, token))
                elif (params.wait_for_read and params.remind_every and r.status == "sent"
                      and r.reminders_sent < params.max_reminders and r.expires_at > now
                      and (r.last_reminder_at or r.sent_at or now) + params.remind_every <= now):
                    token = tokens.new_token()
                    await store.add_token(tx, r.id, tokens.hash_token(token), now)
                    to_send.append(_ToSend(r, token, reminder=True))
        await self._deliver(ctx.document, tpl, to_send)
        return await self._outcome(ctx, params, mailing, started=False)

    # ---- outcome -----------------------------------------------------------------------------

    async def _outcome(self, ctx: StepContext, params: MailsecParams, mailing: store.Mailing, *,
                       started: bool, recipients: list[store.Recipient] | None = None) -> Outcome:
        replies: list[dict[str, Any]] = []
        if recipients is None:
            async with self.runtime.store.transaction() as tx:
                recipients = await store.recipients_of(tx, mailing.id)
                replies = await store.replies_of(tx, mailing.id) if mailing.allow_reply else []
        data: dict[str, Any] = {"mailing": mailing.id, "replies": list(ctx.data.get("replies", []))}
        new_files = await self._reply_files(ctx, params, replies, data)
        counts = {s: sum(1 for r in recipients if r.status == s) for s in store.STATUS_LABELS}
        fields = {"mailsec_sent": counts["sent"] + counts["read"], "mailsec_read": counts["read"],
                  "mailsec_unread": counts["sent"] + counts["deferred"] + counts["sending"],
                  "mailsec_undelivered": counts["undelivered"]}
        now = self.runtime.clock.now()
        message = None
        if started:
            message = f"Courrier sécurisé envoyé à {fields['mailsec_sent']} destinataire(s)"
            if counts["undelivered"]:
                message += f", {counts['undelivered']} non délivré(s)"
        unread_waiting = params.wait_for_read and counts["sent"] > 0
        if counts["deferred"] or counts["sending"] or unread_waiting:
            past_deadline = params.deadline is not None and now - ctx.started_at >= params.deadline
            if not past_deadline:
                check_in = params.retry_every if counts["deferred"] else params.check_every
                if params.remind_every and unread_waiting:
                    check_in = min(check_in, params.remind_every)
                return Outcome.waiting(check_in, data=data, files=new_files, message=message)
            name = "unread" if params.on_deadline == "unread" and (counts["sent"] or counts["deferred"]) else "done"
            receipts = await self._receipts(ctx, params, recipients)
            return Outcome.done(name=name, fields=fields, files=[*new_files, receipts], data=data,
                                message=f"Délai de lecture dépassé : {fields['mailsec_unread']} destinataire(s) "
                                        "n'ont pas lu le document")
        files = list(new_files)
        if params.wait_for_read or ctx.params.get("receipts"):
            files.append(await self._receipts(ctx, params, recipients))
        if not message:
            message = f"Courrier sécurisé lu par {fields['mailsec_read']} destinataire(s)"
        return Outcome.done(fields=fields, files=files, data=data, message=message)

    async def _reply_files(self, ctx: StepContext, params: MailsecParams, replies: list[dict[str, Any]],
                           data: dict[str, Any]) -> list[NewFile]:
        done = set(data["replies"])
        out: list[NewFile] = []
        for reply in replies:
            if reply["id"] in done:
                continue
            stamp = reply["created_at"][:19].replace(":", "-")
            who = re.sub(r"[^A-Za-z0-9._-]+", "_", reply["address"])
            text = (f"Réponse de {reply['address']} reçue le {reply['created_at']}\n\n{reply['text']}\n")
            out.append(await ctx.new_file(params.reply_field, f"reponse-{who}-{stamp}.txt", "text/plain",
                                          text.encode("utf-8"), append=True))
            for f in reply["files"]:
                from flowbus.models import BlobRef
                out.append(NewFile(params.reply_field, f["filename"], f["media_type"],
                                   BlobRef(f["blob_key"], f["sha256"], int(f["size"])), append=True))
            data["replies"].append(reply["id"])
        return out

    async def _receipts(self, ctx: StepContext, params: MailsecParams, recipients: list[store.Recipient]) -> NewFile:
        rows = [r.to_json() for r in recipients]
        if params.receipts_format == "json":
            body = json.dumps({"document": ctx.document.id, "recipients": rows}, ensure_ascii=False, indent=2)
            return await ctx.new_file(params.receipts_field, "accuses-de-lecture.json", "application/json",
                                      body.encode("utf-8"))
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow(["adresse", "type", "statut", "envoyé le", "lu le", "adresse IP", "navigateur", "rappels",
                         "erreur"])
        for r in rows:
            writer.writerow([r["address"], r["kind"], r["status_label"], r["sent_at"] or "", r["read_at"] or "",
                             r["read_ip"] or "", r["read_user_agent"] or "", r["reminders_sent"], r["error"] or ""])
        return await ctx.new_file(params.receipts_field, "accuses-de-lecture.csv", "text/csv",
                                  out.getvalue().encode("utf-8-sig"))

    # ---- bounces and resend ------------------------------------------------------------------

    async def read_bounces(self) -> int:
        """Mark « non délivré » the recipients named by the bounces in ``bounce_maildir``; return how many."""
        folder = self.instance.settings.get("bounce_maildir")
        if not folder:
            return 0
        from flowbus.connectors.mailsec.bounces import read_maildir
        found = read_maildir(Path(folder), self.config.bounce_address)
        now = self.runtime.clock.now()
        marked = 0
        async with self.runtime.store.transaction() as tx:
            for recipient_id, reason in found:
                marked += await store.set_status(tx, recipient_id, "undelivered", now, error=reason,
                                                 only_if=("sent", "sending", "deferred"))
        return marked

    async def resend(self, recipient_id: str, *, document_id: str, actor: str) -> store.Recipient:
        """Send a fresh link to one recipient (administrator's « renvoyer »); journaled."""
        now = self.runtime.clock.now()
        async with self.runtime.store.transaction() as tx:
            r = await store.get_recipient(tx, recipient_id)
            if r is None or r.document_id != document_id:
                raise NotFound(f"document {document_id} has no secure-mail recipient {recipient_id!r}",
                               field="recipient_id")
            mailing = await store.get_mailing(tx, r.mailing_id)
            from flowbus.store import repo
            doc = await repo.get_document(tx, document_id)
        if r.status == "sending":
            raise Conflict("this recipient's message is being sent right now", field="recipient_id",
                           hint="wait a moment and look at its status again")
        params = self.runtime.flow(mailing.flow_id).step(mailing.step).params
        tpl = self.templates(mailing.flow_id, mailing.step, params)
        token = tokens.new_token()
        expires = max(r.expires_at, now + (MailsecParams.parse(params).link_ttl or self.link_ttl))
        rendered = tpl.render(self._context(doc, r, token) | {"expires_at": expires})
        [delivery] = await self.pool.send_many([OutgoingMail(r.address, rendered.subject, rendered.text,
                                                             rendered.html, kind=r.kind, recipient_id=r.id)])
        async with self.runtime.store.transaction() as tx:
            await store.add_token(tx, r.id, tokens.hash_token(token), now)
            await tx.execute("UPDATE mailsec_recipients SET expires_at = $2 WHERE id = $1", r.id, isoformat(expires))
            await store.resent(tx, r.id, now, ok=delivery.ok, error=None if delivery.ok else _error(delivery))
            await journal.append(tx, entity_id=doc.entity_id, actor=actor, kind="mailsec.resent", at=now,
                                 document_id=doc.id, data={"recipient": r.address, "recipient_id": r.id,
                                                           "delivered": delivery.ok,
                                                           "error": None if delivery.ok else _error(delivery)})
            updated = await store.get_recipient(tx, r.id)
        assert updated is not None
        return updated

    async def close(self) -> None:
        await self.pool.close()


def _error(d: Delivery) -> str:
    return f"{d.code} {d.message}".strip() if d.code else d.message


def _password_parts(tpl: MessageTemplates, context: dict[str, Any], password: str) -> tuple[str, str]:
    rendered = tpl.render_password(context, password)
    return rendered.subject, rendered.text
