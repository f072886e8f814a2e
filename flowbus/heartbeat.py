"""Processes seen alive: each API or worker process refreshes its row in ``workers`` every few seconds."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

import structlog

from flowbus.clock import isoformat

log = structlog.get_logger(__name__)
EVERY = 10.0  # seconds between two refreshes
ALIVE = timedelta(seconds=60)  # seen within this: alive
FORGET = timedelta(days=7)  # rows of processes gone for this long are removed


class Heartbeat:
    def __init__(self, rt: Any, role: str, every: float = EVERY) -> None:
        self.rt, self.role, self.every = rt, role, every
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        now = self.rt.clock.now()
        async with self.rt.store.transaction() as tx:
            if not await tx.execute("UPDATE workers SET last_seen_at = $2 WHERE id = $1", self.id, isoformat(now)):
                await tx.execute("INSERT INTO workers (id, host, pid, role, started_at, last_seen_at) "
                                 "VALUES ($1, $2, $3, $4, $5, $5)", self.id, socket.gethostname(), os.getpid(),
                                 self.role, isoformat(now))
                await tx.execute("DELETE FROM workers WHERE last_seen_at < $1", isoformat(now - FORGET))

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while; say so and go on
                log.warning("heartbeat.failed", error=str(exc))
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self.rt.on_close(self.stop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


async def seen(tx: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Processes seen in the last week, most recently seen first."""
    return await tx.fetch("SELECT * FROM workers ORDER BY last_seen_at DESC LIMIT $1", limit)
