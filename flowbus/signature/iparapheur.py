"""i-Parapheur 5 REST client: Keycloak password grant, then the standard API v1.

One method per endpoint flowbus uses.  Errors are typed for the engine: network failures,
timeouts and HTTP 5xx raise ``TransientError`` (retry later, nothing is lost), HTTP 4xx raise
``PermanentError`` carrying the server's own message.  The token is renewed before it expires
(refresh grant, then password grant) and once more on a 401.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from flowbus.clock import Clock, SystemClock
from flowbus.errors import PermanentError, TransientError
from flowbus.signature.premis import FolderSummary, build_draft, parse_premis

log = structlog.get_logger(__name__)

TOKEN_PATH = "/auth/realms/api/protocol/openid-connect/token"
API_PREFIX = "/api/standard/v1"
CLIENT_ID = "ipcore-web"
FOLDER_STATES = ("DRAFT", "PENDING", "LATE", "DELEGATED", "FINISHED", "REJECTED", "RETRIEVABLE")


@dataclass(frozen=True)
class UploadFile:
    """One ``documents`` part of a folder creation."""

    name: str
    content: bytes
    media_type: str
    main: bool


class _Token:
    def __init__(self, data: dict[str, Any], now: float) -> None:
        self.access = str(data["access_token"])
        self.refresh = data.get("refresh_token")
        self.expires_at = now + float(data.get("expires_in", 60))
        self.refresh_expires_at = now + float(data.get("refresh_expires_in", 0) or 0)


class IParapheurClient:
    """Talks to one i-Parapheur 5 server, as one user, on one tenant and one desk."""

    def __init__(self, base_url: str, username: str, password: str, *, tenant_id: str, desk_id: str,
                 session: aiohttp.ClientSession, verify_tls: bool = True, client_id: str = CLIENT_ID,
                 timeout: float = 60.0, clock: Clock | None = None, refresh_margin: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.tenant_id = tenant_id
        self.desk_id = desk_id
        self.session = session
        self.client_id = client_id
        self._ssl: bool | None = None if verify_tls else False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock or SystemClock()
        self._margin = refresh_margin
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never show the password
        return f"IParapheurClient({self.base_url!r}, user={self.username!r}, tenant={self.tenant_id!r})"

    # ---- authentication -------------------------------------------------------------------

    async def _grant(self, form: dict[str, str]) -> _Token:
        url = self.base_url + TOKEN_PATH
        try:
            async with self.session.post(url, data=form, ssl=self._ssl, timeout=self._timeout) as resp:
                body = await resp.read()
                if resp.status >= 500:
                    raise TransientError(f"i-Parapheur authentication failed: HTTP {resp.status} from {url}",
                                         field="url")
                if resp.status >= 400:
                    detail = _error_message(body)
                    raise PermanentError(f"i-Parapheur refused the credentials of user {self.username!r}: {detail}",
                                         field="password", hint="check the username and password of the connector")
                data = json.loads(body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransientError(f"i-Parapheur unreachable at {url}: {exc.__class__.__name__} {exc}",
                                 field="url") from exc
        except ValueError as exc:
            raise TransientError(f"i-Parapheur sent an unreadable token answer from {url}", field="url") from exc
        return _Token(data, self._clock.monotonic())

    async def token(self, *, force: bool = False) -> str:
        """A valid access token; renewed ``refresh_margin`` seconds before it expires."""
        async with self._token_lock:
            now = self._clock.monotonic()
            tok = self._token
            if tok is not None and not force and now < tok.expires_at - self._margin:
                return tok.access
            new: _Token | None = None
            if tok is not None and tok.refresh and now < tok.refresh_expires_at - self._margin:
                try:
                    new = await self._grant({"grant_type": "refresh_token", "refresh_token": tok.refresh,
                                             "client_id": self.client_id})
                except PermanentError:
                    new = None  # refresh token revoked: fall back to the password grant
            if new is None:
                new = await self._grant({"grant_type": "password", "username": self.username,
                                         "password": self._password, "client_id": self.client_id})
            self._token = new
            log.debug("iparapheur.token", user=self.username, expires_in=round(new.expires_at - now))
            return new.access

    # ---- HTTP -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                       json_body: Any = None, data: Any = None, expect: str = "json") -> Any:
        url = self.base_url + API_PREFIX + path
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.token(force=attempt == 2)}",
                       "Accept": "application/json" if expect == "json" else "*/*"}
            body = data() if callable(data) else data
            try:
                async with self.session.request(method, url, params=params, json=json_body, data=body,
                                                headers=headers, ssl=self._ssl, timeout=self._timeout) as resp:
                    content = await resp.read()
                    if resp.status == 401 and attempt == 1:
                        continue  # token expired or revoked server-side: renew once
                    if resp.status >= 500:
                        raise TransientError(f"i-Parapheur {method} {path}: HTTP {resp.status} "
                                             f"{_error_message(content)}", field="url")
                    if resp.status >= 400:
                        raise PermanentError(f"i-Parapheur {method} {path}: HTTP {resp.status} "
                                             f"{_error_message(content)}")
                    if expect == "json":
                        return json.loads(content) if content else None
                    return content
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise TransientError(f"i-Parapheur {method} {path} failed: {exc.__class__.__name__} {exc}",
                                     field="url") from exc
            except ValueError as exc:
                raise TransientError(f"i-Parapheur {method} {path}: unreadable JSON answer") from exc
        raise PermanentError(f"i-Parapheur {method} {path}: HTTP 401 even with a fresh token for user "
                             f"{self.username!r}", field="username", hint="the user may lack rights on this desk")

    def _desk(self, suffix: str = "") -> str:
        return f"/tenant/{self.tenant_id}/desk/{self.desk_id}{suffix}"

    # ---- typology -------------------------------------------------------------------------

    async def list_tenants(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/tenant", params={"size": 100}))["content"]

    async def list_desks(self) -> list[dict[str, Any]]:
        return (await self._request("GET", f"/tenant/{self.tenant_id}/desk", params={"size": 100}))["content"]

    async def list_types(self) -> list[dict[str, Any]]:
        return (await self._request("GET", f"/tenant/{self.tenant_id}/types", params={"size": 100}))["content"]

    async def list_subtypes(self, type_id: str) -> list[dict[str, Any]]:
        path = f"/tenant/{self.tenant_id}/types/{type_id}/subtypes"
        return (await self._request("GET", path, params={"size": 100}))["content"]

    async def creation_allowed_types(self) -> list[dict[str, Any]]:
        return (await self._request("GET", self._desk("/types/creation-allowed"), params={"size": 100}))["content"]

    async def creation_allowed_subtypes(self, type_id: str) -> list[dict[str, Any]]:
        path = self._desk(f"/types/{type_id}/subtypes/creation-allowed")
        return (await self._request("GET", path, params={"size": 100}))["content"]

    # ---- folders --------------------------------------------------------------------------

    async def create_folder(self, name: str, type_: str, subtype: str, files: list[UploadFile], *,
                            metadata: dict[str, str] | None = None, due_date: str | None = None,
                            auto_start: bool = False) -> dict[str, Any]:
        """POST the PREMIS draft and the documents; returns ``{"id","name","dueDate","metadata"}``."""
        if not any(f.main for f in files):
            raise PermanentError("an i-Parapheur folder needs a main document", field="input")
        premis = build_draft(name, type_, subtype, [(f.name, f.main) for f in files], metadata=metadata,
                             due_date=due_date)

        def form() -> aiohttp.FormData:  # rebuilt per attempt: a FormData is consumed once sent
            fd = aiohttp.FormData()
            fd.add_field("folder", premis, filename="premis.xml", content_type="application/xml")
            for f in files:
                fd.add_field("documents", f.content, filename=f.name, content_type=f.media_type)
            return fd

        return await self._request("POST", self._desk("/folder"), params={"autoStart": str(auto_start).lower()},
                                   data=form)

    async def list_folders(self, state: str, *, type_id: str | None = None, subtype_id: str | None = None,
                           page: int = 0, size: int = 10, sort: str | None = None) -> dict[str, Any]:
        """One Spring page of the desk's folders in ``state``."""
        if state not in FOLDER_STATES:
            raise PermanentError(f"unknown folder state {state!r}", hint=f"one of {', '.join(FOLDER_STATES)}")
        params: dict[str, Any] = {"page": page, "size": size}
        if type_id:
            params["typeId"] = type_id
        if subtype_id:
            params["subtypeId"] = subtype_id
        if sort:
            params["sort"] = sort
        return await self._request("GET", self._desk(f"/{state}"), params=params)

    async def iter_folders(self, state: str, *, size: int = 100, max_pages: int = 50) -> AsyncIterator[dict]:
        for page in range(max_pages):
            answer = await self.list_folders(state, page=page, size=size)
            for item in answer.get("content", []):
                yield item
            if answer.get("last", True):
                return

    async def find_folder(self, name: str, states: tuple[str, ...] = ("DRAFT", "RETRIEVABLE", "PENDING", "LATE",
                                                                        "FINISHED", "REJECTED")) -> dict | None:
        """The desk's folder called ``name`` in any of ``states``, or None (used before creating)."""
        for state in states:
            async for item in self.iter_folders(state):
                if item.get("name") == name:
                    return {**item, "state": state}
        return None

    async def premis_xml(self, folder_id: str) -> bytes:
        return await self._request("GET", self._desk(f"/folder/{folder_id}/premis"), expect="bytes")

    async def premis(self, folder_id: str) -> FolderSummary:
        return parse_premis(await self.premis_xml(folder_id))

    async def zip(self, folder_id: str) -> bytes:
        return await self._request("GET", self._desk(f"/folder/{folder_id}/zip"), expect="bytes")

    async def delete_folder(self, folder_id: str) -> None:
        await self._request("DELETE", self._desk(f"/folder/{folder_id}"), expect="bytes")

    async def task_action(self, folder_id: str, task_id: str, action: str, *, public_annotation: str | None = None,
                          private_annotation: str | None = None, metadata: dict[str, str] | None = None) -> None:
        """PUT ``…/task/{taskId}/{action}`` (start, visa, seal, reject, …) with annotations and metadata."""
        body = {"publicAnnotation": public_annotation, "privateAnnotation": private_annotation,
                "metadata": dict(metadata or {})}
        await self._request("PUT", self._desk(f"/folder/{folder_id}/task/{task_id}/{action}"), json_body=body,
                            expect="bytes")

    async def start_folder(self, folder_id: str, *, public_annotation: str | None = None,
                           metadata: dict[str, str] | None = None) -> FolderSummary:
        """Start a draft the way Pastell does: read the PREMIS, take the START task, start it."""
        summary = await self.premis(folder_id)
        task = summary.start_task_id
        if task is None:
            raise PermanentError(f"i-Parapheur folder {folder_id} has no START task to start", field="folder_id")
        await self.task_action(folder_id, task, "start", public_annotation=public_annotation, metadata=metadata)
        return summary


def _error_message(content: bytes) -> str:
    """The server's message from a Spring error or a Keycloak error body."""
    try:
        data = json.loads(content)
    except ValueError:
        return content[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        for key in ("message", "error_description", "error"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]
