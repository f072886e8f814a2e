"""CSV export of a filtered document list: 10,000 documents streamed by the console, on both backend sets.

Prints, per backend set, the export's time, its size, and the process's RSS growth while it runs
(peak sampled every 10 ms, minus the RSS before; the client reading the stream is in the same process,
so the figure is an upper bound for the server).  Target: growth < 20 MB, whatever the list's size.
Also prints the time of one list page (50 documents) and of the counts by state on the same data.

    .venv/bin/python bench/bench_list_export.py [--documents 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Backends  # noqa: E402

TARGET_MB = 20.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class Peak:
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


async def fill(rt, n: int) -> str:
    """``n`` documents of the délibération flow in one commune (plus 500 elsewhere), written in bulk."""
    from flowbus.api.entities import create_entity
    from flowbus.store.repo import search_text
    ent = await create_entity(rt, name="Commune exportatrice", siren=None, parent=None, actor_name="bench")
    other = await create_entity(rt, name="Commune voisine", siren=None, parent=None, actor_name="bench")
    start = rt.clock.now() - timedelta(days=400)
    states = ["done"] * 8 + ["error", "waiting"]
    async with rt.store.transaction() as tx:
        for i in range(n + 500):
            fields = {"objet": f"Délibération n°{i} portant sur le budget ; « annexe » incluse", "nature": "1",
                      "numero_acte": f"DEL{i:06d}", "date_decision": "2026-11-02", "classification": "7.1"}
            at = (start + timedelta(minutes=i)).isoformat()
            await tx.execute(
                "INSERT INTO documents (id, entity_id, flow_id, state, step, last_error, fields, search_text, "
                "version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                uuid.uuid4().hex, ent.id if i < n else other.id, "deliberation", states[i % 10], None,
                "Le service ne répond pas" if states[i % 10] == "error" else None, json.dumps(fields),
                search_text(fields), 1, at, at)
    return ent.id


async def session_cookie(rt) -> str:
    from flowbus.people import accounts, sessions
    from flowbus.people.access import EVERY_ENTITY, Grant
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.create(tx, login="bench", name="Bench", email="bench@example.fr", actor="bench",
                                     now=now, password="correct-cheval-agrafe-9", must_change_password=False)
        await accounts.grant(tx, user, Grant(EVERY_ENTITY, "admin"), actor="bench", now=now)
        token, _csrf = await sessions.open_session(tx, user, method="password", ip="127.0.0.1", now=now)
    return token


async def run(kind: str, n: int) -> dict[str, float]:
    from aiohttp import web

    from flowbus.api import create_app
    from flowbus.people.sessions import COOKIE
    backends = Backends()
    try:
        rt = await backends.runtime(kind)
        entity = await fill(rt, n)
        token = await session_cookie(rt)
        runner = web.AppRunner(create_app(rt), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rt.settings.port).start()
        url = f"http://127.0.0.1:{rt.settings.port}"
        async with aiohttp.ClientSession(base_url=url, cookies={COOKIE: token}) as http:
            t = time.perf_counter()
            async with http.get(f"/admin/?entity={entity}&flow=deliberation") as r:
                assert r.status == 200, r.status
                await r.read()
            page_ms = (time.perf_counter() - t) * 1000
            before = rss_mb()
            size = 0
            tail = bytearray()
            t = time.perf_counter()
            with Peak() as peak:
                async with http.get(f"/admin/documents.csv?entity={entity}&flow=deliberation") as r:
                    assert r.status == 200, r.status
                    async for chunk in r.content.iter_chunked(64 * 1024):
                        size += len(chunk)
                        tail = (tail + chunk)[-65536:]
            seconds = time.perf_counter() - t
        await runner.cleanup()
        last = tail.decode("utf-8", "replace").strip().rsplit("\r\n", 1)[-1]
        assert "DEL000000" in last or "Délibération n°0 " in last, f"the export ends with the oldest document: {last}"
        return {"page_ms": page_ms, "seconds": seconds, "mb": size / 1e6, "growth": peak.peak - before}
    finally:
        await backends.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=10_000)
    args = parser.parse_args()
    ok = True
    for kind in ("embedded", "scaleout"):
        r = await run(kind, args.documents)
        verdict = "OK" if r["growth"] < TARGET_MB else "ABOVE TARGET"
        ok &= r["growth"] < TARGET_MB
        print(f"{kind:9s} list page (50 of {args.documents:,} + counts by state): {r['page_ms']:.0f} ms; "
              f"CSV of {args.documents:,} documents: {r['mb']:.1f} MB in {r['seconds']:.2f} s, "
              f"RSS growth {r['growth']:.1f} MB (target < {TARGET_MB:.0f} MB) {verdict}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
