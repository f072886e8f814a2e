"""Sign-in to a French page with an API key, kept in an HttpOnly, SameSite=Strict cookie.

The admin console and the archivist pages use one ``ApiKeySession`` each (their own cookie,
path and login template); every request re-checks the key, so a revoked key is out at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import authenticate
from flowbus.errors import Unauthorized
from flowbus.web import render


@dataclass(frozen=True)
class ApiKeySession:
    cookie: str  # cookie name
    path: str  # "/admin": pages, cookie path, and where sign-in leads
    login_template: str

    @property
    def login_url(self) -> str:
        return f"{self.path}/connexion"

    async def key(self, request: web.Request) -> Any:
        """The signed-in API key, or a redirect to the sign-in page."""
        secret = request.cookies.get(self.cookie)
        if not secret:
            raise web.HTTPFound(self.login_url)
        try:
            return await authenticate(request.app[RUNTIME], secret)
        except Unauthorized:
            resp = web.HTTPFound(self.login_url)
            resp.del_cookie(self.cookie, path=self.path)
            raise resp from None

    async def login_form(self, request: web.Request) -> web.Response:
        return render(self.login_template, error=None)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        secret = str(form.get("api_key", "")).strip()
        try:
            await authenticate(request.app[RUNTIME], secret)
        except Unauthorized as exc:
            msg = "Cette clé a été révoquée." if "revoked" in exc.message else "Clé d'API inconnue."
            return render(self.login_template, status=401, error=msg)
        resp = web.HTTPFound(f"{self.path}/")
        resp.set_cookie(self.cookie, secret, httponly=True, samesite="Strict", path=self.path,
                        secure=request.app[RUNTIME].settings.base_url.startswith("https"))
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.HTTPFound(self.login_url)
        resp.del_cookie(self.cookie, path=self.path)
        raise resp
