"""As@lae REST client, as Pastell's ``as@lae-rest`` connector uses it (pastell.md §3.4).

* authentication: HTTP basic with the login and the **SHA-256 (hex) of the password**;
* ``POST /sedaMessages`` multipart: ``seda_message`` (the ArchiveTransfer) and ``attachments``
  (the files as a zip or tar.gz);
* ``GET /sedaMessages/sequence:ArchiveTransfer/message:Acknowledgement/originOrganizationIdentification:<transferring
  agency>/originMessageIdentifier:<transfer id>``, and the same with ``message:ArchiveTransferReply``;
* ``GET /ping``, ``GET /versions``.

Errors: network failures and HTTP 5xx raise ``TransientError`` (the engine retries); a
refused login or a refused transfer (HTTP 4xx) raises ``PermanentError`` naming the setting
or the archive's message.  A message not available yet is ``None``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
import structlog

from flowbus.errors import PermanentError, TransientError

log = structlog.get_logger(__name__)


def basic_auth(login: str, password: str) -> str:
    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    return "Basic " + base64.b64encode(f"{login}:{digest}".encode()).decode()


def message_path(kind: str, transferring_agency: str, transfer_id: str) -> str:
    return (f"/sedaMessages/sequence:ArchiveTransfer/message:{kind}"
            f"/originOrganizationIdentification:{quote(transferring_agency, safe='')}"
            f"/originMessageIdentifier:{quote(transfer_id, safe='')}")


class AsalaeClient:
    """One As@lae endpoint with one account.  ``session`` is the runtime's aiohttp session."""

    def __init__(self, base_url: str, login: str, password: str, *, session: aiohttp.ClientSession,
                 timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = basic_auth(login, password)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(self, method: str, path: str, *, data=None, what: str) -> tuple[int, bytes]:
        try:
            async with self._session.request(method, self.base_url + path, data=data, timeout=self._timeout,
                                             headers={"Authorization": self._auth}) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise TransientError(f"As@lae ({self.base_url}) did not answer {what}: {exc or type(exc).__name__}",
                                 field="url") from exc
        if status >= 500:
            raise TransientError(f"As@lae answered HTTP {status} to {what}: {_message(body)}", field="url")
        if status in (401, 403):
            raise PermanentError(f"As@lae refused the login (HTTP {status}) for {what}", field="login",
                                 hint="check the connector's login and password")
        return status, body

    async def ping(self) -> None:
        status, body = await self._request("GET", "/ping", what="ping")
        if status != 200:
            raise PermanentError(f"As@lae /ping answered HTTP {status}: {_message(body)}", field="url")

    async def versions(self) -> dict:
        status, body = await self._request("GET", "/versions", what="versions")
        if status != 200:
            raise PermanentError(f"As@lae /versions answered HTTP {status}", field="url")
        return json.loads(body)

    async def send_transfer(self, manifest: bytes, attachments: Path, *, transfer_id: str) -> bool:
        """POST the transfer.  Returns False when As@lae already holds this transfer id (a resend).

        Raises:
            PermanentError: As@lae refused the transfer (HTTP 4xx), with its message.
            TransientError: network failure, HTTP 5xx.
        """
        attachments = Path(attachments)
        with attachments.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("seda_message", manifest, filename="bordereau.xml", content_type="application/xml")
            form.add_field("attachments", handle, filename=attachments.name,
                           content_type="application/zip" if attachments.suffix == ".zip" else "application/x-tar")
            status, body = await self._request("POST", "/sedaMessages", data=form, what=f"transfer {transfer_id}")
        if status == 409:
            log.info("asalae.transfer_already_received", transfer_id=transfer_id)
            return False
        if status not in (200, 201):
            raise PermanentError(f"As@lae refused transfer {transfer_id} (HTTP {status}): {_message(body)}",
                                 field="transfer")
        log.info("asalae.transfer_sent", transfer_id=transfer_id)
        return True

    async def _message(self, kind: str, transferring_agency: str, transfer_id: str) -> bytes | None:
        status, body = await self._request("GET", message_path(kind, transferring_agency, transfer_id),
                                           what=f"{kind} of {transfer_id}")
        if status == 404:
            return None  # not produced yet (As@lae's "code 7")
        if status != 200:
            raise PermanentError(f"As@lae answered HTTP {status} for the {kind} of {transfer_id}: {_message(body)}",
                                 field="transfer")
        return body

    async def acknowledgement(self, transferring_agency: str, transfer_id: str) -> bytes | None:
        return await self._message("Acknowledgement", transferring_agency, transfer_id)

    async def reply(self, transferring_agency: str, transfer_id: str) -> bytes | None:
        return await self._message("ArchiveTransferReply", transferring_agency, transfer_id)


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            return str(data.get("message") or data.get("error") or data)
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace").strip()
