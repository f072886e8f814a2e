"""Failed authentications at every door (API keys, Pastell, sign-in, secure mail, parapheur), limited per source address and per identity in the store, so every API process shares the count.

One row per (door, key) in ``auth_limits`` (migration 071): a failure counter over a fixed window
and the time the key is refused until.  A key is ``address:<ip>`` (an IPv6 address counts for its
/64, which one subscriber usually holds whole) or ``identity:<login, key id, recipient…>``.
The address limit is the lower one, so one address alone never makes an identity refuse its owner:
a right credential from another address keeps working.  Each failure is journaled on the platform's
chain (``auth.failed``), and the moment a key becomes refused too (``auth.blocked``); attempts
refused while blocked write nothing.

The source address is the client as ``flowbus.forwarded`` tells it: the TCP peer, or behind one of the
operator's trusted proxies (``FLOWBUS_TRUSTED_PROXIES``) the address it forwards; a header such as
``X-Forwarded-For`` from anyone else is never believed.

Two ways to use it:

* a low-entropy secret (a person's password, a secure-mail link password): ``retry_after`` before
  checking it, so a blocked address learns nothing, then ``failed`` when it is wrong;
* a high-entropy secret (API key, link token): ``failed`` only when it is wrong — a right key is never
  slowed down and costs no extra read, a wrong one is answered 429 once its address is blocked.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from flowbus.clock import isoformat, parse_iso
from flowbus.errors import FlowbusError, Unauthorized
from flowbus.people import audit
from flowbus.store.base import Tx

log = structlog.get_logger(__name__)

PURGE_CHANCE = 0.02  # one failure in fifty also deletes the rows whose window and block are long over
PURGE_AFTER = timedelta(days=1)


class TooManyAttempts(FlowbusError):
    """Too many failed authentications from this address (or for this identity): answered 429 with Retry-After."""

    status = 429
    title = "Trop de tentatives"
    type_slug = "too-many-attempts"

    def __init__(self, retry_after: int, *, field: str | None = None) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(f"Trop de tentatives d'authentification infructueuses : réessayez dans {minutes} minute(s).",
                         field=field, hint=f"Retry-After: {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """How many failures a key may make in ``window`` before it is refused for ``block``."""

    address_max: int = 8
    identity_max: int = 30
    window: timedelta = timedelta(minutes=15)
    block: timedelta = timedelta(minutes=15)

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        base = cls()
        return cls(address_max=int(getattr(settings, "auth_address_max", base.address_max)),
                   identity_max=int(getattr(settings, "auth_identity_max", base.identity_max)),
                   window=timedelta(seconds=float(getattr(settings, "auth_window_seconds",
                                                          base.window.total_seconds()))),
                   block=timedelta(seconds=float(getattr(settings, "auth_block_seconds",
                                                         base.block.total_seconds()))))


def source_address(request: Any) -> str:
    """The address a request comes from, as counted: the client (flowbus.forwarded: the TCP peer, or the address a
    trusted proxy forwards), an IPv6 client by its /64."""
    from flowbus.forwarded import client_address
    raw = client_address(request) or "inconnue"
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _keys(limits: Limits, address: str, identity: str | None) -> list[tuple[str, int]]:
    keys = [(f"address:{address}", limits.address_max)]
    if identity:
        keys.append((f"identity:{identity.strip().lower()[:200]}", limits.identity_max))
    return keys


async def _wait(tx: Tx, door: str, keys: list[tuple[str, int]], now: datetime) -> int:
    names = [k for k, _ in keys] + [keys[0][0]] * (2 - len(keys))
    rows = await tx.fetch("SELECT blocked_until FROM auth_limits WHERE door = $1 AND (key = $2 OR key = $3) "
                          "AND blocked_until > $4", door, names[0], names[1], isoformat(now))
    if not rows:
        return 0
    until = max(parse_iso(r["blocked_until"]) for r in rows)
    return max(1, int((until - now).total_seconds() + 0.999))


async def retry_after(rt: Any, door: str, address: str, identity: str | None = None) -> int:
    """Seconds before ``address`` (or ``identity``) may try ``door`` again; 0: now."""
    limits = Limits.from_settings(rt.settings)
    async with rt.store.transaction() as tx:
        return await _wait(tx, door, _keys(limits, address, identity), rt.clock.now())


async def failed(rt: Any, door: str, address: str, identity: str | None = None, *, journal: bool = True,
                 **detail: Any) -> int:
    """Count one failure (journaled unless ``journal`` is False); return the seconds the caller must now wait.

    0 means this failure is answered as usual (401); more means 429 with ``Retry-After``.  Never call it
    inside another transaction of the same store."""
    limits = Limits.from_settings(rt.settings)
    now = rt.clock.now()
    keys = _keys(limits, address, identity)
    reached: list[str] = []
    async with rt.store.transaction() as tx:
        wait = await _wait(tx, door, keys, now)
        if wait:
            return wait  # already refused: nothing more is written
        for key, maximum in keys:
            count = await tx.fetchval(
                "INSERT INTO auth_limits (door, key, window_start, failures) VALUES ($1, $2, $3, 1) "
                "ON CONFLICT (door, key) DO UPDATE SET "
                "failures = CASE WHEN auth_limits.window_start < $4 THEN 1 ELSE auth_limits.failures + 1 END, "
                "window_start = CASE WHEN auth_limits.window_start < $4 THEN $3 ELSE auth_limits.window_start END "
                "RETURNING failures", door, key, isoformat(now), isoformat(now - limits.window))
            if int(count) >= maximum:
                reached.append(key)
        until = now + limits.block
        if reached:
            for key in reached:
                await tx.execute("UPDATE auth_limits SET blocked_until = $3 WHERE door = $1 AND key = $2",
                                 door, key, isoformat(until))
        actor = f"adresse:{address}"
        if journal:
            await audit.record(tx, actor=actor, kind="auth.failed", at=now, door=door, address=address,
                               identity=identity, **detail)
        if reached:
            await audit.record(tx, actor=actor, kind="auth.blocked", at=now, door=door, address=address,
                               identity=identity, keys=reached, until=isoformat(until))
        if random.random() < PURGE_CHANCE:
            await purge(tx, now)
    if reached:
        log.warning("auth.blocked", door=door, address=address, identity=identity, keys=reached)
        return int(limits.block.total_seconds())
    log.info("auth.failed", door=door, address=address, identity=identity)
    return 0


T = TypeVar("T")


async def counted(rt: Any, door: str, address: str, identity: str | None, attempt: Awaitable[T]) -> T:
    """Await ``attempt`` (a credential check); an ``Unauthorized`` is counted against ``address`` and ``identity``
    (and journaled), and becomes ``TooManyAttempts`` once either is past its limit."""
    try:
        return await attempt
    except Unauthorized as exc:
        wait = await failed(rt, door, address, identity, reason=exc.message)
        if wait:
            raise TooManyAttempts(wait, field="Authorization") from None
        raise


async def purge(tx: Tx, now: datetime) -> int:
    """Delete the rows whose window ended a day ago and that refuse nothing any more."""
    return await tx.execute("DELETE FROM auth_limits WHERE window_start < $1 AND (blocked_until IS NULL OR "
                            "blocked_until < $2)", isoformat(now - PURGE_AFTER), isoformat(now))
