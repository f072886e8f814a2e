"""Administrative actions in the journal: who, what, before and after — never a secret's value.

An action on an entity goes to that entity's chain; an action on the platform itself (people,
platform-wide rights and keys) goes to the platform's own chain, ``PLATFORM``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowbus import journal
from flowbus.store.base import Tx

PLATFORM = "platform"  # the journal chain of actions that belong to no entity
MASK = "••••"
_SECRET_HINTS = ("password", "secret", "token", "p12", "private_key", "api_key", "key_hash", "password_hash")


def mask(data: Any, secret_keys: frozenset[str] | set[str] = frozenset()) -> Any:
    """``data`` with every secret value replaced by « •••• » (declared keys and names that look secret)."""
    if isinstance(data, dict):
        return {k: (MASK if (k in secret_keys or any(h in k.lower() for h in _SECRET_HINTS)) and v not in (None, "")
                    else mask(v, secret_keys)) for k, v in data.items()}
    if isinstance(data, list):
        return [mask(v, secret_keys) for v in data]
    return data


async def record(tx: Tx, *, actor: str, kind: str, at: datetime, entity_id: str | None = None,
                 before: Any = None, after: Any = None, secret_keys: frozenset[str] = frozenset(),
                 **data: Any) -> None:
    """Journal an administrative action (``kind`` like ``admin.user.created``) in the caller's transaction."""
    payload: dict[str, Any] = {k: mask(v, secret_keys) for k, v in data.items()}
    if before is not None:
        payload["before"] = mask(before, secret_keys)
    if after is not None:
        payload["after"] = mask(after, secret_keys)
    await journal.append(tx, entity_id=entity_id or PLATFORM, actor=actor, kind=kind, at=at, data=payload)
