"""Scale (issue 20 §1): N documents over 733 entities, then the interactive requests' p50/p99 and `journal verify`.

Populating: 733 entities created by the product (``create_entity``), skewed like real life (entity k holds a
share ∝ 1/(k+1): a few large départements, many small communes); one template document is written by the
product's own path (create, upload, start, on the ``demo`` flow), then its rows are copied N times — its
``documents`` row (fields and search text of each copy made by ``repo.search_text``), its ``document_files``
row (same content-addressed blob) and its journal entries (the document's id replaced), chained per entity by
``flowbus.journal.chain`` after the entity's head, so that ``journal verify`` stays meaningful.  The store is
kept in ``--data-dir`` (PostgreSQL: a database named after it) and reused by the next run with the same N.

Measured through the product's own functions (no HTTP): each list the API offers (by entity, flow and
state, state, a rare word, a deep keyset page), one document with its files, its journal as
``GET /documents/{id}/journal`` reads it, the counts by state, create+upload+start; then ``journal verify``
(``flowbus.journal_verify.verify_store``) in entries/s beside the raw SHA-256 rate of 200-byte messages
measured in the same run, with the process's peak RSS while it runs.

    .venv/bin/python bench/bench_scale.py [--documents 100000] [--backend embedded|postgres] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PG, ROOT  # noqa: E402

ENTITIES = 733
JOURNAL_CHUNK = 100


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class Peak:
    """The process's RSS, sampled every 10 ms while the block runs."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def runtime(backend: str, data_dir: Path):
    from flowbus.app import build
    from flowbus.settings import Settings
    values = {"data_dir": data_dir, "config_dir": ROOT / "config", "log_level": "warning", "demo": True}
    if backend == "postgres":
        import asyncpg
        name = "flowbus_scale_" + data_dir.name.replace("-", "_").lower()
        conn = await asyncpg.connect(PG)
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        values["database_url"] = PG.rsplit("/", 1)[0] + f"/{name}"
    return await build(Settings(_env_file=None, **values))


def skewed_entities(entity_ids: list[str], n: int, rng: random.Random) -> list[str]:
    weights = [1 / (k + 1) for k in range(len(entity_ids))]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    return [entity_ids[min(bisect.bisect(cumulative, rng.random() * total), len(entity_ids) - 1)] for _ in range(n)]


