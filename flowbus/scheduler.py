"""Scheduled work inside the server (no cron): each job runs once per period across every process (the first process to claim the period in ``scheduled_runs`` runs it), or in each process for per-process jobs.

A period is named by a slot key (``every(900)``: the quarter hour; ``daily_at(7)``: the Paris day
once 7 h has passed), so a process that starts late still runs the period it missed, and two
processes never run the same period. Each run is written with its outcome, shown in the console's
operations page; a failed run is logged at error level and retried at the next period.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time as clock_time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import structlog

from flowbus.clock import isoformat

log = structlog.get_logger(__name__)
Slot = Callable[[datetime], str]
TICK = 5.0  # seconds between two looks at the jobs
KEEP_RUNS = timedelta(days=30)  # scheduled_runs rows older than this are removed by the purge job


def every(seconds: int) -> Slot:
    """One period per ``seconds`` (aligned on the epoch)."""
    return lambda now: f"{int(now.timestamp()) // seconds}"


def daily_at(hour: int) -> Slot:
    """One period per day, starting at ``hour`` o'clock Paris time."""
    from flowbus.web.french import PARIS

    def slot(now: datetime) -> str:
        local = now.astimezone(PARIS)
        day = local.date() if local.time() >= time(hour) else local.date() - timedelta(days=1)
        return day.isoformat()
    return slot


@dataclass(frozen=True)
class Job:
    name: str
    slot: Slot
    run: Callable[[Any], Awaitable[Any]]  # (runtime) → a short result for the record (count, text or None)
    label: str  # French, for the operations page
    shared: bool = True  # once per period over every process; False: in each process
    timeout: float = 600.0
    describe: Callable[[Any], str] = str  # the result in French words, for the operations page


class Scheduler:
    def __init__(self, rt: Any, jobs: list[Job], *, tick: float = TICK) -> None:
        self.rt, self.jobs, self.tick = rt, jobs, tick
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._last: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()

    async def run_due(self) -> list[str]:
        """Run every job whose period this process has not seen yet (and, for shared jobs, that no other
        process has claimed); returns the names of the jobs run."""
        now = self.rt.clock.now()
        ran = []
        for job in self.jobs:
            slot = job.slot(now)
            if self._last.get(job.name) == slot:
                continue
            self._last[job.name] = slot
            if job.shared and not await self._claim(job, slot, now):
                continue
            await self._run(job, slot)
            ran.append(job.name)
        return ran

    async def _claim(self, job: Job, slot: str, now: datetime) -> bool:
        async with self.rt.store.transaction() as tx:
            return bool(await tx.execute(
                "INSERT INTO scheduled_runs (job, slot, process, started_at, outcome) VALUES ($1, $2, $3, $4, "
                "'running') ON CONFLICT DO NOTHING", job.name, slot, self.process, isoformat(now)))

    async def _run(self, job: Job, slot: str) -> None:
        started = clock_time.monotonic()
        outcome, detail = "done", None
        try:
            async with asyncio.timeout(job.timeout):
                result = await job.run(self.rt)
            detail = None if result is None else job.describe(result)[:500]
            log.info("scheduler.ran", job=job.name, slot=slot, result=detail,
                     seconds=round(clock_time.monotonic() - started, 3))
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the next period tries again
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:500]
            log.error("scheduler.failed", job=job.name, slot=slot, error=detail, exc_info=True)
        if job.shared:
            async with self.rt.store.transaction() as tx:
                await tx.execute("UPDATE scheduled_runs SET outcome = $3, detail = $4, finished_at = $5 "
                                 "WHERE job = $1 AND slot = $2", job.name, slot, outcome, detail,
                                 isoformat(self.rt.clock.now()))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while: say so, go on
                log.warning("scheduler.tick_failed", error=str(exc))
            await asyncio.sleep(self.tick)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        self.rt.on_close(self.stop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def last_runs(tx: Any, jobs: list[Job]) -> list[dict[str, Any]]:
    """The last recorded run of each shared job (one indexed read per job), for the operations page."""
    out = []
    for job in jobs:
        if not job.shared:
            continue
        row = await tx.fetchrow("SELECT * FROM scheduled_runs WHERE job = $1 ORDER BY started_at DESC LIMIT 1",
                                job.name)
        out.append({"job": job, "run": row})
    return out


async def purge_runs(tx: Any, now: datetime) -> int:
    return await tx.execute("DELETE FROM scheduled_runs WHERE started_at < $1", isoformat(now - KEEP_RUNS))


__all__ = ["Job", "Scheduler", "daily_at", "every", "last_runs", "purge_runs"]
