"""The document list's filters, read once from the query string and shared by the page, the CSV export and
the batch actions: collectivité, flow, state, creation dates (Paris days), text.

Documents are walked newest first by keyset pages (``walk``), each page in its own short transaction,
so an export or a batch over a large filter never holds a transaction nor the whole list in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from flowbus.clock import isoformat
from flowbus.store import repo
from flowbus.web.french import PARIS

STATES = ("draft", "running", "waiting", "error", "done", "rejected", "cancelled")
BUILTIN = ("draft", "running", "waiting", "error", "done", "cancelled")


def stored_states(flows: Any) -> dict[str, tuple[str, ...]]:
    """Each state of the list → the states stored: « Refusé » gathers every refusal state a flow names."""
    refused = {"rejected"} | {name for flow in flows.values() for name in flow.states if name not in BUILTIN}
    return {s: tuple(sorted(refused)) if s == "rejected" else (s,) for s in STATES}
KEYS = ("entity", "flow", "state", "du", "au", "q")


@dataclass
class ListFilter:
    entity: str | None = None
    flow: str | None = None
    state: str | None = None
    since: datetime | None = None  # from the start of « du » (Paris)
    until: datetime | None = None  # to the end of « au » (Paris)
    q: str | None = None
    raw: dict[str, str] = field(default_factory=dict)  # as typed, to fill the form again
    flows: Any = None  # the runtime's flows: « Refusé » is every refusal state they name
    errors: dict[str, str] = field(default_factory=dict)  # field → French message

    def params(self, **extra: str) -> str:
        return urlencode({**{k: v for k, v in self.raw.items() if v}, **extra})

    def search(self, scope: Any) -> dict[str, Any]:
        state: str | tuple[str, ...] | None = self.state
        if self.state == "rejected" and self.flows is not None:
            state = stored_states(self.flows)["rejected"]
        return {"scope": scope, "entity_ids": [self.entity] if self.entity else None, "flow": self.flow,
                "state": state, "since": self.since, "until": self.until, "q": self.q}


def _day(value: str, name: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = f"Date invalide « {value} » : attendue au format AAAA-MM-JJ."
        return None


def parse(query: Any, flows: Any) -> ListFilter:
    raw = {k: str(query.get(k, "")).strip() for k in KEYS}
    f = ListFilter(raw=raw)
    f.entity = raw["entity"] or None
    f.flow = raw["flow"] or None
    if f.flow and f.flow not in flows:
        f.errors["flow"] = f"Flux inconnu « {f.flow} »."
        f.flow = None
    f.state = raw["state"] or None
    f.flows = flows
    if f.state and f.state not in STATES:
        f.errors["state"] = f"État inconnu « {f.state} »."
        f.state = None
    f.q = raw["q"] or None
    since, until = _day(raw["du"], "du", f.errors), _day(raw["au"], "au", f.errors)
    if since and until and until < since:
        f.errors["au"] = "La date de fin précède la date de début."
        until = None
    f.since = datetime.combine(since, time(), PARIS) if since else None
    f.until = datetime.combine(until + timedelta(days=1), time(), PARIS) if until else None
    return f


def cursor(doc: Any) -> tuple[str, str]:
    return isoformat(doc.created_at), doc.id


async def walk(store: Any, scope: Any, f: ListFilter, *, page: int = 500,
               limit: int | None = None) -> AsyncIterator[Any]:
    """Every document of the filter, newest first, ``page`` at a time (``limit``: stop after that many)."""
    after: tuple[str, str] | None = None
    seen = 0
    while True:
        size = page if limit is None else min(page, limit - seen)
        if size <= 0:
            return
        async with store.transaction() as tx:
            docs = await repo.search_documents(tx, **f.search(scope), limit=size, after=after, newest_first=True)
        for doc in docs:
            yield doc
        seen += len(docs)
        if len(docs) < size:
            return
        after = cursor(docs[-1])
