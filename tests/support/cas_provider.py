"""A CAS 3.0 server for tests, over real HTTP: /login issues a service ticket for one user and redirects to the
service; /p3/serviceValidate answers as Apereo CAS does (XML in the CAS namespace), each ticket valid once and only
for the service it was issued to."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from aiohttp import web

NS = "http://www.yale.edu/tp/cas"


@dataclass
class CasServer:
    user: str = "camille"
    tickets: dict[str, str] = field(default_factory=dict)  # ticket → service
    redirects: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/cas/login", self.login)
        self.app.router.add_get("/cas/p3/serviceValidate", self.validate)
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/cas"  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def login(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        if not service:
            return web.Response(text="<html><body>Connexion CAS</body></html>", content_type="text/html")
        ticket = f"ST-{secrets.token_hex(12)}-cas"
        self.tickets[ticket] = service
        target = f"{service}{'&' if '?' in service else '?'}ticket={ticket}"
        self.redirects.append(target)
        raise web.HTTPFound(target)

    def _failure(self, code: str, text: str) -> web.Response:
        body = (f'<cas:serviceResponse xmlns:cas="{NS}"><cas:authenticationFailure code="{code}">{escape(text)}'
                "</cas:authenticationFailure></cas:serviceResponse>")
        return web.Response(text=body, content_type="application/xml")

    async def validate(self, request: web.Request) -> web.Response:
        ticket, service = request.query.get("ticket", ""), request.query.get("service", "")
        if not ticket or not service:
            return self._failure("INVALID_REQUEST", "'service' and 'ticket' parameters are both required")
        expected = self.tickets.pop(ticket, None)  # a ticket is validated once
        if expected is None:
            return self._failure("INVALID_TICKET", f"Ticket '{ticket}' not recognized")
        if expected != service:
            return self._failure("INVALID_SERVICE", f"Ticket '{ticket}' does not match supplied service")
        body = (f'<cas:serviceResponse xmlns:cas="{NS}"><cas:authenticationSuccess><cas:user>{escape(self.user)}'
                "</cas:user><cas:attributes><cas:email>camille@collectivite.fr</cas:email></cas:attributes>"
                "</cas:authenticationSuccess></cas:serviceResponse>")
        return web.Response(text=body, content_type="application/xml")
