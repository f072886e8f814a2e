"""Security headers on every response, set just before it is sent (``on_response_prepare``, so streamed downloads get them too): pages get a Content-Security-Policy allowing only this origin's scripts and styles (no inline script or style anywhere in the templates) and no framing; every other response (files, JSON) a policy that runs nothing; no sniffing, no referrer (secure-mail links carry tokens), and HSTS when people reach flowbus over HTTPS. A response that sets a policy itself (the Mermaid diagram page, an inline PDF preview, the secure-mail pages) keeps it."""

from __future__ import annotations

from aiohttp import web

from flowbus import forwarded

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# the vendored Mermaid writes a <style> element into each diagram it draws: only that page allows it
DIAGRAM_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
# anything that is not one of our pages (a file, JSON): nothing in it runs, nothing frames it
NOT_A_PAGE = "default-src 'none'; frame-ancestors 'none'; sandbox"
# a PDF shown inside one of our pages (document preview, the signer's viewer)
FRAMED_PDF = {"Content-Security-Policy": "default-src 'none'; object-src 'self'; frame-ancestors 'self'",
              "X-Frame-Options": "SAMEORIGIN"}
HSTS = "max-age=31536000"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    html = (headers.get("Content-Type") or response.content_type or "").startswith("text/html")
    headers.setdefault("Content-Security-Policy", POLICY if html else NOT_A_PAGE)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if forwarded.is_https(request):  # over plain HTTP a browser ignores it anyway
        headers.setdefault("Strict-Transport-Security", HSTS)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(on_prepare)


__all__ = ["DIAGRAM_POLICY", "FRAMED_PDF", "NOT_A_PAGE", "POLICY", "setup"]
