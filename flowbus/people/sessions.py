"""Server-side web sessions: a random token in an HttpOnly cookie, SHA-256 at rest, idle and absolute expiry, a CSRF token each."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowbus.clock import isoformat, parse_iso
from flowbus.people.accounts import User, user_from_row
from flowbus.store.base import Tx

COOKIE = "flowbus_session"
IDLE = timedelta(hours=2)
ABSOLUTE = timedelta(hours=12)
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Session:
    token_hash: str
    user: User
    csrf: str
    method: str  # password, link, oidc, cas
    created_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def open_session(tx: Tx, user: User, *, method: str, ip: str, now: datetime) -> tuple[str, str]:
    """A new session for ``user``: (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    await tx.execute("DELETE FROM web_sessions WHERE user_id = $1 AND expires_at <= $2", user.id, isoformat(now))
    await tx.execute("INSERT INTO web_sessions (id_hash, user_id, csrf, method, created_at, last_seen_at, expires_at, "
                     "ip) VALUES ($1, $2, $3, $4, $5, $5, $6, $7)", token_hash(token), user.id, csrf, method,
                     isoformat(now), isoformat(now + ABSOLUTE), ip[:64])
    return token, csrf


async def load(tx: Tx, token: str, now: datetime) -> Session | None:
    """The live session of ``token`` (its account active), or None; refreshes its idle clock now and then."""
    if not token:
        return None
    row = await tx.fetchrow("SELECT s.id_hash AS s_id, s.csrf AS s_csrf, s.method AS s_method, "
                            "s.created_at AS s_created, s.last_seen_at AS s_seen, s.expires_at AS s_expires, u.* "
                            "FROM web_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
                            token_hash(token))
    if row is None:
        return None
    seen = parse_iso(row["s_seen"])
    if not row["active"] or parse_iso(row["s_expires"]) <= now or seen + IDLE <= now:
        await tx.execute("DELETE FROM web_sessions WHERE id_hash = $1", row["s_id"])
        return None
    if now - seen >= _TOUCH_EVERY:
        await tx.execute("UPDATE web_sessions SET last_seen_at = $2 WHERE id_hash = $1", row["s_id"], isoformat(now))
    return Session(row["s_id"], user_from_row(row), row["s_csrf"], row["s_method"], parse_iso(row["s_created"]))


async def end(tx: Tx, token: str) -> None:
    await tx.execute("DELETE FROM web_sessions WHERE id_hash = $1", token_hash(token))


async def end_others(tx: Tx, user_id: str, keep_hash: str | None) -> None:
    """End every session of the account but ``keep_hash`` (after a password change)."""
    await tx.execute("DELETE FROM web_sessions WHERE user_id = $1 AND id_hash <> $2", user_id, keep_hash or "")


async def purge_expired(tx: Tx, now: datetime) -> int:
    return await tx.execute("DELETE FROM web_sessions WHERE expires_at <= $1", isoformat(now))
