"""What every console page shares: the signed-in person, the menu their rights open, rendering with the CSRF token and messages, refusals in French.

A console page handler::

    async def people_page(request):
        who = await console.signed_in(request)             # or a redirect to /connexion
        console.require_platform_admin(request, who)      # or: await console.require_entity_role(...)
        async with console.runtime(request).store.transaction() as tx:
            ...
        return await console.page(request, "console_people.html", who=who, people=people)

Templates extend ``console_base.html`` (blocks ``title``, ``head``, ``content``); every form that
POSTs carries ``<input type="hidden" name="csrf" value="{{ csrf }}">`` (the middleware in
``flowbus.web.session`` refuses it otherwise).  After a POST, ``raise console.done(url, "message")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.people import access
from flowbus.people.access import Principal
from flowbus.web import render
from flowbus.web.session import csrf_token, signed_in

__all__ = ["signed_in", "page", "done", "failed", "forbid", "require_platform_admin", "require_entity_role",
           "administered_entities", "runtime", "is_entity_admin"]


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str
    current: bool


# (path, label, who sees it: "all" | "entity-admin" | "platform")
NAV: list[tuple[str, str, str]] = [
    ("/admin/", "Documents", "all"),
    ("/admin/collectivites", "Collectivités", "entity-admin"),
    ("/admin/personnes", "Personnes", "entity-admin"),
    ("/admin/cles", "Clés d'API", "entity-admin"),
    ("/admin/connecteurs", "Connecteurs", "entity-admin"),
    ("/admin/flux", "Flux", "all"),
    ("/admin/carnet", "Carnet d'adresses", "all"),
    ("/admin/journal", "Journal", "entity-admin"),
    ("/admin/operations", "Exploitation", "platform"),
    ("/archives/", "Archives", "all"),
]


def runtime(request: web.Request) -> Any:
    return request.app[RUNTIME]


def is_entity_admin(who: Principal) -> bool:
    """Administrator of at least one entity (or of the platform)."""
    return any(g.role == "admin" and g.flows is None for g in who.grants)


def _routes(app: web.Application) -> set[str]:
    return {r.canonical for r in app.router.resources()}


def nav(request: web.Request, who: Principal) -> list[NavItem]:
    known = _routes(request.app)
    items = []
    for href, label, audience in NAV:
        if href not in known:
            continue  # a console part this installation does not serve
        if audience == "platform" and not who.is_platform_admin:
            continue
        if audience == "entity-admin" and not is_entity_admin(who):
            continue
        current = request.path == href or (href != "/admin/" and request.path.startswith(href.rstrip("/") + "/"))
        items.append(NavItem(href, label, current))
    return items


async def page(request: web.Request, template: str, *, who: Principal, status: int = 200, **ctx: Any) -> web.Response:
    """Render a console page for ``who``: menu, CSRF token, and the message/error of the last action."""
    return render(template, status=status, who=who, nav=nav(request, who), csrf=csrf_token(request),
                  flash_message=request.query.get("message"), flash_error=request.query.get("error"), **ctx)


def done(url: str, message: str | None = None, *, error: str | None = None) -> web.HTTPSeeOther:
    """Where to go after a POST, with a message (role=status) or an error (role=alert) shown there."""
    sep = "&" if "?" in url else "?"
    if message:
        url += f"{sep}message={quote(message)}"
    elif error:
        url += f"{sep}error={quote(error)}"
    return web.HTTPSeeOther(url)


def failed(url: str, error: str) -> web.HTTPSeeOther:
    return done(url, error=error)


def forbid(request: web.Request, who: Principal, reason: str) -> web.HTTPForbidden:
    html = render("console_forbidden.html", who=who, nav=nav(request, who), csrf=csrf_token(request),
                  reason=reason).text
    return web.HTTPForbidden(text=html, content_type="text/html")


def require_platform_admin(request: web.Request, who: Principal) -> None:
    if not who.is_platform_admin:
        raise forbid(request, who, "Cette page est réservée aux administrateurs de la plateforme.")


async def require_entity_role(request: web.Request, who: Principal, entity_id: str, role: str = "admin",
                              flow_id: str | None = None) -> str:
    """``who``'s role on the entity (for ``flow_id``'s documents), or a French refusal."""
    async with runtime(request).store.transaction() as tx:
        have = await access.role_on(tx, who, entity_id, flow_id)
    if not access.has(have, role):
        raise forbid(request, who, f"Vos droits ne permettent pas cette action : il faut être "
                                   f"« {access.ROLE_LABELS[role]} » de cette collectivité.")
    return have  # type: ignore[return-value]


async def administered_entities(request: web.Request, who: Principal) -> list[str] | None:
    """Entities ``who`` administers, sub-entities included (None: every entity)."""
    if who.is_platform_admin:
        return None
    async with runtime(request).store.transaction() as tx:
        return (await access.scope(tx, who, "admin")).entity_ids
