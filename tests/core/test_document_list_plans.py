"""Every document list the API v1, the web pages and the Pastell layer offer reads an index range in the
order it shows: no scan of the documents table, no sort of it (issue 20 §4).

The statements are those the product builds (``repo.search_documents``, ``repo.count_documents_by_state``,
the Pastell layer's ``documents_query``), caught on their way to the database and explained there.
SQLite is asked as it runs in production, without statistics (``EXPLAIN QUERY PLAN``); PostgreSQL
plans from statistics, so it gets 20,000 documents spread like real life (a large entity, many small
ones, a few flows, rare states) and ANALYZE, then ``EXPLAIN (FORMAT JSON)`` with its planner left free.
A text query may sort what the text index matched (never the table): the plan must then be driven by
the text index.  PostgreSQL may also sort an index range that is exactly the matches (every condition in
the index, nothing filtered from the table) when it expects no more than a page of them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from flowbus.connectors.inbound.pastell_v2.routes import documents_query
from flowbus.people.access import Scope
from flowbus.store import repo

ROWS = 20_000
ENTITIES = 50

SQLITE_FILL = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
INSERT INTO documents (id, entity_id, flow_id, state, fields, search_text, version, created_at, updated_at)
SELECT printf('d%06d', i),
       CASE WHEN i % 3 = 0 THEN 'e00' ELSE printf('e%02d', 1 + i % {ENTITIES - 1}) END,
       CASE i % 10 WHEN 0 THEN 'deliberation' WHEN 1 THEN 'pes' ELSE 'paie' END,
       CASE WHEN i % 250 = 0 THEN 'error' WHEN i % 10 = 3 THEN 'running' ELSE 'done' END,
       '{{}}', 'bulletin de paie matricule a' || i || CASE WHEN i = 12345 THEN ' rarissime' ELSE '' END, 1,
       strftime('%Y-%m-%dT%H:%M:%fZ', '2024-01-01', '+' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%fZ', '2024-01-01', '+' || (i + (i % 97) * 60) || ' minutes')
FROM n"""

POSTGRES_FILL = f"""
INSERT INTO documents (id, entity_id, flow_id, state, fields, search_text, version, created_at, updated_at)
SELECT 'd' || lpad(i::text, 6, '0'),
       CASE WHEN i % 3 = 0 THEN 'e00' ELSE 'e' || lpad((1 + i % {ENTITIES - 1})::text, 2, '0') END,
       CASE i % 10 WHEN 0 THEN 'deliberation' WHEN 1 THEN 'pes' ELSE 'paie' END,
       CASE WHEN i % 250 = 0 THEN 'error' WHEN i % 10 = 3 THEN 'running' ELSE 'done' END,
       '{{}}', 'bulletin de paie matricule a' || i || CASE WHEN i = 12345 THEN ' rarissime' ELSE '' END, 1,
       to_char(timestamp '2024-01-01' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       to_char(timestamp '2024-01-01' + (i + (i % 97) * 60) * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM generate_series(1, {ROWS}) AS i"""


class ExplainingTx:
    """Passes every statement on, after asking the database how it plans those that read documents."""

    def __init__(self, tx: Any) -> None:
        self._tx, self.dialect, self.hints = tx, tx.dialect, tx.hints
        self.plans: list[tuple[str, Any]] = []

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if "FROM documents" in sql:
            if self.dialect == "sqlite":
                plan = [r["detail"] for r in await self._tx.fetch("EXPLAIN QUERY PLAN " + sql, *args)]
            else:
                raw = await self._tx.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
                plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            self.plans.append((sql, plan))
        return await self._tx.fetch(sql, *args)


def _pg_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_pg_nodes(child))
    return out


def _exact_small_range(nodes: list[dict[str, Any]]) -> bool:
    """A sort PostgreSQL may choose: of an index range that is exactly the matches (every condition in the
    index, nothing filtered from the table), expected to hold no more than a page."""
    scans = [n for n in nodes if n.get("Relation Name") == "documents"]
    ranges = [n for n in nodes if n["Node Type"] in ("Bitmap Index Scan", "Index Scan", "Index Only Scan")]
    return (len(scans) == 1 and scans[0]["Node Type"] in ("Bitmap Heap Scan", "Index Scan", "Index Only Scan")
            and "Filter" not in scans[0] and len(ranges) == 1 and "Index Cond" in ranges[0]
            and ranges[0]["Plan Rows"] <= 51)


