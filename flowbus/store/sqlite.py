"""SQLite state store (embedded default): WAL, serialized transactions with group commit, background checkpoints, WAL kept under a size limit."""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from flowbus.blobs.base import Health
from flowbus.clock import isoformat, utcnow
from flowbus.errors import BackendError, Conflict
from flowbus.store.base import MIGRATIONS_TABLE, AfterCommit, migrations_for, split_statements

log = structlog.get_logger(__name__)
CHECKPOINT_EVERY = 0.5  # seconds between two background WAL checkpoints
# Past this size the WAL is checkpointed and truncated (writers held for that moment), and SQLite cuts it
# back to this size whenever it rewinds it (journal_size_limit).
WAL_LIMIT = 64 * 1024 * 1024
TRUNCATE_BUSY_MS = 200  # how long a truncating checkpoint waits for another connection's readers
TRUNCATE_BACKOFF = 5.0  # seconds before trying again when a reader kept it from truncating
_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=1024)
def _translate(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class SQLiteTx:
    dialect = "sqlite"

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.hints = store.hints
        self._after: list[AfterCommit] = []
        self._before: list[AfterCommit] = []
        self._end: list[Callable[[], None]] = []

    # Inside a transaction the write lock is already held (BEGIN IMMEDIATE), so no statement can
    # wait on another process: they run inline on the event loop thread, which costs tens of
    # microseconds instead of a thread hop per statement.

    async def execute(self, sql: str, *args: Any) -> int:
        return _execute(self._store._conn, _translate(sql), args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return _fetch(self._store._conn, _translate(sql), args)

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = _fetch(self._store._conn, _translate(sql), args, 1)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

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


def _execute(conn: sqlite3.Connection, sql: str, args: tuple) -> int:
    try:
        return conn.execute(sql, args).rowcount
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"constraint violated: {exc}") from exc


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _truncate(conn: sqlite3.Connection) -> bool:
    """Copy every frame into the database file and cut the WAL to zero bytes, with this process's writers
    held; False when a reader of another connection still needs the WAL after ``TRUNCATE_BUSY_MS``.

    Not a bare TRUNCATE with a busy timeout: SQLite's busy handler sleeps for growing intervals while
    retrying the lock of the reader slot it first found in use, and a connection reading back to back
    takes that slot again within microseconds — it waits in vain.  A PASSIVE checkpoint, retried every
    few milliseconds, reads the readers' marks afresh each time: once every reader has started a
    transaction since the writers stopped, it copies everything; readers that start then read the
    database file only, so the TRUNCATE that follows has nobody to wait for."""
    deadline = time.monotonic() + TRUNCATE_BUSY_MS / 1000
    conn.execute("PRAGMA busy_timeout=20")
    try:
        while True:
            _busy, log_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log_frames == copied:
                busy, _log, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy == 0:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
    finally:
        conn.execute("PRAGMA busy_timeout=30000")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fetch(conn: sqlite3.Connection, sql: str, args: tuple, limit: int | None = None) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description or ()]
    rows = cur.fetchmany(limit) if limit else cur.fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]


