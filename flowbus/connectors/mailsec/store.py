"""Mailsec tables (migration 010_mailsec.sql): mailings, recipients, extra links, replies.

Every function takes the caller's transaction; nothing here sends mail or renders pages.
Recipient statuses: ``sending`` (claimed by a step run), ``sent``, ``deferred`` (the server
answered 4xx: sent again at the next check), ``undelivered`` (« non délivré »: refused or
bounced), ``read``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.store.base import Tx

STATUS_LABELS = {"sending": "en cours d'envoi", "sent": "envoyé", "deferred": "envoi différé",
                 "undelivered": "non délivré", "read": "lu"}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Mailing:
    id: str
    document_id: str
    entity_id: str
    flow_id: str
    step: str
    instance_id: str
    idempotency_key: str
    subject: str
    message: str
    files: list[dict[str, Any]]  # [{filename, media_type, size, sha256, blob_key, field}]
    allow_reply: bool
    created_at: datetime


@dataclass(frozen=True)
class Recipient:
    id: str
    mailing_id: str
    document_id: str
    position: int
    kind: str
    address: str
    token_hash: str
    password_hash: str | None
    session_hash: str | None
    expires_at: datetime
    status: str
    sent_at: datetime | None = None
    read_at: datetime | None = None
    read_ip: str | None = None
    read_user_agent: str | None = None
    failed_attempts: int = 0
    locked_until: datetime | None = None
    reminders_sent: int = 0
    last_reminder_at: datetime | None = None
    resent: int = 0
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def ts(v: datetime | None) -> str | None:
            return isoformat(v) if v else None
        return {"id": self.id, "address": self.address, "kind": self.kind, "status": self.status,
                "status_label": STATUS_LABELS.get(self.status, self.status), "sent_at": ts(self.sent_at),
                "read_at": ts(self.read_at), "read_ip": self.read_ip, "read_user_agent": self.read_user_agent,
                "expires_at": ts(self.expires_at), "password": self.password_hash is not None,
                "locked_until": ts(self.locked_until), "reminders_sent": self.reminders_sent,
                "resent": self.resent, "error": self.last_error}


def _dt(value: Any) -> datetime | None:
    return parse_iso(value) if value else None


def _mailing(row: dict[str, Any]) -> Mailing:
    return Mailing(row["id"], row["document_id"], row["entity_id"], row["flow_id"], row["step"], row["instance_id"],
                   row["idempotency_key"], row["subject"], row["message"], json.loads(row["files"]),
                   bool(row["allow_reply"]), parse_iso(row["created_at"]))


def _recipient(row: dict[str, Any]) -> Recipient:
    return Recipient(row["id"], row["mailing_id"], row["document_id"], int(row["position"]), row["kind"],
                     row["address"], row["token_hash"], row["password_hash"], row["session_hash"],
                     parse_iso(row["expires_at"]), row["status"], _dt(row["sent_at"]), _dt(row["read_at"]),
                     row["read_ip"], row["read_user_agent"], int(row["failed_attempts"]), _dt(row["locked_until"]),
                     int(row["reminders_sent"]), _dt(row["last_reminder_at"]), int(row["resent"]), row["last_error"])


async def insert_mailing(tx: Tx, m: Mailing) -> None:
    await tx.execute("INSERT INTO mailsec_mailings (id, document_id, entity_id, flow_id, step, instance_id, "
                     "idempotency_key, subject, message, files, allow_reply, created_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                     m.id, m.document_id, m.entity_id, m.flow_id, m.step, m.instance_id, m.idempotency_key,
                     m.subject, m.message, json.dumps(m.files, ensure_ascii=False), int(m.allow_reply),
                     isoformat(m.created_at))


async def mailing_by_key(tx: Tx, idempotency_key: str) -> Mailing | None:
    row = await tx.fetchrow("SELECT * FROM mailsec_mailings WHERE idempotency_key = $1", idempotency_key)
    return _mailing(row) if row else None


async def get_mailing(tx: Tx, mailing_id: str) -> Mailing:
    row = await tx.fetchrow("SELECT * FROM mailsec_mailings WHERE id = $1", mailing_id)
    assert row is not None, mailing_id
    return _mailing(row)


async def mailings_of_document(tx: Tx, document_id: str) -> list[Mailing]:
    rows = await tx.fetch("SELECT * FROM mailsec_mailings WHERE document_id = $1 ORDER BY created_at, id",
                          document_id)
    return [_mailing(r) for r in rows]


async def insert_recipient(tx: Tx, r: Recipient, at: datetime) -> None:
    await tx.execute("INSERT INTO mailsec_recipients (id, mailing_id, document_id, position, kind, address, "
                     "token_hash, password_hash, expires_at, status, last_error, updated_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                     r.id, r.mailing_id, r.document_id, r.position, r.kind, r.address, r.token_hash,
                     r.password_hash, isoformat(r.expires_at), r.status, r.last_error, isoformat(at))


async def recipients_of(tx: Tx, mailing_id: str) -> list[Recipient]:
    rows = await tx.fetch("SELECT * FROM mailsec_recipients WHERE mailing_id = $1 ORDER BY position", mailing_id)
    return [_recipient(r) for r in rows]


async def get_recipient(tx: Tx, recipient_id: str) -> Recipient | None:
    row = await tx.fetchrow("SELECT * FROM mailsec_recipients WHERE id = $1", recipient_id)
    return _recipient(row) if row else None


async def recipient_by_token_hash(tx: Tx, token_hash: str) -> Recipient | None:
    """The recipient a link belongs to (its first link or a reminder/resend link)."""
    row = await tx.fetchrow("SELECT * FROM mailsec_recipients WHERE token_hash = $1", token_hash)
    if row is None:
        row = await tx.fetchrow("SELECT r.* FROM mailsec_tokens t JOIN mailsec_recipients r ON r.id = t.recipient_id "
                                "WHERE t.token_hash = $1", token_hash)
    return _recipient(row) if row else None


async def add_token(tx: Tx, recipient_id: str, token_hash: str, at: datetime) -> None:
    await tx.execute("INSERT INTO mailsec_tokens (token_hash, recipient_id, created_at) VALUES ($1, $2, $3)",
                     token_hash, recipient_id, isoformat(at))


async def set_status(tx: Tx, recipient_id: str, status: str, at: datetime, *, error: str | None = None,
                     sent: bool = False, only_if: tuple[str, ...] | None = None) -> int:
    """Change a recipient's status (``only_if``: only from those statuses; never downgrades ``read``)."""
    allowed = only_if or ("sending", "sent", "deferred", "undelivered")
    marks = ", ".join(f"${i}" for i in range(5, 5 + len(allowed)))
    sent_sql = ", sent_at = $3" if sent else ""
    return await tx.execute(f"UPDATE mailsec_recipients SET status = $2, updated_at = $3, last_error = $4{sent_sql} "
                            f"WHERE id = $1 AND status IN ({marks})", recipient_id, status, isoformat(at), error,
                            *allowed)