def _check(dialect: str, sql: str, plan: Any, *, text: bool, filtered: bool) -> None:
    if dialect == "sqlite":
        shown = " | ".join(plan)
        from_text_index = any("documents_fts VIRTUAL TABLE" in d for d in plan)
        for detail in plan:
            assert detail != "SCAN documents", f"full scan of documents: {shown}\n{sql}"
            if detail.startswith("SCAN documents ") and filtered and not from_text_index:
                pytest.fail(f"a filtered list walks a whole index instead of its range: {shown}\n{sql}")
            if "TEMP B-TREE" in detail and not (text and from_text_index):
                pytest.fail(f"sort of documents: {shown}\n{sql}")
        if text:
            assert from_text_index or any("documents_fts" in d for d in plan), shown
        return
    nodes = _pg_nodes(plan)
    shown = json.dumps(plan)[:3000]
    for node in nodes:
        assert not (node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "documents"), \
            f"full scan of documents: {shown}\n{sql}"
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            below = _pg_nodes(node)
            reads_documents = any(n.get("Relation Name") == "documents" for n in below)
            by_text_index = any(n.get("Index Name") == "documents_search" for n in below)
            assert not reads_documents or (text and by_text_index) or _exact_small_range(below), \
                f"sort of documents: {shown}\n{sql}"


async def _fill(runtime) -> None:
    now = datetime(2024, 1, 1, tzinfo=timezone.utc).isoformat()
    async with runtime.store.transaction() as tx:
        for i in range(ENTITIES):
            await tx.execute("INSERT INTO entities (id, name, created_at) VALUES ($1, $2, $3)",
                             f"e{i:02d}", f"Entité {i}", now)
        await tx.execute(SQLITE_FILL if tx.dialect == "sqlite" else POSTGRES_FILL)
    if runtime.store.dialect == "postgres":  # what autovacuum does for a real table: statistics, visibility map
        async with runtime.store.statements() as tx:
            await tx.execute("VACUUM ANALYZE documents")


CURSOR = ("2024-01-08T10:00:00.000000Z", "d010000")
# (name, arguments of repo.search_documents): every filter the API v1 and the document pages combine
LISTS = [
    ("entity", {"entity_ids": ["e00"]}),
    ("small entity", {"entity_ids": ["e17"]}),
    ("entity, deep page", {"entity_ids": ["e00"], "after": CURSOR}),
    ("entity, newest first, deep page", {"entity_ids": ["e00"], "after": CURSOR, "newest_first": True}),
    ("entity and flow", {"entity_ids": ["e00"], "flow": "deliberation"}),
    ("entity and state", {"entity_ids": ["e00"], "state": "error"}),
    ("entity, flow and state", {"entity_ids": ["e00"], "flow": "deliberation", "state": "error",
                                "newest_first": True}),
    ("entity and dates", {"entity_ids": ["e00"], "since": datetime(2024, 1, 5, tzinfo=timezone.utc),
                          "until": datetime(2024, 1, 9, tzinfo=timezone.utc), "newest_first": True}),
    ("flow and state", {"flow": "deliberation", "state": "done", "newest_first": True}),
    ("flow and state, deep page", {"flow": "deliberation", "state": "done", "after": CURSOR}),
    ("state", {"state": "error", "newest_first": True}),
    ("state, deep page", {"state": "running", "after": CURSOR, "newest_first": True}),
    ("flow", {"flow": "pes", "newest_first": True}),
    ("everything, newest first", {"newest_first": True}),
    ("everything, deep page", {"after": CURSOR, "newest_first": True}),
    ("scope of one entity", {"scope": Scope(((("e17",), None),)), "newest_first": True}),
    ("scope of one entity and its flows", {"scope": Scope(((("e00",), ("pes",)),)), "newest_first": True}),
]
TEXT_LISTS = [
    ("rare word, every entity", {"q": "rarissime", "newest_first": True}),
    ("matricule prefix in an entity", {"entity_ids": ["e00"], "q": "A1234"}),
]