async def populate(rt, n: int, out) -> None:
    from flowbus import documents, journal
    from flowbus.api.entities import create_entity
    from flowbus.store.repo import search_text
    t0 = time.perf_counter()
    entity_ids = []
    for k in range(ENTITIES):
        name = f"Département {k}" if k < 5 else f"Commune {k}"
        entity_ids.append((await create_entity(rt, name=name, siren=None, parent=None, actor_name="bench")).id)

    async def content():
        yield "Bulletin de paie (texte)\n".encode() * 800

    template = await documents.create_document(rt, entity_id=entity_ids[-1], flow_id="demo",
                                               fields={"title": "Bulletin de paie"}, actor="bench")
    await documents.attach_file(rt, template.id, "file", filename="bulletin.txt", media_type="text/plain",
                                chunks=content(), actor="bench")
    await documents.run_action(rt, template.id, "start", actor="bench")
    async with rt.store.transaction() as tx:
        doc_row = await tx.fetchrow("SELECT * FROM documents WHERE id = $1", template.id)
        file_rows = await tx.fetch("SELECT * FROM document_files WHERE document_id = $1", template.id)
        entries = await journal.document_rows(tx, template.id)
    rng = random.Random(20)
    owners = skewed_entities(entity_ids, n, rng)
    start = rt.clock.now() - timedelta(days=3 * 365)
    step = timedelta(days=3 * 365) / n
    states = ["done"] * 8 + ["error", "running"]
    heads: dict[str, tuple[int, str]] = {}
    async with rt.store.transaction() as tx:
        for r in await tx.fetch("SELECT entity_id, seq, hash FROM journal_heads"):
            heads[r["entity_id"]] = (int(r["seq"]), r["hash"])
    doc_cols = list(doc_row)
    file_cols = list(file_rows[0]) if file_rows else []
    batch = 5000
    for b in range(0, n, batch):
        by_entity: dict[str, list[tuple]] = {}
        async with rt.store.transaction() as tx:
            for i in range(b, min(n, b + batch)):
                doc_id = uuid.uuid4().hex
                at = start + step * i
                at_s = at.isoformat()
                fields = {"title": f"Bulletin de paie {at:%Y-%m} matricule M{i:07d} agent{rng.randrange(10**6)}"}
                row = dict(doc_row, id=doc_id, entity_id=owners[i], fields=json.dumps(fields, ensure_ascii=False),
                           search_text=search_text(fields), state=states[i % 10], created_at=at_s, updated_at=at_s)
                await tx.execute(f"INSERT INTO documents ({', '.join(doc_cols)}) VALUES "
                                 f"({', '.join(f'${j + 1}' for j in range(len(doc_cols)))})",
                                 *[row[c] for c in doc_cols])
                for f in file_rows:
                    frow = dict(f, document_id=doc_id, created_at=at_s)
                    await tx.execute(f"INSERT INTO document_files ({', '.join(file_cols)}) VALUES "
                                     f"({', '.join(f'${j + 1}' for j in range(len(file_cols)))})",
                                     *[frow[c] for c in file_cols])
                for e in entries:
                    data = e["data"].replace(template.id, doc_id)
                    by_entity.setdefault(owners[i], []).append(
                        (owners[i], at_s, e["actor"], e["kind"], doc_id, data))
            for eid, items in by_entity.items():
                seq, prev = heads[eid]
                rows, seq, prev = journal.chain(eid, seq, prev, items)
                heads[eid] = (seq, prev)
                for c in range(0, len(rows), JOURNAL_CHUNK):
                    chunk = rows[c:c + JOURNAL_CHUNK]
                    await tx.execute(f"INSERT INTO journal {journal.COLUMNS} VALUES {journal.values_sql(len(chunk))}",
                                     *[v for r in chunk for v in r])
                await tx.execute("UPDATE journal_heads SET seq = $2, hash = $3 WHERE entity_id = $1", eid, seq, prev)
        out(f"  populated {min(n, b + batch):,}/{n:,} documents ({time.perf_counter() - t0:.0f} s)")
    journal.remembered_heads(rt.store.hints).clear()  # the heads moved behind the process's back
    if rt.store.dialect == "postgres":
        async with rt.store.transaction() as tx:
            await tx.execute("ANALYZE")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def timed(fn, count: int) -> list[float]:
    out = []
    for i in range(count):
        t = time.perf_counter()
        await fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def measure(rt, reps: int) -> list[tuple[str, list[float]]]:
    from flowbus import documents, journal
    from flowbus.store import repo
    async with rt.store.transaction() as tx:
        by_size = await tx.fetch("SELECT entity_id, seq FROM journal_heads ORDER BY seq DESC")
        big, small = by_size[0]["entity_id"], by_size[len(by_size) // 2]["entity_id"]
        sample = [r["id"] for r in await tx.fetch("SELECT id FROM documents WHERE entity_id = $1 ORDER BY created_at "
                                                  "LIMIT 200", big)]
        in_big = await tx.fetchval("SELECT COUNT(*) FROM documents WHERE entity_id = $1", big)
        depth = min(5000, int(in_big) // 2)  # page 100 of 50 (or mid-timeline when smaller)
        deep = await tx.fetchrow("SELECT created_at, id FROM documents WHERE entity_id = $1 ORDER BY created_at DESC, "
                                 "id DESC LIMIT 1 OFFSET $2", big, depth)
        titles = [json.loads(r["fields"])["title"].split() for r in await tx.fetch(
            "SELECT fields FROM documents ORDER BY id LIMIT 60")]  # random documents (ids are random)
        words = [t[5] for t in titles if len(t) > 5]  # a matricule: one document each
    rng = random.Random(5)

    def search(**kw):
        async def run(i):
            async with rt.store.transaction() as tx:
                args = dict(entity_ids=None, flow=None, state=None, since=None, until=None, q=None, limit=50,
                            after=None, newest_first=True)
                args.update({k: (v(i) if callable(v) else v) for k, v in kw.items()})
                await repo.search_documents(tx, **args)
        return run

    async def one(i):
        await documents.get_document(rt, rng.choice(sample))

    async def its_journal(i):
        async with rt.store.transaction() as tx:
            rows = await journal.document_rows(tx, rng.choice(sample))
            assert await journal.verify_entries(tx, rows) == []

    async def counts(i):
        async with rt.store.transaction() as tx:
            await repo.count_documents_by_state(tx, ["running", "done", "error"], scope=None, entity_ids=None,
                                                flow=None, since=None, until=None, cap=1000)

    async def write(i):
        doc = await documents.create_document(rt, entity_id=small, flow_id="demo", fields={"title": f"Nouveau {i}"},
                                              actor="bench")

        async def content():
            yield f"Nouveau document {i}\n".encode() * 100

        await documents.attach_file(rt, doc.id, "file", filename="n.txt", media_type="text/plain",
                                    chunks=content(), actor="bench")
        await documents.run_action(rt, doc.id, "start", actor="bench")

    cases = [
        ("list: largest entity, newest 50", search(entity_ids=[big])),
        ("list: a mid-size entity", search(entity_ids=[small])),
        ("list: flow=demo & state=error", search(flow="demo", state="error")),
        ("list: state=running, all entities", search(state="running")),
        ("list: q=<rare matricule>, all entities", search(q=lambda i: words[i % len(words)])),
        (f"list: page {depth // 50 + 1} of the largest entity",
         search(entity_ids=[big], after=(deep["created_at"], deep["id"]))),
        ("one document with its files", one),
        ("its journal (GET …/journal)", its_journal),
        ("counts by state (cap 1,000)", counts),
        ("create + upload + start", write),
    ]
    results = []
    for name, fn in cases:
        await fn(0)  # warm
        results.append((name, await timed(fn, reps)))
    return results


def raw_sha256_rate(seconds: float = 1.0) -> float:
    messages = [os.urandom(200) for _ in range(50_000)]
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for m in messages:
            hashlib.sha256(m).hexdigest()
        done += len(messages)
    return done / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    parser.add_argument("--data-dir", type=Path, help="kept between runs (default /tmp/flowbus-scale-BACKEND-N)")
    parser.add_argument("--repeat", type=int, default=100, help="timings per request")
    parser.add_argument("--jobs", type=int, help="journal verify: entities at a time (default: the product's)")
    args = parser.parse_args()
    n = args.documents
    data_dir = args.data_dir or Path(f"/tmp/flowbus-scale-{args.backend}-{n}")
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / "populated.json"

    def out(line: str) -> None:
        print(line, flush=True)

    from flowbus import log as flog
    flog.configure("console", "warning")
    rt = await runtime(args.backend, data_dir)
    try:
        if not marker.exists():
            out(f"populating {n:,} documents over {ENTITIES} entities ({args.backend}, {data_dir})…")
            t = time.perf_counter()
            await populate(rt, n, out)
            marker.write_text(json.dumps({"documents": n, "seconds": round(time.perf_counter() - t)}))
        async with rt.store.transaction() as tx:
            docs = await tx.fetchval("SELECT COUNT(*) FROM documents")
            entries = await tx.fetchval("SELECT COUNT(*) FROM journal")
        out(f"store: {docs:,} documents, {entries:,} journal entries, {ENTITIES} entities ({args.backend}; "
            f"populated in {json.loads(marker.read_text())['seconds']} s, reused by later runs)")
        results = await measure(rt, args.repeat)
        out(f"\n{'request':42s} {'p50 ms':>8s} {'p99 ms':>8s}")
        for name, values in results:
            out(f"{name:42s} {statistics.median(values):8.1f} {pct(values, 99):8.1f}")
        from flowbus.journal_verify import verify_store
        raw = raw_sha256_rate()
        rss_before = rss_mb()
        with Peak() as peak:
            report = await verify_store(rt.store, jobs=args.jobs)
        rate = report.verified / report.seconds
        out(f"\njournal verify: {report.verified:,} entries in {report.seconds:.1f} s = {rate:,.0f} entries/s; raw "
            f"SHA-256 of 200-byte messages here: {raw:,.0f}/s; ratio {rate / raw:.2f} (target ≥ 0.25); "
            f"{len(report.breaks)} break(s)")
        out(f"peak RSS during verify: {peak.peak:.0f} MB (before: {rss_before:.0f} MB; process max "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; target < 200 MB)")
        with Peak() as peak:
            report = await verify_store(rt.store, since=True, jobs=args.jobs)
        out(f"journal verify --since: {report.verified:,} new entries verified, {report.skipped:,} skipped "
            f"(checkpoints) in {report.seconds:.2f} s")
    finally:
        await rt.close()


if __name__ == "__main__":
    asyncio.run(main())
