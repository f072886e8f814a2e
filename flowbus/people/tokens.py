"""Personal API tokens (Pastell 4's « jetons d'authentification »): ``Authorization: Bearer`` acting as one person.

A token acts as its owner with the grants they hold at the time of each call (a right taken away
is taken from the token too; a deactivated account's tokens stop working).  It is shown once at
creation; only its SHA-256 is stored (256 bits of entropy: no slow hash needed, as for API keys).
A person creates tokens for themselves; an administrator for someone whose every grant lies in
collectivités they administer (a token for anyone else would carry rights the administrator does
not have); the platform administrator for anyone.  A wrong token counts against its source address
and the token id it names (``flowbus.people.limits``).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.errors import NotFound, Unauthorized, ValidationError
from flowbus.people import access, accounts, audit, limits
from flowbus.people.access import Principal
from flowbus.people.accounts import User
from flowbus.store.base import Tx

PREFIX = "fbt_"


@dataclass(frozen=True)
class Token:
    id: str
    user_id: str
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created_by": self.created_by,
                "created_at": isoformat(self.created_at),
                "expires_at": isoformat(self.expires_at) if self.expires_at else None,
                "revoked_at": isoformat(self.revoked_at) if self.revoked_at else None}


def _token(row: dict[str, Any]) -> Token:
    return Token(row["id"], row["user_id"], row["name"], row["created_by"], parse_iso(row["created_at"]),
                 parse_iso(row["expires_at"]) if row["expires_at"] else None,
                 parse_iso(row["revoked_at"]) if row["revoked_at"] else None)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def token_identity(secret: str) -> str | None:
    """The token id a presented secret names (``fbt_<id>_…``), counted as the identity tried."""
    parts = secret.split("_", 2)
    return f"token:{parts[1][:32]}" if len(parts) == 3 and parts[0] + "_" == PREFIX and parts[1] else None


async def may_manage(tx: Tx, who: Principal, user: User) -> bool:
    """Whether ``who`` may create or revoke ``user``'s tokens (see the module docstring)."""
    if who.kind == "user" and who.id == user.id:
        return True
    if who.is_platform_admin:
        return True
    grants = await accounts.grants_of(tx, user.id)
    if not grants:
        return False
    for g in grants:
        if g.entity_id == access.EVERY_ENTITY:
            return False
        if not access.has(await access.role_on(tx, who, g.entity_id), "admin"):
            return False
    return True


async def create(tx: Tx, user: User, *, name: Any, actor: str, now: datetime,
                 expires_at: datetime | None = None) -> tuple[Token, str]:
    """A new token of ``user``; returns it and its secret (shown once, never stored nor journaled)."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        raise ValidationError("Donnez au jeton un nom de 1 à 100 caractères (l'application qui l'utilise).",
                              field="name")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("La date d'expiration du jeton doit être dans le futur.", field="expires_at")
    token_id = uuid.uuid4().hex[:16]
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    await tx.execute("INSERT INTO user_tokens (id, user_id, name, token_hash, created_by, created_at, expires_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7)", token_id, user.id, name.strip(), hash_token(secret),
                     actor, isoformat(now), isoformat(expires_at) if expires_at else None)
    await audit.record(tx, actor=actor, kind="admin.token.created", at=now, login=user.login, token=token_id,
                       name=name.strip(), expires_at=isoformat(expires_at) if expires_at else None)
    return Token(token_id, user.id, name.strip(), actor, now, expires_at, None), secret


async def list_for(tx: Tx, user_id: str) -> list[Token]:
    rows = await tx.fetch("SELECT * FROM user_tokens WHERE user_id = $1 ORDER BY created_at, id LIMIT 200", user_id)
    return [_token(r) for r in rows]


async def revoke(tx: Tx, user: User, token_id: str, *, actor: str, now: datetime) -> None:
    row = await tx.fetchrow("SELECT * FROM user_tokens WHERE id = $1 AND user_id = $2", token_id, user.id)
    if row is None:
        raise NotFound(f"Jeton {token_id} introuvable pour le compte {user.login}.", field="token")
    if row["revoked_at"] is None:
        await tx.execute("UPDATE user_tokens SET revoked_at = $2 WHERE id = $1", token_id, isoformat(now))
        await audit.record(tx, actor=actor, kind="admin.token.revoked", at=now, login=user.login, token=token_id)


async def authenticate(rt: Any, secret: str) -> Principal:
    """The person behind a token, with their current grants.

    Raises:
        Unauthorized: unknown, revoked or expired token, or deactivated account.
    """
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        row = await tx.fetchrow("SELECT * FROM user_tokens WHERE token_hash = $1", hash_token(secret))
        if row is None:
            raise Unauthorized("Accès interdit : jeton inconnu", field="Authorization")
        token = _token(row)
        if token.revoked_at is not None:
            raise Unauthorized("Accès interdit : ce jeton a été révoqué", field="Authorization")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthorized("Accès interdit : ce jeton a expiré", field="Authorization")
        user = await accounts.get(tx, token.user_id)
        if not user.active:
            raise Unauthorized("Votre compte a été désactivé", field="Authorization")
        return await accounts.principal(tx, user)


async def authenticate_limited(rt: Any, secret: str, address: str, *, door: str) -> Principal:
    """``authenticate``, a failure counted (and journaled) against ``address`` and the token id tried.

    Raises:
        Unauthorized: as ``authenticate``.
        TooManyAttempts: a failure, and the address (or token id) is past its limit.
    """
    return await limits.counted(rt, door, address, token_identity(secret), authenticate(rt, secret))
