"""Fixtures of the bus tests: ``env`` opens buses of one kind (embedded on SQLite or PostgreSQL,
RabbitMQ) on the same durable place, and cleans them up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowbus.store.sqlite import SQLiteStore

FAST_BACKOFF = timedelta(milliseconds=20)


class BusEnv:
    """Opens buses of one kind on the same durable place (SQLite file / queue prefix)."""

    def __init__(self, kind: str, tmp: Path, amqp_url: str | None, dsn: str | None = None) -> None:
        self.kind = kind
        self.dsn = dsn
        self.tmp = tmp
        self.amqp_url = amqp_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.db = tmp / "bus.sqlite3"
        self.buses: list[Any] = []
        self.stores: list[Any] = []

    @property
    def embedded(self) -> bool:
        return self.kind.startswith("embedded")

    @property
    def location(self) -> str:
        """Where the embedded bus keeps its messages: the SQLite file or the PostgreSQL DSN."""
        return self.dsn if self.dsn else str(self.db)

    async def store(self) -> Any:
        if self.dsn:
            from flowbus.store.postgres import PostgresStore
            store: Any = PostgresStore(self.dsn)
        else:
            store = SQLiteStore(self.db)
        await store.open()
        await store.migrate()
        self.stores.append(store)
        return store

    async def open(self) -> Any:
        if self.embedded:
            from flowbus.bus.embedded import EmbeddedBus
            bus: Any = EmbeddedBus(await self.store(), lease=timedelta(seconds=1), backoff_base=FAST_BACKOFF)
        else:
            from flowbus.bus.rabbitmq import RabbitMQBus
            assert self.amqp_url
            bus = RabbitMQBus(self.amqp_url, prefix=self.prefix, backoff_base=FAST_BACKOFF)
        await bus.start()
        self.buses.append(bus)
        return bus

    async def close(self) -> None:
        names: set[str] = set()
        for bus in self.buses:
            await bus.close()
            names |= getattr(bus, "_queues", set())
        if self.kind == "rabbitmq" and self.buses:
            last = self.buses[-1]
            last._queues = names | {last.work_queue(q) for q in ("q", "big")} | {last.dead_queue("q")}
            await last.delete_queues()
        for store in self.stores:
            await store.close()


@pytest.fixture(params=["embedded", "embedded-postgres", "rabbitmq"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusEnv]:
    amqp = request.getfixturevalue("amqp_url") if request.param == "rabbitmq" else None
    dsn = request.getfixturevalue("pg_database") if request.param == "embedded-postgres" else None
    e = BusEnv(request.param, tmp_path, amqp, dsn)
    yield e
    await e.close()
