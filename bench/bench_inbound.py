"""Month-end payslips: a zip of N payslip PDFs (default 13,000) through POST /api/v1/inbound/rh/batches.

Prints, measured in the same run: zip size, the time to answer 202 (upload + manifest and
per-entry checks), the time until every valid entry is a started document, documents/s, the
per-entry report of the malformed entries, and the same pipeline for single POST /api/v1/inbound/rh
requests (to compare one batch entry with one HTTP request).

    python bench/bench_inbound.py [N] [--backend embedded|scaleout] [--singles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "connectors"))

from _common import Backends, configure_quiet_logs  # noqa: E402

from flowbus.api import create_app  # noqa: E402
from flowbus.api.auth import create_api_key  # noqa: E402
from flowbus.models import Entity  # noqa: E402
from flowbus.store import repo  # noqa: E402

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def build_zip(n: int, bad: dict[int, str]) -> bytes:
    from test_inbound_domains import payslip_zip  # the test suite's builder: same manifest format
    return payslip_zip(n, bad=bad)


async def bench_glaneur(rt, inbox: Path, n: int) -> None:
    import json

    from flowbus.connectors.inbound.glaneur import Glaneur, GlaneurConfig
    inbox.mkdir(parents=True)
    for i in range(n):
        (inbox / f"d{i:05d}.pdf").write_bytes(PDF + f"% {i}\n".encode())
        (inbox / f"d{i:05d}.json").write_text(json.dumps({"entity": "ville", "flow": "rh-paie", "fields": {
            "agent_nom": f"Glane {i}", "agent_email": f"g{i}@example.org", "periode": "2026-03"},
            "files": {"bulletin": f"d{i:05d}.pdf"}}))
    glaneur = Glaneur(rt, GlaneurConfig(inbox, name="bench", settle=0, concurrency=8))
    t0 = time.perf_counter()
    created = 0
    while any(p.is_file() for p in inbox.iterdir()):
        created += len((await glaneur.scan_once()).created)
    elapsed = time.perf_counter() - t0
    print(f"glaneur: {n} sidecar units → {created} documents in {elapsed:.1f} s, {created / elapsed:.0f} units/s")
    assert created == n


async def main(n: int, backend: str, singles: int, glaneur_n: int = 0) -> None:
    from aiohttp import web
    configure_quiet_logs()
    backends = Backends()
    try:
        rt = await backends.runtime(backend)
        await rt.engine.start_workers()
        app = create_app(rt)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rt.settings.port).start()
        async with rt.store.transaction() as tx:
            await repo.insert_entity(tx, Entity("ville", "Ville", "213400013", None, rt.clock.now()))
        _key, secret = await create_api_key(rt, name="paie", roles={"ville": "editor"})
        url = f"http://127.0.0.1:{rt.settings.port}"
        bad = {17: "email", n // 2: "missing-file", n - 3: "matricule"}
        t0 = time.perf_counter()
        data = build_zip(n, bad)
        t_zip = time.perf_counter() - t0
        async with aiohttp.ClientSession(base_url=url, headers={"Authorization": f"Bearer {secret}"},
                                         timeout=aiohttp.ClientTimeout(total=3600)) as http:
            form = aiohttp.FormData()
            form.add_field("entity", "ville")
            form.add_field("archive", data, filename="paie.zip", content_type="application/zip")
            t0 = time.perf_counter()
            r = await http.post("/api/v1/inbound/rh/batches", data=form)
            body = await r.json()
            t_accept = time.perf_counter() - t0
            assert r.status == 202, body
            while True:
                batch = await (await http.get(body["status_url"])).json()
                if batch["status"] == "done":
                    break
                await asyncio.sleep(0.5)
            t_done = time.perf_counter() - t0
            async with rt.store.transaction() as tx:
                docs = await tx.fetchval("SELECT COUNT(*) FROM documents WHERE flow_id = 'rh-paie'")
                started = await tx.fetchval("SELECT COUNT(*) FROM documents WHERE flow_id = 'rh-paie' "
                                            "AND state <> 'draft'")
            print(f"backend: {backend}")
            print(f"zip: {n} payslips, {len(data) / 1e6:.1f} MB, built in {t_zip:.1f} s")
            print(f"202 answer (upload + manifest + per-entry checks): {t_accept:.2f} s "
                  f"({t_accept / n * 1000:.3f} ms/entry)")
            print(f"rejected by position: {[(e['position'], e['field']) for e in body['errors']]}")
            print(f"all valid entries processed: {t_done:.1f} s; documents: {docs} (started {started}); "
                  f"{batch['accepted'] / t_done:.0f} documents/s")
            assert docs == n - len(bad) == batch["accepted"]
            # single requests, for comparison
            t0 = time.perf_counter()
            for i in range(singles):
                form = aiohttp.FormData()
                for k, v in {"entity": "ville", "type": "bulletin", "agent_nom": f"Seul{i}", "agent_email":
                             f"seul{i}@example.org", "periode": "2026-03"}.items():
                    form.add_field(k, v)
                form.add_field("document", PDF, filename=f"s{i}.pdf", content_type="application/pdf")
                r = await http.post("/api/v1/inbound/rh", data=form)
                assert r.status == 201, await r.text()
            t_single = time.perf_counter() - t0
            if singles:
                print(f"single POST /api/v1/inbound/rh: {singles} in {t_single:.1f} s, "
                      f"{singles / t_single:.0f} documents/s; batch/single throughput ratio "
                      f"{(batch['accepted'] / t_done) / (singles / t_single):.2f}")
        if glaneur_n:
            await bench_glaneur(rt, backends.tmp / "glaneur", glaneur_n)
        await runner.cleanup()
    finally:
        await backends.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=13000)
    parser.add_argument("--backend", default="embedded", choices=["embedded", "scaleout"])
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--glaneur", type=int, default=2000, help="sidecar units for the glaneur figure (0: skip)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.backend, args.singles, args.glaneur))
