"""State store seam: SQLite (embedded default) and PostgreSQL, same schema, versioned migrations."""

from flowbus.store.base import Store, Tx

__all__ = ["Store", "Tx"]
