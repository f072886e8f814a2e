"""Store and Tx: the seam for relational state.

SQL is written once with ``$1, $2…`` placeholders in the subset both SQLite and PostgreSQL
understand (TEXT, BIGINT, INTEGER, DOUBLE PRECISION; JSON as TEXT; timestamps as ISO-8601
TEXT, which sorts).  ``Tx.dialect`` is there for the rare statement that must differ
(``FOR UPDATE``).  Migrations are ``migrations/NNN_name.sql`` (both dialects),
``NNN_name.sqlite.sql`` or ``NNN_name.postgres.sql`` (one dialect), applied in order once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from flowbus.blobs.base import Health

AfterCommit = Callable[[], Awaitable[None] | None]


class Tx(Protocol):
    dialect: str  # "sqlite" | "postgres"
    # In-process hints shared by the store's transactions (e.g. the journal heads last written):
    # never trusted as such, only as the expected value of a conditional statement.
    hints: dict[str, Any]

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...

    def after_commit(self, callback: AfterCommit) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back)."""

    def before_commit(self, callback: AfterCommit) -> None:
        """Run ``callback`` inside the transaction, after the caller's block, just before COMMIT."""

    def on_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the transaction ends, committed or rolled back (before after-commit
        callbacks); for releasing what the transaction held in this process."""


class Store(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction: commits when the block exits normally, rolls back on an exception."""

    def statements(self) -> AbstractAsyncContextManager[Tx]:
        """One connection for statements that each commit on their own (no transaction around them):
        one round trip per statement on a server database.  For hot paths whose statements are
        each atomic on their own (a conditional ``UPDATE … RETURNING``, then reads).  SQLite runs
        them in its group commit without a savepoint of their own, which is cheaper and no weaker."""

    async def check(self) -> Health: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_MIGRATION = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


def migrations_for(dialect: str) -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("flowbus.store.migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if not m or (m.group(3) and m.group(3) != dialect):
            continue
        found.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: (mig.version, mig.name))


def split_statements(sql: str) -> list[str]:
    """Split a migration on ';' at line ends (our migrations hold no procedural code)."""
    out, buf = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, "
                    "version INTEGER NOT NULL, applied_at TEXT NOT NULL)")


class Where:
    """A WHERE clause built from optional criteria, with numbered placeholders.

    ``w.add("flow_id = {}", flow)`` appends the condition with ``$n`` for each value;
    ``w.sql`` is ``"WHERE … AND …"`` (empty without criteria) and ``w.args`` the values.
    """

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, template: str, *values: Any) -> None:
        self.clauses.append(template.format(*(self.arg(v) for v in values)))

    def add_in(self, column: str, values: list[Any]) -> None:
        self.clauses.append(f"{column} IN ({', '.join(self.arg(v) for v in values)})")

    @property
    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""

