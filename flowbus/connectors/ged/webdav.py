"""GED into a WebDAV server (Nextcloud, Alfresco, SharePoint…): MKCOL for folders, PUT for files.

RFC 4918: MKCOL answers 201 when created, 405 when the collection already exists and 409
when a parent is missing (so parents are created first, one segment at a time).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp

from flowbus.blobs.base import Health
from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import STRICT, OutboundPolicy, client_session


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class WebdavTarget:
    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 session: aiohttp.ClientSession | None = None, timeout: float = 120,
                 outbound: OutboundPolicy = STRICT) -> None:
        self.base = url.rstrip("/")
        self._headers = {"Authorization": _basic(username, password or "")} if username else {}
        self._session = session
        self._own = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._known_dirs: set[str] = set()
        self._outbound = outbound

    def _url(self, path: str) -> str:
        return f"{self.base}/{quote(path)}" if path else self.base + "/"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(self._outbound, timeout=self._timeout)
            self._own = True
        return self._session

    async def _request(self, method: str, path: str, **kwargs) -> int:
        url = self._url(path)
        try:
            headers = {**self._headers, **kwargs.pop("headers", {})}
            async with self.session.request(method, url, headers=headers, **kwargs) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"WebDAV server {self.base} unreachable ({method} {path}): {exc}") from exc
        if status in (401, 403):
            raise PermanentError(f"WebDAV server refused {method} {path} (HTTP {status})", field="username",
                                 hint="check the WebDAV login and password and the account's rights")
        if status >= 500 or status == 423:
            raise TransientError(f"WebDAV server answered HTTP {status} to {method} {path}")
        return status

    async def make_dirs(self, path: str) -> None:
        current = ""
        for segment in [s for s in path.split("/") if s]:
            current = f"{current}/{segment}" if current else segment
            if current in self._known_dirs:
                continue
            status = await self._request("MKCOL", current + "/")
            if status not in (200, 201, 405):
                raise PermanentError(f"WebDAV MKCOL {current} answered HTTP {status}", field="url",
                                     hint="check the WebDAV URL points at a collection")
            self._known_dirs.add(current)

    async def exists(self, path: str) -> bool:
        status = await self._request("PROPFIND", path, headers={"Depth": "0"})
        return status in (200, 207)

    async def write(self, path: str, chunks: AsyncIterator[bytes], size: int, media_type: str) -> None:
        status = await self._request("PUT", path, data=chunks,
                                     headers={"Content-Type": media_type, "Content-Length": str(size)})
        if status not in (200, 201, 204):
            raise PermanentError(f"WebDAV PUT {path} answered HTTP {status}", field="url")

    def location(self, path: str) -> str:
        return self._url(path)

    async def check(self) -> Health:
        try:
            status = await self._request("PROPFIND", "", headers={"Depth": "0"})
        except (TransientError, PermanentError) as exc:
            return Health(False, f"WebDAV {self.base}: {exc}", "check the URL, the login and the network")
        ok = status in (200, 207)
        return Health(ok, f"WebDAV {self.base} answered HTTP {status}",
                      None if ok else "the URL must name an existing WebDAV collection")

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
