"""Accounts: people who sign in (login, name, e-mail, active), their password and their grants."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.errors import Conflict, NotFound, ValidationError
from flowbus.people import audit, passwords
from flowbus.people.access import (EVERY_ENTITY, ORDER, ROLES, Grant, Principal, flows_from_db, flows_to_db)
from flowbus.store.base import Tx

_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class User:
    id: str
    login: str
    name: str
    email: str
    active: bool
    has_password: bool
    must_change_password: bool
    failed_sign_ins: int
    locked_until: datetime | None
    external_id: str | None
    created_at: datetime
    last_sign_in_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "login": self.login, "name": self.name, "email": self.email, "active": self.active,
                "created_at": isoformat(self.created_at),
                "last_sign_in_at": isoformat(self.last_sign_in_at) if self.last_sign_in_at else None}


def user_from_row(row: dict[str, Any]) -> User:
    return User(row["id"], row["login"], row["name"], row["email"], bool(row["active"]),
                row["password_hash"] is not None, bool(row["must_change_password"]), int(row["failed_sign_ins"]),
                parse_iso(row["locked_until"]) if row["locked_until"] else None, row["external_id"],
                parse_iso(row["created_at"]),
                parse_iso(row["last_sign_in_at"]) if row["last_sign_in_at"] else None)


def check_login(login: Any) -> str:
    if not isinstance(login, str) or not _LOGIN.match(login.strip().lower()):
        raise ValidationError("Identifiant invalide : 2 à 64 caractères parmi lettres minuscules, chiffres et . _ @ -",
                              field="login")
    return login.strip().lower()


def check_email(email: Any) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise ValidationError("Adresse électronique invalide.", field="email")
    return email.strip()


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("Le nom est obligatoire.", field="name")
    if len(name.strip()) > 200:
        raise ValidationError("Le nom ne peut dépasser 200 caractères.", field="name")
    return name.strip()


# ---- reading ----------------------------------------------------------------------------------


async def get(tx: Tx, user_id: str) -> User:
    row = await tx.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound(f"Compte {user_id} introuvable.", field="user")
    return user_from_row(row)


async def by_login(tx: Tx, login: str) -> User | None:
    row = await tx.fetchrow("SELECT * FROM users WHERE login = $1", login.strip().lower())
    return None if row is None else user_from_row(row)


async def password_hash(tx: Tx, user_id: str) -> str | None:
    return await tx.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)


async def by_login_or_email(tx: Tx, value: str) -> list[User]:
    value = value.strip()
    rows = await tx.fetch("SELECT * FROM users WHERE login = $1 OR email = $2 LIMIT 5", value.lower(), value)
    return [user_from_row(r) for r in rows]


async def by_external_id(tx: Tx, external_id: str) -> User | None:
    row = await tx.fetchrow("SELECT * FROM users WHERE external_id = $1", external_id)
    return None if row is None else user_from_row(row)


async def page(tx: Tx, *, q: str | None = None, after: tuple[str, str] | None = None, limit: int = 50,
               user_ids: list[str] | None = None) -> list[User]:
    """People by name, keyset-paged on (name, id); ``user_ids`` restricts to those accounts."""
    where, args = [], []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    if user_ids is not None:
        if not user_ids:
            return []
        where.append(f"id IN ({', '.join(arg(u) for u in user_ids)})")
    if q:
        like = "%" + q.strip().lower() + "%"
        where.append(f"(LOWER(name) LIKE {arg(like)} OR login LIKE {arg(like)} OR LOWER(email) LIKE {arg(like)})")
    if after:
        where.append(f"(name > {arg(after[0])} OR (name = {arg(after[0])} AND id > {arg(after[1])}))")
    sql = "SELECT * FROM users" + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY name, id LIMIT {arg(limit)}"
    return [user_from_row(r) for r in await tx.fetch(sql, *args)]


async def grants_of(tx: Tx, user_id: str) -> tuple[Grant, ...]:
    rows = await tx.fetch("SELECT entity_id, role, flows FROM user_grants WHERE user_id = $1 ORDER BY entity_id",
                          user_id)
    return tuple(Grant(r["entity_id"], r["role"], flows_from_db(r["flows"])) for r in rows)


async def principal(tx: Tx, user: User, *, session_csrf: str | None = None) -> Principal:
    return Principal("user", user.id, user.name, await grants_of(tx, user.id), login=user.login,
                     session_csrf=session_csrf, must_change_password=user.must_change_password)


async def user_ids_with_grants_on(tx: Tx, entity_ids: list[str], *, limit: int = 1000) -> list[str]:
    if not entity_ids:
        return []
    ph = ", ".join(f"${i}" for i in range(1, len(entity_ids) + 1))
    rows = await tx.fetch(f"SELECT DISTINCT user_id FROM user_grants WHERE entity_id IN ({ph}) "
                          f"LIMIT {int(limit)}", *entity_ids)
    return [r["user_id"] for r in rows]


# ---- changing -----------------------------------------------------------------------------------


async def create(tx: Tx, *, login: str, name: str, email: str, actor: str, now: datetime,
                 password: str | None = None, must_change_password: bool = True,
                 external_id: str | None = None) -> User:
    """A new active account; without a password it signs in by a single-use link or single sign-on."""
    login, name, email = check_login(login), check_name(name), check_email(email)
    if password is not None:
        passwords.check_policy(password, login=login)
    if await by_login(tx, login) is not None:
        raise Conflict(f"L'identifiant « {login} » est déjà pris.", field="login")
    user_id = uuid.uuid4().hex[:16]
    await tx.execute(
        "INSERT INTO users (id, login, name, email, active, password_hash, must_change_password, external_id, "
        "created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $8)",
        user_id, login, name, email, passwords.hash_password(password) if password else None,
        1 if must_change_password else 0, external_id, isoformat(now))
    user = await get(tx, user_id)
    await audit.record(tx, actor=actor, kind="admin.user.created", at=now,
                       after={"login": login, "name": name, "email": email})
    return user


async def update(tx: Tx, user: User, *, name: str, email: str, actor: str, now: datetime) -> User:
    name, email = check_name(name), check_email(email)
    await tx.execute("UPDATE users SET name = $2, email = $3, updated_at = $4 WHERE id = $1",
                     user.id, name, email, isoformat(now))
    await audit.record(tx, actor=actor, kind="admin.user.updated", at=now, login=user.login,
                       before={"name": user.name, "email": user.email}, after={"name": name, "email": email})
    return await get(tx, user.id)


async def set_password(tx: Tx, user: User, password: str, *, actor: str, now: datetime,
                       must_change: bool = False) -> None:
    """Store a new password (policy checked), unlock the account, end its other sessions."""
    passwords.check_policy(password, login=user.login)
    await tx.execute("UPDATE users SET password_hash = $2, must_change_password = $3, failed_sign_ins = 0, "
                     "locked_until = NULL, updated_at = $4 WHERE id = $1",
                     user.id, passwords.hash_password(password), 1 if must_change else 0, isoformat(now))
    await audit.record(tx, actor=actor, kind="admin.user.password_set", at=now, login=user.login)


async def set_active(tx: Tx, user: User, active: bool, *, actor: str, now: datetime) -> None:
    await tx.execute("UPDATE users SET active = $2, updated_at = $3 WHERE id = $1", user.id, 1 if active else 0,
                     isoformat(now))
    if not active:
        await tx.execute("DELETE FROM web_sessions WHERE user_id = $1", user.id)
    await audit.record(tx, actor=actor, kind="admin.user.activated" if active else "admin.user.deactivated",
                       at=now, login=user.login, before={"active": user.active}, after={"active": active})


async def grant(tx: Tx, user: User, g: Grant, *, actor: str, now: datetime) -> None:
    """Give ``g`` (replacing the user's grant on the same entity)."""
    if g.role not in ORDER:
        raise ValidationError(f"Rôle inconnu « {g.role} » : {', '.join(ROLES)}.", field="role")
    if g.entity_id != EVERY_ENTITY and await tx.fetchval("SELECT id FROM entities WHERE id = $1", g.entity_id) is None:
        raise NotFound(f"Collectivité {g.entity_id} introuvable.", field="entity")
    before = await tx.fetchrow("SELECT role, flows FROM user_grants WHERE user_id = $1 AND entity_id = $2",
                               user.id, g.entity_id)
    await tx.execute("DELETE FROM user_grants WHERE user_id = $1 AND entity_id = $2", user.id, g.entity_id)
    await tx.execute("INSERT INTO user_grants (user_id, entity_id, role, flows, granted_by, granted_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6)", user.id, g.entity_id, g.role, flows_to_db(g.flows), actor,
                     isoformat(now))
    await audit.record(tx, actor=actor, kind="admin.grant.given", at=now,
                       entity_id=None if g.entity_id == EVERY_ENTITY else g.entity_id, login=user.login,
                       before=None if before is None else {"role": before["role"],
                                                           "flows": flows_from_db(before["flows"])},
                       after=g.to_json())


async def revoke(tx: Tx, user: User, entity_id: str, *, actor: str, now: datetime) -> None:
    before = await tx.fetchrow("SELECT role, flows FROM user_grants WHERE user_id = $1 AND entity_id = $2",
                               user.id, entity_id)
    if before is None:
        raise NotFound("Ce droit n'existe pas.", field="entity")
    await tx.execute("DELETE FROM user_grants WHERE user_id = $1 AND entity_id = $2", user.id, entity_id)
    await audit.record(tx, actor=actor, kind="admin.grant.revoked", at=now,
                       entity_id=None if entity_id == EVERY_ENTITY else entity_id, login=user.login,
                       before={"role": before["role"], "flows": flows_from_db(before["flows"])})


async def record_sign_in(tx: Tx, user: User, *, method: str, now: datetime) -> None:
    await tx.execute("UPDATE users SET failed_sign_ins = 0, locked_until = NULL, last_sign_in_at = $2 WHERE id = $1",
                     user.id, isoformat(now))
    await audit.record(tx, actor=f"user:{user.login}", kind="user.signed_in", at=now, method=method)
