"""Journal search for people: one entity's chain (or a document's entries, or the administrative entries of every entity), newest first, a page at a time.

Every search goes through an index and stops at its page: an entity's chain by its primary key
(entity, seq) read backwards, a document's entries by ``journal_document``, administrative and
sign-in entries of the whole platform by the partial index ``journal_admin_at``.  Filters on the
actor, the kind and dates narrow what is read; they never make a search read another chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat
from flowbus.errors import ValidationError
from flowbus.journal import row_to_entry
from flowbus.models import JournalEntry
from flowbus.store.base import Tx

ADMIN_KINDS = "(kind LIKE 'admin.%' OR kind LIKE 'user.%')"
MAX_PAGE = 1000


@dataclass(frozen=True)
class Query:
    entity_id: str | None = None  # one chain; None with admin_only: every entity's administrative entries
    document_id: str | None = None
    actor: str | None = None  # prefix: "user:camille", "api-key:", "engine"…
    kind: str | None = None  # prefix: "admin.", "state.changed"…
    since: datetime | None = None
    until: datetime | None = None
    admin_only: bool = False

    def check(self) -> None:
        if not (self.entity_id or self.document_id or self.admin_only):
            raise ValidationError("Choisissez une collectivité, un document, ou les actions d'administration.",
                                  field="entity")


Cursor = tuple[str, str, int]  # (at, entity_id, seq) of the last entry of the previous page


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _sql(q: Query, after: Cursor | None, limit: int, entity_ids: list[str] | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    order = "entity_id DESC, seq DESC"
    if q.document_id:
        where.append(f"document_id = {arg(q.document_id)}")
        if q.entity_id:
            where.append(f"entity_id = {arg(q.entity_id)}")
        if after:
            where.append(f"(entity_id < {arg(after[1])} OR (entity_id = {arg(after[1])} AND seq < {arg(after[2])}))")
    elif q.entity_id:
        where.append(f"entity_id = {arg(q.entity_id)}")
        if after:
            where.append(f"seq < {arg(after[2])}")
    else:  # administrative entries of every entity, by date
        where.append(ADMIN_KINDS)
        order = "at DESC, entity_id DESC, seq DESC"
        if after:
            where.append(f"(at < {arg(after[0])} OR (at = {arg(after[0])} AND (entity_id < {arg(after[1])} OR "
                         f"(entity_id = {arg(after[1])} AND seq < {arg(after[2])}))))")
    if entity_ids is not None:
        if not entity_ids:
            where.append("1 = 0")
        else:
            where.append(f"entity_id IN ({', '.join(arg(e) for e in entity_ids)})")
    if q.admin_only and (q.entity_id or q.document_id):
        where.append(ADMIN_KINDS)
    if q.actor:
        where.append(f"actor LIKE {arg(_like(q.actor))} ESCAPE '\\'")
    if q.kind:
        where.append(f"kind LIKE {arg(_like(q.kind))} ESCAPE '\\'")
    if q.since:
        where.append(f"at >= {arg(isoformat(q.since))}")
    if q.until:
        where.append(f"at < {arg(isoformat(q.until))}")
    return (f"SELECT * FROM journal WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {arg(min(limit, MAX_PAGE))}",
            args)


async def search(tx: Tx, q: Query, *, after: Cursor | None = None, limit: int = 50,
                 entity_ids: list[str] | None = None) -> list[JournalEntry]:
    """A page of entries, newest first; ``entity_ids`` restricts to the entities the reader may see (None: all)."""
    q.check()
    sql, args = _sql(q, after, limit, entity_ids)
    return [row_to_entry(r) for r in await tx.fetch(sql, *args)]


def cursor(entry: JournalEntry) -> Cursor:
    return isoformat(entry.at), entry.entity_id, entry.seq


async def plan(tx: Tx, q: Query, dialect: str) -> str:
    """The database's plan for ``q`` (tests check that it uses an index)."""
    sql, args = _sql(q, None, 50, None)
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    return "\n".join(" ".join(str(v) for v in dict(r).values()) for r in await tx.fetch(prefix + sql, *args))
