"""Télétransmission benchmark, figures and ratios measured in the same run:

* ACTES archive build (act + 10 annexes of 1 MB) per second, and its ratio to a bare tar.gz of the same bytes;
* ``pes inspect`` on a PES_Aller of 50 PJ of 1 MB (gzip+base64, ISO-8859-1): MB/s, ratio to a bare lxml parse;
* acts posted then acknowledged through the connector against the simulator over HTTP: acts/s,
  ratio to bare aiohttp GETs on the same simulator (its test-connexion endpoint).

    .venv/bin/python bench/bench_tdt.py [--acts 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import structlog
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowbus.clock import ManualClock  # noqa: E402
from flowbus.connectors.base import ConnectorInstance, StepContext  # noqa: E402
from flowbus.connectors.tdt import actes as A  # noqa: E402
from flowbus.connectors.tdt.helios import encode_pj, inspect_pes  # noqa: E402
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator, _tiny_pdf  # noqa: E402
from flowbus.connectors.tdt.steps import TdtActesConnector  # noqa: E402
from flowbus.models import Document, FileRef  # noqa: E402

SAMPLE = ROOT / ".." / "shared" / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


def bench_archive(rounds: int = 10) -> None:
    annex = b"%PDF-1.4\n" + os.urandom(1024 * 1024)
    acte = A.Acte(1, (7, 1), date(2026, 1, 2), "DEL_BENCH", "Bench", A.ActeFile("d.pdf", annex, "99_DE"),
                  tuple(A.ActeFile(f"a{i}.pdf", annex, "99_DE") for i in range(10)))
    em = A.Emetteur("123456789", "034", adresses_retour=("a@b.fr",))
    t0 = time.perf_counter()
    for i in range(rounds):
        A.build_archive(acte, em, classification_date=date(2019, 4, 18), on=date(2026, 1, 5), serial=i + 1)
    ours = (time.perf_counter() - t0) / rounds
    t0 = time.perf_counter()
    for _ in range(rounds):
        A.tar_gz([(f"f{i}", annex) for i in range(11)])
    bare = (time.perf_counter() - t0) / rounds
    print(f"ACTES archive (11 MB): {1 / ours:.1f} archives/s, {ours * 1000:.0f} ms each; "
          f"bare tar.gz {bare * 1000:.0f} ms; ratio {ours / bare:.2f}")


def bench_pes(n_pj: int = 50) -> None:
    text = SAMPLE.read_bytes().decode("iso-8859-1")
    payload = os.urandom(1024 * 1024)
    blocks = "".join(f'<PJ><Contenu><Fichier MIMEType="application/pdf">{encode_pj(payload)}</Fichier></Contenu>'
                     f'<IdUnique V="PJ{i:05d}"/><NomPJ V="f{i}.pdf"/></PJ>' for i in range(n_pj))
    data = text.replace("</EnTetePES_PJ>", "</EnTetePES_PJ>" + blocks).encode("iso-8859-1")
    t0 = time.perf_counter()
    index = inspect_pes(data)
    ours = time.perf_counter() - t0
    assert index.nb_pj == n_pj
    t0 = time.perf_counter()
    etree.fromstring(data, parser=etree.XMLParser(huge_tree=True))
    bare = time.perf_counter() - t0
    mb = len(data) / 1e6
    print(f"pes inspect ({mb:.0f} MB, {n_pj} PJ decoded): {mb / ours:.0f} MB/s, {ours * 1000:.0f} ms; "
          f"bare lxml parse {bare * 1000:.0f} ms; ratio {ours / bare:.1f}")


class _Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def put(self, chunks, *, max_size=None):
        import hashlib
        from flowbus.models import BlobRef
        buf = b"".join([c async for c in chunks])
        key = hashlib.sha256(buf).hexdigest()
        self.data[key] = buf
        return BlobRef(key, key, len(buf))

    async def read(self, key):
        return self.data[key]


class _Runtime:
    def __init__(self, store, blobs, clock, http) -> None:
        self.store, self.blobs, self.clock, self.http, self.flows = store, blobs, clock, http, {}


async def bench_connector(n: int, concurrency: int) -> None:
    from flowbus.blobs.base import put_bytes
    from flowbus.store.sqlite import SQLiteStore
    clock = ManualClock()
    sim = S2lowSimulator(clock=clock, delays={"ar": timedelta(hours=1)})
    url = await sim.start()
    tmp = Path(tempfile.mkdtemp(prefix="flowbus-bench-tdt-"))
    store = SQLiteStore(tmp / "s.db")
    await store.open()
    await store.migrate()
    pdf = _tiny_pdf("bench")
    async with aiohttp.ClientSession() as http:
        rt = _Runtime(store, _Blobs(), clock, http)
        inst = ConnectorInstance("tdt", "tdt-actes", "s2low", None, {"url": url})
        conn = TdtActesConnector(inst, rt)
        blob = await put_bytes(rt.blobs, pdf)
        docs = [Document(f"d{i}", "e", "f", "running",
                         {"numero_interne": f"B{i:05d}", "date_decision": "2026-01-02", "nature": 1,
                          "classification": "7.1", "objet": "bench"}, 1, clock.now(), clock.now(), "tdt", None,
                         (FileRef(f"d{i}", "acte", 0, "d.pdf", "application/pdf", blob.size, blob.sha256, blob.key,
                                  clock.now()),)) for i in range(n)]
        sem = asyncio.Semaphore(concurrency)

        def ctx(doc, data):
            return StepContext(rt, doc, "f", "tdt", {}, inst, 1, f"{doc.id}:tdt:1", dict(data), clock.now(),
                               structlog.get_logger("bench"))

        async def run(doc):
            async with sem:
                return await conn.start(ctx(doc, {}))

        await conn.classification("e")
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(run(d) for d in docs))
        clock.advance(hours=2)

        async def chk(doc, out):
            async with sem:
                return await conn.check(ctx(doc, out.data))

        done = await asyncio.gather(*(chk(d, o) for d, o in zip(docs, outs)))
        ours = time.perf_counter() - t0
        assert all(o.status == "done" for o in done) and sim.count("post_acte") == n
        requests = sum(sim.calls.values()) - 1  # post, status, bordereau per act (minus the classification)

        async def bare(_):
            async with sem:
                async with http.get(f"{url}/api/test-connexion.php") as r:
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(bare(i) for i in range(requests)))
        base = time.perf_counter() - t0
    await sim.stop()
    await store.close()
    print(f"connector ↔ simulator: {n} acts posted and acknowledged in {ours:.2f} s = {n / ours:.0f} acts/s "
          f"({requests} requests, SQLite records); {requests} bare GETs {base:.2f} s; ratio {ours / base:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--acts", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    bench_archive()
    bench_pes()
    asyncio.run(bench_connector(args.acts, args.concurrency))


if __name__ == "__main__":
    main()
