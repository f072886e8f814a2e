"""Single-use links: first sign-in, password reset, invitation — random tokens, SHA-256 at rest, short-lived."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flowbus.clock import isoformat
from flowbus.store.base import Tx

LIFETIMES = {"first": timedelta(hours=24), "reset": timedelta(hours=1), "invite": timedelta(days=7)}
PATH = "/mot-de-passe/nouveau/"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def issue(tx: Tx, user_id: str, purpose: str, now: datetime) -> str:
    """A new link token for ``user_id``; earlier unused links of the same purpose stop working."""
    await tx.execute("UPDATE user_links SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
                     user_id, purpose, isoformat(now))
    token = secrets.token_urlsafe(32)
    await tx.execute("INSERT INTO user_links (token_hash, user_id, purpose, created_at, expires_at) "
                     "VALUES ($1, $2, $3, $4, $5)", _hash(token), user_id, purpose, isoformat(now),
                     isoformat(now + LIFETIMES[purpose]))
    return token


async def peek(tx: Tx, token: str, now: datetime) -> dict | None:
    """The link's row if it is unused and not expired (the page that asks for the new password)."""
    row = await tx.fetchrow("SELECT * FROM user_links WHERE token_hash = $1", _hash(token))
    if row is None or row["used_at"] is not None or row["expires_at"] <= isoformat(now):
        return None
    return row


async def consume(tx: Tx, token: str, now: datetime) -> dict | None:
    """Use the link once: the row, or None when it is unknown, used or expired."""
    row = await peek(tx, token, now)
    if row is None:
        return None
    used = await tx.execute("UPDATE user_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
                            _hash(token), isoformat(now))
    return row if used else None


def url(base_url: str, token: str) -> str:
    return f"{base_url}{PATH}{token}"
