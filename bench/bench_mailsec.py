"""Secure-mail benchmark: one month of payslips (13,000, SIIM94) through config/flows/rh-paie.yml
to a local SMTP server (aiosmtpd on loopback), on the embedded backend (and scale-out on request).

    .venv/bin/python bench/bench_mailsec.py [--payslips 13000] [--workers 64] [--connections 8] [--backends embedded]

Each payslip is one document; its mailsec step sends the agent his personal link, then his
generated password in a separate message (rh-paie: ``password: generate``), so 13,000 payslips
are 26,000 SMTP messages.  Target: the 13,000 payslips sent in under 60 s on this machine.
Timed: from the first ``start`` action to the last document done (every message accepted by
the SMTP server); creating the documents and uploading their PDFs is reported, not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Backends, configure_quiet_logs  # noqa: E402


def config(tmp: Path, smtp_port: int, max_connections: int, *, baseline: bool = False) -> Path:
    cfg = tmp / ("baseline-config" if baseline else "mailsec-config")
    (cfg / "flows").mkdir(parents=True, exist_ok=True)
    (cfg / "connectors").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config" / "flows" / "rh-paie.yml", cfg / "flows" / "rh-paie.yml")
    shutil.copytree(ROOT / "config" / "mailsec", cfg / "mailsec", dirs_exist_ok=True)  # shipped payslip templates
    instances = [
        {"id": "mailsec", "family": "mailsec", "kind": "smtp", "entity": None,
         "settings": {"host": "127.0.0.1", "port": smtp_port, "starttls": False, "from_name": "SIIM94 — Paie",
                      "from_address": "paie@siim94.example.fr", "max_connections": max_connections}},
        {"id": "sae", "family": "sae", "kind": "test", "entity": None, "settings": {}},
    ]
    if baseline:  # the same flow with mailsec as an instant test connector: the engine's own cost
        instances[0] = {"id": "mailsec", "family": "mailsec", "kind": "test", "entity": None, "settings": {}}
    (cfg / "connectors" / "c.yml").write_text(yaml.safe_dump({"instances": instances}), encoding="utf-8")
    return cfg


async def _create(rt, entity_id: str, n: int) -> list[str]:
    from flowbus import documents

    async def one(i: int) -> str:
        doc = await documents.create_document(rt, entity_id=entity_id, flow_id="rh-paie", actor="bench", fields={
            "agent_nom": f"Agent {i:05d}", "agent_email": f"agent{i:05d}@agents.siim94.example.fr",
            "matricule": f"M{i:05d}", "periode": "2026-01"})

        async def pdf():
            yield b"%PDF-1.4\n% bulletin de paie " + str(i).encode() + b"\n" + b"0" * 30_000 + b"\n%%EOF\n"
        await documents.attach_file(rt, doc.id, "bulletin", filename=f"bulletin-{i:05d}.pdf",
                                    media_type="application/pdf", chunks=pdf(), actor="bench")
        return doc.id

    ids: list[str] = []
    for start in range(0, n, 5):  # S3BlobStore.put deadlocks beyond ~6 concurrent uploads (reported)
        ids += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 5))))
    return ids


async def _count(rt, entity_id: str, state: str) -> int:
    async with rt.store.transaction() as tx:
        return int(await tx.fetchval("SELECT COUNT(*) FROM documents WHERE entity_id = $1 AND state = $2",
                                     entity_id, state))


class SmtpProcess:
    """The local SMTP server (aiosmtpd) in its own process, as a real MTA would be."""

    async def __aenter__(self) -> SmtpProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flowbus.connectors.mailsec.smtp_sim", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT))
        line = (await self.proc.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        return self

    async def stats(self) -> dict:
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())

    async def __aexit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def run(backends: Backends, kind: str, n: int, workers: int, max_connections: int,
              baseline: bool = False) -> float:
    from flowbus import documents
    from flowbus.api.entities import create_entity

    async with SmtpProcess() as smtp:
        rt = await backends.runtime(kind, config_dir=config(backends.tmp, smtp.port, max_connections,
                                                            baseline=baseline), workers=workers)
        ent = await create_entity(rt, name="SIIM94", siren=None, parent=None, actor_name="bench")
        t = time.perf_counter()
        ids = await _create(rt, ent.id, n)
        print(f"{kind:9s} setup: {n} payslip documents with their PDF created in {time.perf_counter() - t:.1f} s "
              "(not timed)", flush=True)
        await rt.engine.start_workers()
        start, cpu = time.perf_counter(), time.process_time()
        for chunk in range(0, n, 200):
            await asyncio.gather(*(documents.run_action(rt, d, "start", actor="bench") for d in ids[chunk:chunk + 200]))
        queued = time.perf_counter() - start
        while (done := await _count(rt, ent.id, "done")) < n:
            if await _count(rt, ent.id, "error"):
                raise RuntimeError(f"{await _count(rt, ent.id, 'error')} documents in error")
            if time.perf_counter() - start > 900:
                raise RuntimeError(f"only {done}/{n} documents done after 900 s")
            await asyncio.sleep(0.25)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await rt.engine.stop()
        if baseline:
            print(f"{kind:9s} baseline, same flow with an instant test connector instead of mailsec: {n} documents "
                  f"in {elapsed:.1f} s = {n / elapsed:.0f} documents/s, CPU of this process {cpu * 1000 / n:.2f} ms "
                  "per document", flush=True)
            return elapsed
        stats = await smtp.stats()
        assert stats["links"] == n and stats["distinct"] == n and stats["messages"] == 2 * n, stats
        messages = stats["messages"]
        print(f"{kind:9s} {n} payslips sent in {elapsed:.1f} s (start actions queued in {queued:.1f} s): "
              f"{n / elapsed:.0f} payslips/s, {messages} SMTP messages (link + separate password) = "
              f"{messages / elapsed:.0f} messages/s (target: under 60 s → {'met' if elapsed < 60 else 'NOT met'})",
              flush=True)
        print(f"{kind:9s} CPU of this process: {cpu * 1000 / n:.2f} ms per payslip (SMTP server process not "
              f"counted); {stats['distinct']} distinct links received", flush=True)
        return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payslips", type=int, default=13_000)
    parser.add_argument("--workers", type=int, default=64, help="concurrent step runs per worker (FLOWBUS_WORKERS)")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections kept open (max_connections)")
    parser.add_argument("--backends", default="embedded")
    parser.add_argument("--baseline", type=int, default=2000, help="documents for the engine-only baseline (0: skip)")
    args = parser.parse_args()
    configure_quiet_logs()
    backends = Backends()
    try:
        for kind in args.backends.split(","):
            if args.baseline:
                base = await run(backends, kind, args.baseline, args.workers, args.connections, baseline=True)
            real = await run(backends, kind, args.payslips, args.workers, args.connections)
            if args.baseline:
                print(f"{kind:9s} ratio: mailsec step costs {real / args.payslips / (base / args.baseline):.1f}× "
                      "the engine-only time per document", flush=True)
    finally:
        await backends.close()


if __name__ == "__main__":
    asyncio.run(main())
