"""Who may do what: grants (a role on an entity and its sub-entities, optionally on some flows only) and the one check every door uses.

Roles, weakest first: ``reader`` (« Lecteur »: reads documents), ``editor`` (« Agent »: creates,
edits and starts documents), ``admin`` (« Administrateur »: also configures the entity and grants
rights).  A grant on ``"*"`` covers every entity: ``admin`` there is the platform administrator.
A grant restricted to some flows gives its role on the documents of those flows only; rights on
the entity itself (connectors, webhooks, people) need a grant without restriction.

People (``flowbus.people.accounts``) and API keys (``flowbus.api.auth``) both become a
``Principal``; the API v1, the Pastell layer, the web pages and downloads ask this module, so an
agent of the RH flows of commune A sees exactly A's RH documents, whatever the door.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flowbus.errors import Forbidden
from flowbus.store.base import Tx
from flowbus.store.repo import ancestors, subtree

ROLES = ("reader", "editor", "admin")
ORDER = {role: rank for rank, role in enumerate(ROLES, 1)}
ROLE_LABELS = {"reader": "Lecteur", "editor": "Agent", "admin": "Administrateur"}
EVERY_ENTITY = "*"


@dataclass(frozen=True)
class Grant:
    entity_id: str  # an entity id, or "*" for every entity
    role: str  # reader, editor, admin
    flows: tuple[str, ...] | None = None  # None: every flow

    def applies_to_flow(self, flow_id: str | None) -> bool:
        """A grant restricted to some flows counts for those flows' documents only (never for the entity itself)."""
        if self.flows is None:
            return True
        return flow_id is not None and flow_id in self.flows

    def label(self) -> str:
        if self.entity_id == EVERY_ENTITY and self.role == "admin" and self.flows is None:
            return "Administrateur de la plateforme"
        return ROLE_LABELS.get(self.role, self.role)

    def to_json(self) -> dict[str, Any]:
        return {"entity": self.entity_id, "role": self.role, "flows": list(self.flows) if self.flows else None}


def grants_from_roles(roles: dict[str, Any]) -> tuple[Grant, ...]:
    """An API key's stored roles: ``{entity: role}`` or ``{entity: {"role": r, "flows": [...]}}``."""
    out = []
    for entity_id, value in roles.items():
        if isinstance(value, dict):
            flows = value.get("flows")
            out.append(Grant(entity_id, value["role"], tuple(flows) if flows else None))
        else:
            out.append(Grant(entity_id, value))
    return tuple(out)


def flows_to_db(flows: tuple[str, ...] | None) -> str | None:
    return None if flows is None else json.dumps(list(flows))


def flows_from_db(text: str | None) -> tuple[str, ...] | None:
    return None if not text else tuple(json.loads(text))


@dataclass(frozen=True)
class Principal:
    """Whoever calls: a person (``kind`` "user") or an API key (``kind`` "key")."""

    kind: str
    id: str
    name: str
    grants: tuple[Grant, ...]
    login: str | None = None  # people only
    session_csrf: str | None = None  # set when the call comes with a web session cookie
    must_change_password: bool = False  # a person whose first password must be replaced before anything else

    @property
    def actor(self) -> str:
        """How the journal names this principal."""
        return f"user:{self.login}" if self.kind == "user" else f"api-key:{self.id}"

    @property
    def is_platform_admin(self) -> bool:
        return any(g.entity_id == EVERY_ENTITY and g.role == "admin" and g.flows is None for g in self.grants)

    @property
    def roles(self) -> dict[str, str]:
        """Best unrestricted role per entity (the shape API keys always had)."""
        out: dict[str, str] = {}
        for g in self.grants:
            if g.flows is None and ORDER[g.role] > ORDER.get(out.get(g.entity_id, ""), 0):
                out[g.entity_id] = g.role
        return out

    def role_for(self, chain: list[str], flow_id: str | None = None) -> str | None:
        """Best role on the first entity of ``chain`` (the entity then its parents), for ``flow_id``'s documents.

        ``flow_id`` None asks for a right on the entity itself: flow-restricted grants do not count.
        """
        best: str | None = None
        covered = set(chain) | {EVERY_ENTITY}
        for g in self.grants:
            if g.entity_id in covered and g.applies_to_flow(flow_id) and ORDER[g.role] > ORDER.get(best or "", 0):
                best = g.role
        return best

    def sees_something_of(self, chain: list[str]) -> bool:
        """Whether any grant (restricted or not) covers the entity: it may see its name."""
        covered = set(chain) | {EVERY_ENTITY}
        return any(g.entity_id in covered for g in self.grants)


def has(role: str | None, wanted: str) -> bool:
    return role is not None and ORDER[role] >= ORDER[wanted]


# ---- checks ------------------------------------------------------------------------------------


async def role_on(tx: Tx, who: Principal, entity_id: str, flow_id: str | None = None) -> str | None:
    if who.is_platform_admin:
        return "admin"
    return who.role_for(await ancestors(tx, entity_id), flow_id)


async def require(tx: Tx, who: Principal, entity_id: str, role: str, flow_id: str | None = None) -> str:
    """Raise Forbidden unless ``who`` has ``role`` (or better) on the entity (for ``flow_id``'s documents)."""
    have = await role_on(tx, who, entity_id, flow_id)
    if not has(have, role):
        what = f"sur les documents du flux {flow_id} de" if flow_id else "sur"
        raise Forbidden(f"Droit « {ROLE_LABELS[role]} » requis {what} la collectivité {entity_id}.",
                        field="entity")
    return have  # type: ignore[return-value]


# ---- what a principal may read: the document filter --------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The documents a principal may read: ``None`` entity ids means every entity."""

    clauses: tuple[tuple[tuple[str, ...] | None, tuple[str, ...] | None], ...]  # (entity ids, flows)

    @property
    def everything(self) -> bool:
        return any(entities is None and flows is None for entities, flows in self.clauses)

    @property
    def entity_ids(self) -> list[str] | None:
        """Every entity where something is visible (None: all)."""
        if any(entities is None for entities, _ in self.clauses):
            return None
        out: list[str] = []
        for entities, _ in self.clauses:
            out.extend(e for e in entities or () if e not in out)
        return out

    def allows(self, entity_id: str, flow_id: str) -> bool:
        return any((entities is None or entity_id in entities) and (flows is None or flow_id in flows)
                   for entities, flows in self.clauses)

    def sql(self, arg: Any, *, entity_col: str = "entity_id", flow_col: str = "flow_id") -> str | None:
        """A WHERE condition (None: no restriction); ``arg(value)`` adds a parameter and returns its placeholder."""
        if self.everything:
            return None
        parts = []
        for entities, flows in self.clauses:
            cond = []
            if entities is not None:
                if not entities:
                    continue
                cond.append(f"{entity_col} IN ({', '.join(arg(e) for e in entities)})")
            if flows is not None:
                cond.append(f"{flow_col} IN ({', '.join(arg(f) for f in flows)})")
            parts.append("(" + " AND ".join(cond) + ")")
        return "(" + " OR ".join(parts) + ")" if parts else "1 = 0"


async def scope(tx: Tx, who: Principal, role: str = "reader") -> Scope:
    """What ``who`` may read (or act on, with ``role``) across entities and flows."""
    clauses: list[tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = []
    for g in who.grants:
        if not has(g.role, role):
            continue
        if g.entity_id == EVERY_ENTITY:
            clauses.append((None, g.flows))
        else:
            clauses.append((tuple(await subtree(tx, [g.entity_id])), g.flows))
    return Scope(tuple(clauses))
