"""Engine benchmark: documents/s through a 4-step flow of instant test connectors, and step-to-step
latency p50/p99 at a steady 100 documents/s — on the embedded backend and on PostgreSQL + RabbitMQ + S3.

    .venv/bin/python bench/bench_engine.py [--documents 2000] [--rate 100] [--seconds 10] [--warmup 2]
                                           [--entities 1] [--worker-processes 0]

Targets (2-core machine): ≥ 500 documents/s embedded; p99 step-to-step latency < 50 ms at 100 documents/s.
Step-to-step latency: from the commit that enters a step (its message is published) to the moment
a worker starts that step, measured in the steady state that follows a warm-up at the same rate
(``--warmup`` seconds: a new runtime prepares its statements on each pooled connection).  The CPU spent per document by this process, PostgreSQL and RabbitMQ,
and how busy the whole machine was, are printed too: when the machine is saturated below the
offered rate, the latency measured there is queueing, so it is measured again at half the
throughput measured in the same run.  By default the steps run in this process, as in ``flowbus
serve``; ``--worker-processes N`` runs them in N processes as ``flowbus serve --role worker`` (scale-out
only), their CPU counted apart.  A pure-Python reference (``python_reference``) is printed before
and after: this machine's speed varies a lot from hour to hour, and runs compare once divided by it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Backends, CpuMeter, configure_quiet_logs, python_reference  # noqa: E402


def config(tmp: Path) -> Path:
    cfg = tmp / "bench-config"
    (cfg / "flows").mkdir(parents=True, exist_ok=True)
    (cfg / "connectors").mkdir(exist_ok=True)
    (cfg / "connectors" / "c.yml").write_text(
        "instances:\n  - {id: instant, family: notify, kind: test, entity: null, settings: {}}\n")
    (cfg / "flows" / "four.yml").write_text(textwrap.dedent("""\
        id: four
        label: "Quatre étapes"
        description: "Banc d'essai"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - {id: s1, label: "1", family: notify, connector: instant}
          - {id: s2, label: "2", family: notify, connector: instant}
          - {id: s3, label: "3", family: notify, connector: instant}
          - {id: s4, label: "4", family: notify, connector: instant}
        """))
    return cfg


async def _entities(rt, name: str, count: int) -> list[str]:
    from flowbus.api.entities import create_entity
    return [(await create_entity(rt, name=f"{name} {i}", siren=None, parent=None, actor_name="bench")).id
            for i in range(count)]


async def _create(rt, entity_ids: list[str], n: int) -> list[str]:
    """``n`` documents, spread over the entities in turn (each entity has its own journal chain)."""
    from flowbus import documents
    ids = []
    for i in range(n):
        doc = await documents.create_document(rt, entity_id=entity_ids[i % len(entity_ids)], flow_id="four",
                                              fields={"title": f"d{i}"}, actor="bench")
        ids.append(doc.id)
    return ids


async def _done_count(rt, ids: list[str]) -> int:
    async with rt.store.transaction() as tx:
        return int(await tx.fetchval("SELECT COUNT(*) FROM documents WHERE state = 'done' AND entity_id IN "
                                     f"({', '.join(f'${i + 1}' for i in range(len(ids)))})", *ids))


async def _wait_done(rt, entity_ids: list[str], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await _done_count(rt, entity_ids) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await _done_count(rt, entity_ids)}/{n} documents done after {timeout}s")
        await asyncio.sleep(0.2)


def _worker_process(values: dict, conn) -> None:
    """A worker process (``flowbus serve --role worker``): opens the same backends, runs steps from
    "go" to "stop", then sends back its step-to-step latencies."""
    async def run() -> None:
        from flowbus.app import build
        from flowbus.settings import Settings
        configure_quiet_logs()
        rt = await build(Settings(_env_file=None, **values), migrate=False)
        from flowbus.app import freeze_startup_objects
        freeze_startup_objects()
        loop = asyncio.get_running_loop()
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)
        await rt.engine.start_workers()
        while await loop.run_in_executor(None, conn.recv) == "reset":  # until "stop"
            rt.engine.stats["latencies"].clear()
        await rt.engine.stop()
        conn.send(rt.engine.stats["latencies"])
        await rt.close()
    asyncio.run(run())


class Workers:
    """``count`` worker processes beside this one, or none: then this process runs the steps."""

    def __init__(self, rt, count: int) -> None:
        self.rt, self.count, self.procs, self.conns = rt, count, [], []

    async def __aenter__(self) -> "Workers":
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        for _ in range(self.count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_process, args=(self.rt.bench_values, child), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(parent)
        loop = asyncio.get_running_loop()
        for conn in self.conns:
            await loop.run_in_executor(None, conn.recv)  # "ready": its runtime is open
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def start(self) -> None:
        if not self.procs:
            await self.rt.engine.start_workers()
        for conn in self.conns:
            conn.send("go")

    def reset(self) -> None:
        """Forget the latencies measured so far (those of the warm-up)."""
        self.rt.engine.stats["latencies"].clear()
        for conn in self.conns:
            conn.send("reset")

    async def stop(self) -> list[float]:
        if not self.procs:
            await self.rt.engine.stop()
            return list(self.rt.engine.stats["latencies"])
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        for conn in self.conns:
            conn.send("stop")
        for conn in self.conns:
            latencies += await loop.run_in_executor(None, conn.recv)
        return latencies

    async def __aexit__(self, *exc) -> None:
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


async def throughput(backends: Backends, kind: str, n: int, workers: int, entities: int, procs: int) -> float:
    from flowbus import documents
    rt = await backends.runtime(kind, config_dir=config(backends.tmp), workers=workers)
    ents = await _entities(rt, "Bench", entities)
    ids = await _create(rt, ents, n)
    for chunk in range(0, n, 200):  # queue every first step, then let the workers run
        await asyncio.gather(*(documents.run_action(rt, d, "start", actor="bench") for d in ids[chunk:chunk + 200]))
    async with Workers(rt, procs) as pool:
        meter = CpuMeter(pool.pids)
        meter.start()
        await pool.start()
        await _wait_done(rt, ents, n, timeout=600)
        meter.stop()
        await pool.stop()
    print(f"{kind:9s} {meter.report(n, 'document')}", flush=True)
    return n / meter.wall


async def _offer(rt, ids: list[str], rate: float) -> None:
    """Start the documents at ``rate`` per second (as the API would, one request every 1/rate s)."""
    from flowbus import documents
    interval = 1.0 / rate
    t0 = time.perf_counter()
    pending = []
    for i, doc_id in enumerate(ids):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(documents.run_action(rt, doc_id, "start", actor="bench")))
    await asyncio.gather(*pending)


async def latency(backends: Backends, kind: str, rate: float, seconds: float, workers: int,
                  entities: int, procs: int, warmup: float) -> tuple[float, float, int, CpuMeter]:
    rt = await backends.runtime(kind, config_dir=config(backends.tmp), workers=workers)
    ents = await _entities(rt, "Latence", entities)
    warm = await _create(rt, ents, int(rate * warmup))
    n = int(rate * seconds)
    ids = await _create(rt, ents, n)
    async with Workers(rt, procs) as pool:
        await pool.start()
        # a server that has just started prepares its statements on each new pooled connection, opens
        # channels…: measured is the steady state that follows
        await _offer(rt, warm, rate)
        await _wait_done(rt, ents, len(warm), timeout=300)
        pool.reset()
        meter = CpuMeter(pool.pids)
        meter.start()
        await _offer(rt, ids, rate)
        await _wait_done(rt, ents, len(warm) + n, timeout=300)
        meter.stop()
        lat = sorted(await pool.stop())
    return statistics.median(lat) * 1000, lat[max(0, int(len(lat) * 0.99) - 1)] * 1000, len(lat), meter


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2, help="seconds offered at the rate before measuring")
    parser.add_argument("--workers", type=int, default=64, help="concurrent step runs per worker (FLOWBUS_WORKERS)")
    parser.add_argument("--backends", default="embedded,scaleout")
    parser.add_argument("--entities", type=int, default=1,
                        help="documents spread over this many entities (collectivités), each with its own journal chain")
    parser.add_argument("--worker-processes", type=int, default=0,
                        help="scale-out only: run the steps in this many worker processes (flowbus serve --role "
                             "worker) instead of in the process that creates the documents")
    args = parser.parse_args()
    configure_quiet_logs()
    print(f"machine reference before: {python_reference():.0f} k rounds/s (pure Python, bench/_common.py)", flush=True)
    backends = Backends()
    try:
        for kind in args.backends.split(","):
            procs = args.worker_processes if kind == "scaleout" else 0
            rate = await throughput(backends, kind, args.documents, args.workers, args.entities, procs)
            print(f"{kind:9s} 4-step flow, instant connectors: {rate:8.1f} documents/s "
                  f"({rate * 4:.0f} steps/s, {args.documents} documents, {args.entities} entities)", flush=True)
            rates = [args.rate]
            if rate < 2 * args.rate:
                # offered 100/s beyond about half of what the machine sustains, the latency measured is
                # queueing; measure it also at a rate this machine carries with room to spare
                rates.append(max(1.0, round(rate / 2)))
            for offered in rates:
                p50, p99, samples, meter = await latency(backends, kind, offered, args.seconds, args.workers,
                                                         args.entities, procs, args.warmup)
                print(f"{kind:9s} step-to-step latency at {offered:.0f} documents/s: p50 {p50:.1f} ms, "
                      f"p99 {p99:.1f} ms ({samples} steps after a {args.warmup:g} s warm-up; "
                      f"machine {meter.machine_busy * 100:.0f}% busy)",
                      flush=True)
    finally:
        await backends.close()
    print(f"machine reference after: {python_reference():.0f} k rounds/s", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
