"""Who is signed in on the French pages: the person behind the session cookie, a CSRF token on every form, the sign-in and first-password redirects.

Every POST to a page under ``PROTECTED`` must carry the ``csrf`` form field (or the
``X-CSRF-Token`` header): the session's token, or before sign-in the pre-session token this module
puts in its own cookie.  Handlers call ``signed_in(request)`` and get a ``Principal`` or a redirect.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus import forwarded
from flowbus.api import RUNTIME
from flowbus.api.auth import csrf_matches, session_principal
from flowbus.people import sessions
from flowbus.people.access import Principal
from flowbus.web import render

PRESESSION = "flowbus_csrf"
PROTECTED = ("/admin", "/archives", "/connexion", "/deconnexion", "/mot-de-passe", "/compte", "/sso")
_WHO = web.RequestKey("who", object)
_NEW_PRESESSION = web.RequestKey("new_presession", str)


def secure(request: web.Request) -> bool:
    """Cookies are Secure when people reach flowbus over HTTPS (its public URL, TLS, or a trusted proxy's word)."""
    return request.app[RUNTIME].settings.base_url.startswith("https") or forwarded.is_https(request)


def client_ip(request: web.Request) -> str:
    return forwarded.client_address(request)


async def current(request: web.Request) -> Principal | None:
    """The signed-in person, or None (read once per request)."""
    if _WHO not in request:
        request[_WHO] = await session_principal(request.app[RUNTIME], request.cookies.get(sessions.COOKIE))
    return request[_WHO]  # type: ignore[return-value]


async def signed_in(request: web.Request, *, allow_password_change: bool = False) -> Principal:
    """The signed-in person; otherwise a redirect to the sign-in page that comes back here."""
    who = await current(request)
    if who is None:
        target = request.path_qs if request.method == "GET" else request.path
        raise web.HTTPFound(f"/connexion?suivant={quote(target, safe='')}")
    if who.must_change_password and not allow_password_change:
        raise web.HTTPFound("/mot-de-passe/changer")
    return who


def csrf_token(request: web.Request) -> str:
    """The token a form of this page must send back."""
    who = request.get(_WHO)
    if who is not None and who.session_csrf:
        return who.session_csrf
    token = request.cookies.get(PRESESSION) or request.get(_NEW_PRESESSION)
    if not token:
        token = secrets.token_urlsafe(24)
        request[_NEW_PRESESSION] = token
    return token


def set_session_cookie(resp: web.StreamResponse, request: web.Request, token: str) -> None:
    resp.set_cookie(sessions.COOKIE, token, httponly=True, samesite="Lax", path="/", secure=secure(request))


def clear_session_cookie(resp: web.StreamResponse) -> None:
    resp.del_cookie(sessions.COOKIE, path="/")


def safe_next(value: str | None, default: str = "/admin/") -> str:
    """Only a local path: never send a person to another site after sign-in."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


async def _csrf_ok(request: web.Request) -> bool:
    given = request.headers.get("X-CSRF-Token")
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = (await request.post()).get("csrf")  # aiohttp keeps the parsed form for the handler
    if request.cookies.get(sessions.COOKIE):
        who = await current(request)
        if who is not None:
            return csrf_matches(who.session_csrf, given if isinstance(given, str) else None)
    return csrf_matches(request.cookies.get(PRESESSION), given if isinstance(given, str) else None)


@web.middleware
async def web_session_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith(PROTECTED):
        if request.method == "POST" and not await _csrf_ok(request):
            return render("csrf_refused.html", status=403)
        if request.cookies.get(sessions.COOKIE):
            await current(request)  # so that csrf_token() gives the session's token on every page
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        _keep_presession(request, exc)
        raise
    _keep_presession(request, resp)
    return resp


def _keep_presession(request: web.Request, resp: web.StreamResponse) -> None:
    token = request.get(_NEW_PRESESSION)
    if token and not resp.prepared:
        resp.set_cookie(PRESESSION, token, httponly=True, samesite="Strict", path="/", secure=secure(request))