async def replace_first_token(tx: Tx, recipient_id: str, token_hash: str, at: datetime) -> None:
    """A link that was never delivered is replaced (its clear token is gone with the failed attempt)."""
    await tx.execute("UPDATE mailsec_recipients SET token_hash = $2, updated_at = $3 WHERE id = $1",
                     recipient_id, token_hash, isoformat(at))


async def mark_read(tx: Tx, recipient_id: str, at: datetime, ip: str | None, user_agent: str | None) -> bool:
    """Record the first opening; False if the recipient had already read."""
    changed = await tx.execute("UPDATE mailsec_recipients SET status = 'read', read_at = $2, read_ip = $3, "
                               "read_user_agent = $4, last_error = NULL, updated_at = $2 "
                               "WHERE id = $1 AND read_at IS NULL", recipient_id, isoformat(at), ip,
                               (user_agent or "")[:500])
    return bool(changed)


async def password_failed(tx: Tx, recipient_id: str, failed_attempts: int, locked_until: datetime | None,
                          at: datetime) -> None:
    await tx.execute("UPDATE mailsec_recipients SET failed_attempts = $2, locked_until = $3, updated_at = $4 "
                     "WHERE id = $1", recipient_id, failed_attempts,
                     isoformat(locked_until) if locked_until else None, isoformat(at))


async def password_ok(tx: Tx, recipient_id: str, session_hash: str, at: datetime) -> None:
    await tx.execute("UPDATE mailsec_recipients SET failed_attempts = 0, locked_until = NULL, session_hash = $2, "
                     "updated_at = $3 WHERE id = $1", recipient_id, session_hash, isoformat(at))


async def reminded(tx: Tx, recipient_id: str, at: datetime) -> None:
    await tx.execute("UPDATE mailsec_recipients SET reminders_sent = reminders_sent + 1, last_reminder_at = $2, "
                     "updated_at = $2 WHERE id = $1", recipient_id, isoformat(at))


async def resent(tx: Tx, recipient_id: str, at: datetime, *, ok: bool, error: str | None) -> None:
    status_sql = "status = CASE WHEN status = 'read' THEN 'read' ELSE 'sent' END, sent_at = $2, last_error = $3" \
        if ok else "status = CASE WHEN status = 'read' THEN 'read' ELSE 'undelivered' END, last_error = $3"
    await tx.execute(f"UPDATE mailsec_recipients SET resent = resent + 1, {status_sql}, updated_at = $2 "
                     "WHERE id = $1", recipient_id, isoformat(at), error)


async def insert_reply(tx: Tx, *, recipient: Recipient, text: str, files: list[dict[str, Any]], at: datetime) -> str:
    reply_id = new_id()
    await tx.execute("INSERT INTO mailsec_replies (id, recipient_id, mailing_id, document_id, text, files, attached, "
                     "created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)", reply_id, recipient.id,
                     recipient.mailing_id, recipient.document_id, text, json.dumps(files, ensure_ascii=False),
                     isoformat(at))
    return reply_id


async def replies_of(tx: Tx, mailing_id: str, *, unattached_only: bool = False) -> list[dict[str, Any]]:
    extra = " AND attached = 0" if unattached_only else ""
    rows = await tx.fetch(f"SELECT p.*, r.address FROM mailsec_replies p JOIN mailsec_recipients r "
                          f"ON r.id = p.recipient_id WHERE p.mailing_id = $1{extra} ORDER BY p.created_at, p.id",
                          mailing_id)
    for row in rows:
        row["files"] = json.loads(row["files"])
    return rows


async def mark_replies_attached(tx: Tx, reply_ids: list[str]) -> None:
    for reply_id in reply_ids:
        await tx.execute("UPDATE mailsec_replies SET attached = 1 WHERE id = $1", reply_id)
