"""PostgreSQL state store (asyncpg pool)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from flowbus.blobs.base import Health
from flowbus.clock import isoformat, utcnow
from flowbus.errors import BackendError, Conflict
from flowbus.store.base import MIGRATIONS_TABLE, AfterCommit, migrations_for, split_statements

_MIGRATION_LOCK = 0x666C6F77  # advisory lock id ("flow"), so concurrent `init`s don't race


class PostgresTx:
    dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection, hints: dict[str, Any]) -> None:
        self._conn = conn
        self.hints = hints
        self._after: list[AfterCommit] = []
        self._before: list[AfterCommit] = []
        self._end: list[Callable[[], None]] = []

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status = await self._conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"constraint violated: {exc}") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise Conflict(f"constraint violated: {exc}") from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(sql, *args)
        return None if row is None else dict(row)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    def after_commit(self, callback: AfterCommit) -> None:
        self._after.append(callback)

    def before_commit(self, callback: AfterCommit) -> None:
        """Run ``callback`` at the end of the transaction, just before it commits (inside it)."""
        self._before.append(callback)

    def on_end(self, callback: Callable[[], None]) -> None:
        self._end.append(callback)

    def _run_end(self) -> None:
        while self._end:
            self._end.pop()()

    async def _run_before(self) -> None:
        while self._before:
            result = self._before.pop(0)()
            if asyncio.iscoroutine(result):
                await result

    async def _run_after(self) -> None:
        for cb in self._after:
            result = cb()
            if asyncio.iscoroutine(result):
                await result


class PostgresStore:
    dialect = "postgres"

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 20) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._sizes = (min_size, max_size)
        self.hints: dict[str, Any] = {}  # see Tx.hints

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=self._sizes[0], max_size=self._sizes[1],
                                                   reset=_keep_session)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BackendError(f"cannot connect to PostgreSQL ({_safe_dsn(self.dsn)}): {exc}",
                               hint="check FLOWBUS_DATABASE_URL and that the server is running") from exc

    async def migrate(self) -> list[str]:
        await self.open()
        assert self._pool is not None
        applied: list[str] = []
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(MIGRATIONS_TABLE)
                done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
                for mig in migrations_for("postgres"):
                    if mig.name in done:
                        continue
                    async with conn.transaction():
                        for stmt in split_statements(mig.sql):
                            await conn.execute(stmt)
                        await conn.execute("INSERT INTO schema_migrations (name, version, applied_at) "
                                           "VALUES ($1, $2, $3)", mig.name, mig.version, isoformat(utcnow()))
                    applied.append(mig.name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            tx = PostgresTx(conn, self.hints)
            try:
                async with conn.transaction():
                    yield tx
                    await tx._run_before()
            finally:
                tx._run_end()
        await tx._run_after()

    @asynccontextmanager
    async def statements(self) -> AsyncIterator[PostgresTx]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            tx = PostgresTx(conn, self.hints)
            try:
                yield tx
                await tx._run_before()
            finally:
                tx._run_end()
        await tx._run_after()

    async def check(self) -> Health:
        try:
            await self.open()
            async with self.transaction() as tx:
                version = await tx.fetchval("SHOW server_version")
            return Health(True, f"PostgreSQL {version} at {_safe_dsn(self.dsn)}")
        except Exception as exc:  # noqa: BLE001 - reported to the operator
            return Health(False, f"PostgreSQL at {_safe_dsn(self.dsn)}: {exc}",
                          "démarrez PostgreSQL ou corrigez FLOWBUS_DATABASE_URL (postgresql://utilisateur@hôte:5432/base)")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without the default ``RESET ALL; UNLISTEN *; CLOSE ALL; …`` round trip.

    flowbus never changes session state (no SET, LISTEN, cursors or session advisory locks
    outside ``migrate``, which releases its lock itself); asyncpg still rolls back a transaction
    left open before calling this.  Saves one round trip per transaction on the hot path.
    """


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return dsn
