"""Failed sign-ins: a person's account locks after too many wrong passwords in a row (stored: every process sees it).

The limits per source address and per identity of every door are flowbus.people.limits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flowbus.clock import isoformat
from flowbus.people import audit
from flowbus.people.accounts import User
from flowbus.store.base import Tx

MAX_FAILURES = 10  # wrong passwords in a row before the account locks
LOCK_FOR = timedelta(minutes=15)


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