def _filtered(kwargs: dict[str, Any]) -> bool:
    return any(kwargs.get(k) for k in ("entity_ids", "flow", "state", "scope"))


async def test_document_lists_read_an_index_range_in_order(runtime):
    await _fill(runtime)
    async with runtime.store.transaction() as tx:
        explaining = ExplainingTx(tx)
        for name, kwargs in LISTS + TEXT_LISTS:
            args = {"entity_ids": None, "flow": None, "state": None, "since": None, "until": None, "q": None,
                    "after": None, "limit": 51, **kwargs}
            found = await repo.search_documents(explaining, **args)
            sql, plan = explaining.plans[-1]
            assert found, f"{name}: the list is empty, its plan would prove nothing"
            _check(tx.dialect, sql, plan, text=bool(kwargs.get("q")), filtered=_filtered(kwargs))
        # the text index answers the rare word, once
        rare = await repo.search_documents(tx, entity_ids=None, flow=None, state=None, since=None, until=None,
                                           q="rarissime", limit=51, after=None)
        assert [d.id for d in rare] == ["d012345"]


async def test_counts_by_state_read_index_ranges(runtime):
    await _fill(runtime)
    async with runtime.store.transaction() as tx:
        explaining = ExplainingTx(tx)
        for entity_ids, flow in ((["e00"], None), (None, None), (["e17"], "pes")):
            counts = await repo.count_documents_by_state(explaining, ("done", "error", "running", "draft"),
                                                         scope=None, entity_ids=entity_ids, flow=flow, since=None,
                                                         until=None, cap=1000)
            assert counts["done"] > 0 and counts["draft"] == 0
            sql, plan = explaining.plans[-1]
            _check(tx.dialect, sql, plan, text=False, filtered=True)


@pytest.mark.parametrize("flow, search, offset", [(None, None, 0), ("pes", None, 0), (None, None, 3000),
                                                  (None, "a1234", 0)])
async def test_pastell_list_reads_an_index_range_in_order(runtime, flow, search, offset):
    await _fill(runtime)
    sql, args = documents_query(runtime.store.dialect, "e00", scope=Scope(((None, None),)), flow=flow,
                                search=search, limit=100, offset=offset)
    async with runtime.store.transaction() as tx:
        explaining = ExplainingTx(tx)
        rows = await explaining.fetch(sql, *args)
        assert rows
        assert [r["updated_at"] for r in rows] == sorted((r["updated_at"] for r in rows), reverse=True)
        _check(tx.dialect, sql, explaining.plans[-1][1], text=bool(search), filtered=True)


async def test_pastell_counts_read_index_ranges(runtime):
    """``GET /api/v2/document/count``: each state of an entity's flow is one bounded range of
    documents_entity_flow_state, the documents' steps done read by primary key, never a scan."""
    from flowbus.connectors.inbound.pastell_v2 import counts, mapping
    await _fill(runtime)
    flux = mapping.resolve("actes-generique", runtime.flows)
    assert flux.flow.id == "deliberation"
    async with runtime.store.transaction() as tx:
        explaining = ExplainingTx(tx)
        counted = await counts.count_flow(explaining, flux, "e00", cap=300)
        sql, plan = explaining.plans[-1]
        exact = await tx.fetchval("SELECT COUNT(*) FROM documents WHERE entity_id = 'e00' AND flow_id = 'deliberation' "
                                  "AND state = 'done'")
    assert exact > 301 and counted["termine"] == 301  # no step done here: « termine »; stopped at cap + 1
    assert counted["fatal-error"] > 0 and set(counted) == {"termine", "fatal-error"}
    if runtime.store.dialect == "sqlite":
        shown = " | ".join(plan)
        assert "SCAN documents" not in plan and all(not d.startswith("SCAN documents") for d in plan), shown
        assert any("documents USING INDEX documents_entity_flow_state" in d for d in plan), shown
        assert not any("TEMP B-TREE FOR ORDER BY" in d for d in plan), shown  # each range read in index order
    else:
        nodes = _pg_nodes(plan)
        assert not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "documents" for n in nodes), plan
