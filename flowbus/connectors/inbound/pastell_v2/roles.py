"""``GET /api/v2/role``: the roles a caller may give, as Pastell lists them (``role``, ``libelle``)."""

from __future__ import annotations

from aiohttp import web

from flowbus.connectors.inbound.pastell_v2 import rights
from flowbus.connectors.inbound.pastell_v2.answers import answer, pastell, who
from flowbus.people.access import ROLE_LABELS, ROLES


async def list_roles(request: web.Request) -> web.Response:
    """Pastell's ``getAuthorizedRoleToDelegate``, which needs ``role:lecture`` somewhere: an administrator
    (of the platform or of a collectivité) gives any of our three roles on what they administer."""
    if not rights.holds_somewhere(who(request), "role:lecture"):
        raise rights.refused_everywhere("role:lecture")
    return answer([{"role": r, "libelle": ROLE_LABELS[r]} for r in reversed(ROLES)])


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v2/role", pastell(list_roles))
