"""Security headers on every French page: a Content-Security-Policy allowing only this origin's scripts
(no inline script anywhere in the templates), no framing by other sites, no sniffing, no referrer sent
elsewhere.  A page that sets a stricter policy itself (secure-mail recipient pages, signer documents)
keeps it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

PAGES = ("/admin", "/compte", "/connexion", "/deconnexion", "/mot-de-passe", "/parapheur", "/archives", "/sso")
# styles: the vendored Mermaid writes <style> into the diagrams it draws, the signer pages carry theirs
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin"}


@web.middleware
async def security_headers_middleware(request: web.Request,
                                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                      ) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith(PAGES):
            _apply(exc)
        raise
    if request.path.startswith(PAGES) and not response.prepared:
        _apply(response)
    return response


def _apply(response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
