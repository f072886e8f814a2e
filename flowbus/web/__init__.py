"""French HTML pages (no SQL here): admin console, signer inbox, archivist search, secure-mail recipient page."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

_env: Environment | None = None


def env() -> Environment:
    global _env
    if _env is None:
        _env = Environment(loader=PackageLoader("flowbus.web", "templates"),
                           autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
        from flowbus.web import french
        french.install(_env)
    return _env


def render(template: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> web.Response:
    html = env().get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=headers)
