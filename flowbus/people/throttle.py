"""Failed sign-ins: the account locks after too many wrong passwords; each address is slowed down, then refused.

The account lock is stored (every process sees it); the per-address limit is kept in this process
(a sliding window), enough to make guessing from one address slow whatever the login tried.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timedelta

from flowbus.clock import isoformat
from flowbus.people import audit
from flowbus.people.accounts import User
from flowbus.store.base import Tx

MAX_FAILURES = 10  # wrong passwords in a row before the account locks
LOCK_FOR = timedelta(minutes=15)
ADDRESS_WINDOW = 600.0  # seconds
ADDRESS_MAX = 30  # failures per address in the window before every attempt is refused


class AddressLimiter:
    """Per-address sliding window of failures (one per process)."""

    def __init__(self, window: float = ADDRESS_WINDOW, maximum: int = ADDRESS_MAX) -> None:
        self.window, self.maximum = window, maximum
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        q = self._failures.setdefault(address, deque())
        horizon = time.monotonic() - self.window
        while q and q[0] < horizon:
            q.popleft()
        return q

    def retry_after(self, address: str) -> int:
        """Seconds before this address may try again (0: now)."""
        q = self._recent(address)
        if len(q) < self.maximum:
            return 0
        return max(1, int(q[0] + self.window - time.monotonic()) + 1)

    def failed(self, address: str) -> None:
        self._recent(address).append(time.monotonic())
        if len(self._failures) > 10_000:  # forget the quietest addresses
            for key in [k for k, v in self._failures.items() if not v][:5000]:
                del self._failures[key]


def is_locked(user: User, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


async def wrong_password(tx: Tx, user: User, now: datetime) -> bool:
    """Count a wrong password; lock the account at the limit. True when this attempt locked it."""
    failures = user.failed_sign_ins + 1
    if failures >= MAX_FAILURES:
        await tx.execute("UPDATE users SET failed_sign_ins = 0, locked_until = $2 WHERE id = $1", user.id,
                         isoformat(now + LOCK_FOR))
        await audit.record(tx, actor=f"user:{user.login}", kind="user.locked", at=now, failures=failures,
                           until=isoformat(now + LOCK_FOR))
        return True
    await tx.execute("UPDATE users SET failed_sign_ins = $2 WHERE id = $1", user.id, failures)
    return False
