"""Core benchmark: document creations/s over HTTP with a 100 KB file on both backend sets, with the
ratio to a trivial aiohttp endpoint measured in the same run; RSS growth while uploading 50 MB.

    .venv/bin/python bench/bench_core.py [--documents 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Backends, configure_quiet_logs, free_port  # noqa: E402

FILE = os.urandom(100 * 1024)


async def trivial_rate(n: int, concurrency: int) -> float:
    """The same request shape (JSON POST then a 100 KB multipart PUT) against endpoints that do nothing."""
    async def post(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"id": "x"}, status=201)

    async def put(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        while await part.read_chunk(256 * 1024):
            pass
        return web.json_response({}, status=201)

    app = web.Application()
    app.router.add_post("/d", post)
    app.router.add_put("/d/f", put)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
        async def one() -> None:
            r = await s.post("/d", json={"entity": "e", "flow": "demo", "fields": {"title": "x"}})
            await r.read()
            form = aiohttp.FormData()
            form.add_field("file", FILE, filename="f.pdf", content_type="application/pdf")
            r = await s.put("/d/f", data=form)
            await r.read()
        rate = await _drive(one, n, concurrency)
    await runner.cleanup()
    return rate


async def _drive(one, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def guarded() -> None:
        async with sem:
            await one()
    start = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(n)))
    return n / (time.perf_counter() - start)


async def flowbus_rate(backends: Backends, kind: str, n: int, concurrency: int) -> float:
    from conftest_like import start_server  # type: ignore[import-not-found]
    rt = await backends.runtime(kind)
    srv = await start_server(rt)
    async with srv.client() as s:
        ent = await (await s.post("/api/v1/entities", json={"name": "Bench"})).json()

        async def one() -> None:
            r = await s.post("/api/v1/documents", json={"entity": ent["id"], "flow": "demo",
                                                        "fields": {"title": "bench"}})
            doc = await r.json()
            assert r.status == 201, doc
            form = aiohttp.FormData()
            form.add_field("file", FILE, filename="f.pdf", content_type="application/pdf")
            r = await s.put(f"/api/v1/documents/{doc['id']}/files/file", data=form)
            assert r.status == 201, await r.text()
        rate = await _drive(one, n, concurrency)
    await srv.runner.cleanup()
    return rate


async def upload_rss(backends: Backends) -> float:
    """Peak RSS growth (MB) while streaming a 50 MB upload into the filesystem blob store over HTTP."""
    from conftest_like import start_server  # type: ignore[import-not-found]
    rt = await backends.runtime("embedded")
    srv = await start_server(rt)
    big = Path(backends.tmp) / "big.bin"
    with big.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(1024 * 1024))
    async with srv.client() as s:
        ent = await (await s.post("/api/v1/entities", json={"name": "RSS"})).json()
        doc = await (await s.post("/api/v1/documents", json={"entity": ent["id"], "flow": "demo",
                                                             "fields": {"title": "big"}})).json()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with big.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("file", fh, filename="big.bin", content_type="application/pdf")
            r = await s.put(f"/api/v1/documents/{doc['id']}/files/file", data=form)
            assert r.status == 201, await r.text()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await srv.runner.cleanup()
    return after - before


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    configure_quiet_logs()
    backends = Backends()
    try:
        base = await trivial_rate(args.documents, args.concurrency)
        print(f"trivial aiohttp endpoints (POST JSON + PUT 100 KB): {base:8.1f} documents/s")
        for kind in ("embedded", "scaleout"):
            rate = await flowbus_rate(backends, kind, args.documents, args.concurrency)
            print(f"flowbus {kind:9s} create + 100 KB file:             {rate:8.1f} documents/s"
                  f"  (ratio to trivial: {rate / base:.2f})")
        growth = await upload_rss(backends)
        print(f"peak RSS growth while uploading 50 MB over HTTP (embedded): {growth:.1f} MB")
    finally:
        await backends.close()


if __name__ == "__main__":
    asyncio.run(main())
