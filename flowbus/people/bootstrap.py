"""The platform's first administrator: created once, reached by a single-use sign-in link printed on the server."""

from __future__ import annotations

from typing import Any

from flowbus.people import accounts, links
from flowbus.people.access import EVERY_ENTITY, Grant

FIRST_LOGIN = "admin"


async def ensure_first_admin(rt: Any) -> str | None:
    """Create the first platform administrator if nobody has an account; return its sign-in link (else None)."""
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        if await tx.fetchval("SELECT id FROM users LIMIT 1") is not None:
            return None
        user = await accounts.create(tx, login=FIRST_LOGIN, name="Administrateur de la plateforme",
                                     email="admin@flowbus.invalid", actor="flowbus-init", now=now,
                                     must_change_password=False)
        await accounts.grant(tx, user, Grant(EVERY_ENTITY, "admin"), actor="flowbus-init", now=now)
        token = await links.issue(tx, user.id, "first", now)
    return links.url(rt.settings.base_url, token)
