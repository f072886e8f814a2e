"""Helpers shared by the benchmarks: temporary runtimes on both backend sets, loopback servers."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("FLOWBUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("FLOWBUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backends:
    """Creates runtimes for 'embedded' and 'scaleout' and cleans everything up."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="flowbus-bench-"))
        self.moto = None
        self.databases: list[str] = []
        self.runtimes: list[Any] = []

    async def runtime(self, kind: str, *, config_dir: Path | None = None, **overrides: Any) -> Any:
        """A runtime opened in this process; ``rt.bench_values`` holds its settings, so a worker
        process (``bench_engine._worker_process``) can open the same backends."""
        from flowbus.app import build
        from flowbus.settings import Settings
        values = await self.values(kind, config_dir=config_dir, **overrides)
        rt = await build(Settings(_env_file=None, **values))
        rt.bench_values = values
        from flowbus.app import freeze_startup_objects
        freeze_startup_objects()  # as flowbus serve does once started
        self.runtimes.append(rt)
        return rt

    async def values(self, kind: str, *, config_dir: Path | None = None, **overrides: Any) -> dict[str, Any]:
        """Settings for a new runtime of ``kind``: a fresh database, queue prefix and bucket on scale-out."""
        values: dict[str, Any] = {"data_dir": self.tmp / uuid.uuid4().hex[:8], "config_dir": config_dir or ROOT / "config",
                                  "log_level": "warning", "port": free_port(), "demo": True}
        if kind == "scaleout":
            import asyncpg
            name = f"flowbus_bench_{uuid.uuid4().hex[:10]}"
            conn = await asyncpg.connect(PG)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            self.databases.append(name)
            if self.moto is None:
                # moto in its own process, so its Python work does not share our GIL
                import subprocess
                import sys
                import time
                port = free_port()
                self.moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                              "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.moto_endpoint = f"127.0.0.1:{port}"
                for _ in range(100):
                    with socket.socket() as probe:
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            break
                    time.sleep(0.1)
            values.update(database_url=PG.rsplit("/", 1)[0] + f"/{name}", bus_url=AMQP,
                          bus_prefix=f"bench{uuid.uuid4().hex[:8]}", blob_backend="s3",
                          s3_endpoint=self.moto_endpoint, s3_access_key="test", s3_secret_key="test",
                          s3_bucket=f"bench-{uuid.uuid4().hex[:8]}")
        values.update(overrides)
        return values

    async def close(self) -> None:
        for rt in self.runtimes:
            await rt.close()
            purge = getattr(rt.bus, "delete_queues", None)
            if purge:
                try:
                    await purge()
                except Exception:  # noqa: BLE001
                    pass
        if self.databases:
            import asyncpg
            conn = await asyncpg.connect(PG)
            for name in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        if self.moto is not None:
            self.moto.terminate()
            self.moto.wait(10)
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)  # data dirs of the embedded runtimes


class CpuMeter:
    """CPU seconds spent, between ``start()`` and ``stop()``, by this process, by the worker processes
    whose pids are given, by the local PostgreSQL and RabbitMQ servers (processes named ``postgres``
    and ``beam.smp``, read from /proc) and by the whole machine (/proc/stat), so a benchmark can say
    where the time went and whether the machine was saturated.  Linux only; a missing /proc leaves the
    figures at zero."""

    GROUPS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}

    def __init__(self, workers: list[int] = ()) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._workers = list(workers)  # pids of worker processes, counted as "workers"
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.machine_busy = 0.0  # fraction of all cores busy
        self.wall = 0.0

    def _groups(self) -> dict[str, str]:
        return {"workers": "workers", **self.GROUPS} if self._workers else self.GROUPS

    def _sample(self) -> tuple[dict[str, dict[int, float]], float, float]:
        per: dict[str, dict[int, float]] = {name: {} for name in self._groups()}
        for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            if int(entry.name) in self._workers:
                comm = "workers"
            if comm in per:
                fields = stat[stat.rindex(")") + 2:].split()
                per[comm][int(entry.name)] = (int(fields[11]) + int(fields[12])) / self._tick
        busy = total = 0.0
        try:
            with open("/proc/stat") as f:
                cpu = [int(v) for v in f.readline().split()[1:]]
            total, busy = float(sum(cpu)), float(sum(cpu) - cpu[3] - cpu[4])  # minus idle and iowait
        except OSError:
            pass
        return per, busy, total

    def start(self) -> None:
        import time
        self._per, self._busy, self._total = self._sample()
        self._cpu0, self._t0 = time.process_time(), time.perf_counter()

    def stop(self) -> None:
        import time
        per, busy, total = self._sample()
        self.seconds = {"flowbus": time.process_time() - self._cpu0}
        for comm, label in self._groups().items():
            # a process started during the run counts from zero; one that exited is lost (rare: pools persist)
            self.seconds[label] = sum(t - self._per[comm].get(pid, 0.0) for pid, t in per[comm].items())
        self.wall = time.perf_counter() - self._t0
        self.machine_busy = (busy - self._busy) / (total - self._total) if total > self._total else 0.0

    def report(self, per: int, unit: str) -> str:
        parts = [f"{label} {secs * 1000 / per:.2f}" for label, secs in self.seconds.items() if secs > 0]
        return (f"CPU ms per {unit}: " + ", ".join(parts)
                + f"; machine {self.machine_busy * 100:.0f}% busy over {os.cpu_count()} cores")


def python_reference(rounds: int = 20_000) -> float:
    """Thousands of rounds per second of a fixed pure-Python workload (a dict built, dumped to JSON,
    parsed back and hashed, as a step does many times): this machine's speed for flowbus-like code
    at the moment of the run.  The same code runs at very different rates from one hour to the next
    on a shared virtual machine; figures of two runs compare once divided by this."""
    import hashlib
    import json
    import time
    best = 0.0
    for _ in range(3):
        start = time.process_time()
        for i in range(rounds):
            doc = {"id": f"doc-{i}", "state": "running", "step": "s2", "fields": {"title": "Délibération", "n": i}}
            text = json.dumps(doc, sort_keys=True)
            hashlib.sha256(text.encode()).hexdigest()
            json.loads(text)["fields"]["n"] += 1
        best = max(best, rounds / max(1e-9, time.process_time() - start) / 1000)
    return best


def configure_quiet_logs() -> None:
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def run(coro: Any) -> Any:
    return asyncio.run(coro)