class SQLiteStore:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._queued = 0  # transactions waiting for the lock (group commit joins them to the open group)
        self._group: list[asyncio.Future[None]] | None = None  # open SQLite transaction's logical members
        self._commit_scheduled = False
        # WAL checkpoints run on their own connection and thread (see _checkpoints)
        self._ckpt_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._ckpt_conn: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._wal_over = asyncio.Event()  # set by a commit that left the WAL past WAL_LIMIT
        self.hints: dict[str, Any] = {}  # see Tx.hints

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn, *args)

    async def open(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")  # savepoint journals (group commit) in memory
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the background (_checkpoints)
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")  # a rewound WAL is cut back to the limit
            conn.execute("PRAGMA busy_timeout=0")  # lock waits happen off the event loop, in _begin()
            return conn

        def connect_checkpointer(conn: sqlite3.Connection) -> sqlite3.Connection | None:
            """The checkpoints' own connection, opened and used once now, before the store serves
            anything: a connection's first read of a WAL database may lock it for a moment."""
            try:
                ckpt = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                ckpt.execute("PRAGMA synchronous=NORMAL")
                _checkpoint(ckpt)
                return ckpt
            except sqlite3.Error as exc:  # SQLite then checkpoints in COMMIT, as by default
                log.warning("sqlite.checkpointer_unavailable", path=str(self.path), error=str(exc))
                conn.execute("PRAGMA wal_autocheckpoint=1000")
                return None

        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open the SQLite database {self.path}: {exc}",
                               hint="check that FLOWBUS_DATA_DIR exists and is writable") from exc
        self._ckpt_conn = await loop.run_in_executor(self._executor, connect_checkpointer, self._conn)
        if self._ckpt_conn is not None:
            self._checkpointer = asyncio.create_task(self._checkpoints(self._ckpt_conn),
                                                     name=f"sqlite-checkpoints {self.path.name}")

    async def _checkpoints(self, conn: sqlite3.Connection) -> None:
        """Copy committed pages from the WAL into the database file every ``CHECKPOINT_EVERY`` seconds,
        on a connection and a thread of their own (the GIL is released while SQLite works).

        Left to SQLite, the COMMIT that grows the WAL past 1,000 pages does it, fsyncs included,
        on the event loop's thread.  PASSIVE never waits on readers or the writer; the WAL is
        rewound by the next write once every frame has been copied.  Durability is unchanged
        (``synchronous=NORMAL``: a commit is in the WAL; the checkpoint syncs the database file).

        Under continuous writes a PASSIVE checkpoint never catches up with the last commit, so the WAL is
        never rewound and grows without bound: once it is past ``WAL_LIMIT`` (a commit says so at once),
        the checkpointer takes the store's lock — no transaction of this process open — and runs a
        TRUNCATE checkpoint, which copies the few frames left and cuts the WAL to zero bytes.  A reader
        of another connection holding an old snapshot (a backup) keeps it from truncating: tried again
        ``TRUNCATE_BACKOFF`` seconds later, never waiting on it more than ``TRUNCATE_BUSY_MS``.
        """
        loop = asyncio.get_running_loop()
        retry_at = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wal_over.wait(), CHECKPOINT_EVERY)
            except asyncio.TimeoutError:
                pass
            self._wal_over.clear()
            try:
                if _size(self._wal) <= WAL_LIMIT or loop.time() < retry_at:
                    await loop.run_in_executor(self._ckpt_executor, _checkpoint, conn)
                else:  # past the limit: straight to the truncation, before more is written
                    if not await self._truncate_wal(conn):
                        retry_at = loop.time() + TRUNCATE_BACKOFF
                        log.warning("sqlite.wal_not_truncated", path=str(self.path), wal_bytes=_size(self._wal),
                                    limit=WAL_LIMIT, hint="another connection holds a long read (a backup?)")
            except sqlite3.Error as exc:  # e.g. disk full: logged, tried again later; commits go on in the WAL
                log.warning("sqlite.checkpoint_failed", path=str(self.path), error=str(exc))

    async def _truncate_wal(self, conn: sqlite3.Connection) -> bool:
        """TRUNCATE checkpoint with this process's writers held (the open group committed first)."""
        async with self._lock:
            if self._group is not None:
                self._commit_group()
            return await asyncio.get_running_loop().run_in_executor(self._ckpt_executor, _truncate, conn)

    async def migrate(self) -> list[str]:
        await self.open()
        applied: list[str] = []
        async with self._lock:
            def run() -> list[str]:
                conn = self._conn
                assert conn is not None
                conn.execute("PRAGMA busy_timeout=30000")  # another process may be migrating or writing
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute("PRAGMA busy_timeout=0")
                try:
                    conn.execute(MIGRATIONS_TABLE)
                    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
                    for mig in migrations_for("sqlite"):
                        if mig.name in done:
                            continue
                        for stmt in split_statements(mig.sql):
                            conn.execute(stmt)
                        conn.execute("INSERT INTO schema_migrations (name, version, applied_at) VALUES (?, ?, ?)",
                                     (mig.name, mig.version, isoformat(utcnow())))
                        applied.append(mig.name)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return applied

            return await self._run(lambda _c: run())

    def transaction(self) -> AbstractAsyncContextManager[SQLiteTx]:
        """One logical transaction.

        Group commit: logical transactions that queue up behind each other share one SQLite
        transaction, each inside its own SAVEPOINT (a failing one rolls back alone); the last
        of a group — or the 64th — commits for all.  Each caller's block returns only once its
        work is committed, and its after-commit callbacks run then.
        """
        return self._logical(atomic=True)

    def statements(self) -> AbstractAsyncContextManager[SQLiteTx]:
        """Statements that need no atomicity together: they join the group without a SAVEPOINT
        (two statements less), and if the block fails, what it already wrote stays, as with
        autocommit on PostgreSQL.  Its block still returns once its writes are committed."""
        return self._logical(atomic=False)

    @asynccontextmanager
    async def _logical(self, *, atomic: bool) -> AsyncIterator[SQLiteTx]:
        if self._conn is None:
            await self.open()
        tx = SQLiteTx(self)
        try:
            self._queued += 1
            try:
                await self._lock.acquire()
            except BaseException:
                # cancelled while queued: the group left open for us must still be committed
                self._queued -= 1
                if self._group is not None and self._queued == 0:
                    asyncio.ensure_future(self._flush_group())
                raise
            self._queued -= 1
            committed: asyncio.Future[None] | None = None
            try:
                first = self._group is None  # the group's first member needs no savepoint: it can roll back all
                savepoint = atomic and not first
                if first:
                    await self._begin()
                    self._group = []
                elif savepoint:
                    _execute(self._conn, "SAVEPOINT logical", ())
                try:
                    yield tx
                    await tx._run_before()
                except BaseException:
                    if first and atomic:
                        _execute(self._conn, "ROLLBACK", ())
                        self._group = None
                    elif savepoint:
                        _execute(self._conn, "ROLLBACK TO logical", ())
                        _execute(self._conn, "RELEASE logical", ())
                    raise
                if savepoint:
                    _execute(self._conn, "RELEASE logical", ())
                committed = asyncio.get_running_loop().create_future()
                self._group.append(committed)
            finally:
                try:
                    if self._group is not None:
                        if len(self._group) >= 64:
                            self._commit_group()
                        elif self._queued == 0 and not self._commit_scheduled:
                            # commit once the tasks that are ready now have run: those that open a
                            # transaction meanwhile join this group and share its COMMIT
                            self._commit_scheduled = True
                            asyncio.get_running_loop().call_soon(self._commit_if_idle)
                finally:
                    self._lock.release()
            await committed
        finally:
            tx._run_end()
        for cb in tx._after:
            result = cb()
            if asyncio.iscoroutine(result):
                await result

    def _commit_if_idle(self) -> None:
        self._commit_scheduled = False
        if self._group is not None and not self._lock.locked() and self._queued == 0:
            self._commit_group()
        # otherwise a transaction is running or about to: it commits the group when it ends

    async def _flush_group(self) -> None:
        async with self._lock:
            if self._group is not None:
                self._commit_group()

    def _commit_group(self) -> None:
        group, self._group = self._group or [], None
        try:
            _execute(self._conn, "COMMIT", ())
            if self._checkpointer is not None and _size(self._wal) > WAL_LIMIT:
                self._wal_over.set()  # the checkpointer truncates it now, not at its next round
        except BaseException as exc:
            try:
                _execute(self._conn, "ROLLBACK", ())
            except sqlite3.Error:
                pass
            for fut in group:
                if not fut.done():
                    fut.set_exception(BackendError(f"SQLite commit failed: {exc}"))
            if not group:
                raise
            return
        for fut in group:
            if not fut.done():
                fut.set_result(None)

    async def _begin(self) -> None:
        """Take the write lock: inline when it is free (the usual case, one process), otherwise
        wait for it off the event loop (another process — an API or a second worker — holds it)."""
        try:
            _execute(self._conn, "BEGIN IMMEDIATE", ())
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise

        def wait_for_lock(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA busy_timeout=30000")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute("PRAGMA busy_timeout=0")

        await self._run(wait_for_lock)

    async def check(self) -> Health:
        try:
            async with self.transaction() as tx:
                await tx.fetchval("SELECT 1")
            return Health(True, f"SQLite {self.path}")
        except Exception as exc:  # noqa: BLE001 - reported to the operator
            return Health(False, f"SQLite {self.path}: {exc}", "vérifiez les droits et la place libre du répertoire de données (FLOWBUS_DATA_DIR)")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._checkpointer is not None:
            task, self._checkpointer = self._checkpointer, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._conn is not None:
            if self._group is not None:
                await self._flush_group()
            conn, self._conn = self._conn, None
            await loop.run_in_executor(self._executor, conn.close)
        if self._ckpt_conn is not None:  # after any checkpoint still running on its thread
            ckpt, self._ckpt_conn = self._ckpt_conn, None
            await loop.run_in_executor(self._ckpt_executor, ckpt.close)
        self._executor.shutdown(wait=False)
        self._ckpt_executor.shutdown(wait=False)
