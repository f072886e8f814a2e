"""As@lae simulator: the REST paths and payloads of ``asalae.py``, answering with valid SEDA 2.1 messages.

What it checks on ``POST /sedaMessages`` (as an archive would): the login (basic, SHA-256 of
the password), that ``seda_message`` is an ArchiveTransfer valid against the XSD (``xsd_dir``, or the
one shipped in ``schemas/seda``), that the transfer id is new for the
transferring agency (HTTP 409 otherwise), and that every ``Uri`` of the manifest is in
``attachments`` (zip or tar) with the announced SHA-512.  A digest mismatch is received but
rejected with reply code ``202``.

Scripting: ``outcome="accept" | "reject"`` (default) or per transfer id with ``script``
(reply code and comment), ``delays={"ack": …, "reply": …}`` counted from the reception on the
injected clock, ``fail={"send": 500}`` (every call) or ``{"send": [500]}`` (the next calls),
``down = True`` (HTTP 503 everywhere).  ``count(endpoint)`` counts answered calls.

Run it alone: ``python -m flowbus.archive.asalae_sim --port 8091 --login demo --password demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from flowbus.archive import seda
from flowbus.archive.asalae import basic_auth
from flowbus.clock import Clock, SystemClock
from flowbus.errors import PermanentError

ACCEPTED = "000"
DIGEST_MISMATCH = "202"


@dataclass
class Received:
    transfer_id: str
    transferring_agency: str
    archival_agency: str
    received_at: datetime
    manifest: bytes
    reply_code: str
    comment: str
    number: int


class AsalaeSimulator:
    """An in-process As@lae.  ``await sim.start()`` returns its base URL (127.0.0.1, free port)."""

    def __init__(self, *, login: str = "flowbus", password: str = "flowbus", clock: Clock | None = None,
                 xsd_dir: Path | None = None, outcome: str = "accept", reject_code: str = "300",
                 reject_comment: str = "Transfert refusé : l'accord de versement ne correspond pas",
                 delays: dict[str, timedelta] | None = None, fail: dict[str, int | list[int]] | None = None,
                 identifier: str = "ASALAE") -> None:
        self.login, self._auth = login, basic_auth(login, password)
        self.clock = clock or SystemClock()
        self.xsd_dir = xsd_dir
        self.outcome, self.reject_code, self.reject_comment = outcome, reject_code, reject_comment
        self.delays = {"ack": timedelta(0), "reply": timedelta(0), **(delays or {})}
        self.fail: dict[str, int | list[int]] = dict(fail or {})
        self.identifier = identifier
        self.down = False
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.transfers: dict[tuple[str, str], Received] = {}
        self.scripts: dict[str, tuple[str, str]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = web.Application(middlewares=[self._gate], client_max_size=4 * 1024 ** 3)
        self.app.router.add_get("/ping", self.h_ping)
        self.app.router.add_get("/versions", self.h_versions)
        self.app.router.add_post("/sedaMessages", self.h_send)
        self.app.router.add_get("/sedaMessages/{tail:.*}", self.h_message)

    def script(self, transfer_id: str, outcome: str, code: str | None = None, comment: str | None = None) -> None:
        """Outcome of one transfer: ``accept`` or ``reject`` (with the reply code and comment)."""
        if outcome == "accept":
            self.scripts[transfer_id] = (ACCEPTED, "Transfert accepté")
        else:
            self.scripts[transfer_id] = (code or self.reject_code, comment or self.reject_comment)

    def count(self, endpoint: str) -> int:
        return self.calls[endpoint]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.url = f"http://{host}:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AsalaeSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- handlers ----------------------------------------------------------------------------

    @staticmethod
    def _endpoint(request: web.Request) -> str:
        if request.path.startswith("/sedaMessages/"):
            return "reply" if "message:ArchiveTransferReply" in request.path else "ack"
        return {"/sedaMessages": "send", "/ping": "ping", "/versions": "versions"}.get(request.path, request.path)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        endpoint = self._endpoint(request)
        if self.down:
            self.failures[endpoint] += 1
            return web.json_response({"error": "Service Unavailable"}, status=503)
        scripted = self.fail.get(endpoint)
        if isinstance(scripted, list) and scripted:
            self.failures[endpoint] += 1
            return web.json_response({"error": "scripted failure"}, status=scripted.pop(0))
        if isinstance(scripted, int):
            self.failures[endpoint] += 1
            return web.json_response({"error": "scripted failure"}, status=scripted)
        if request.headers.get("Authorization") != self._auth:
            return web.json_response({"error": "Authentification requise"}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="asalae"'})
        self.calls[endpoint] += 1
        return await handler(request)

    async def h_ping(self, request: web.Request) -> web.Response:
        return web.json_response(True)

    async def h_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"application": "as@lae", "version": "2.1.0-flowbus-sim",
                                  "seda": ["2.1", "2.2"]})

    async def h_send(self, request: web.Request) -> web.Response:
        manifest: bytes | None = None
        with tempfile.TemporaryDirectory(prefix="asalae-sim-") as tmp:
            attachments: Path | None = None
            reader = await request.multipart()
            async for part in reader:
                if part.name == "seda_message":
                    manifest = bytes(await part.read())
                elif part.name == "attachments":
                    attachments = Path(tmp) / "attachments"
                    with attachments.open("wb") as out:
                        while chunk := await part.read_chunk(1024 * 1024):
                            out.write(chunk)
            if manifest is None or attachments is None:
                return web.json_response({"error": "seda_message et attachments sont obligatoires"}, status=400)
            try:
                await asyncio.to_thread(seda.validate, manifest, self.xsd_dir)
                transfer = _transfer_header(manifest)
            except PermanentError as exc:
                return web.json_response({"error": f"Bordereau invalide : {exc.message}"}, status=400)
            key = (transfer["transferring_agency"], transfer["message_id"])
            if key in self.transfers:
                return web.json_response({"error": f"Le transfert {key[1]} a déjà été reçu"}, status=409)
            bad = await asyncio.to_thread(_check_attachments, manifest, attachments)
        code, comment = self.scripts.get(transfer["message_id"]) or (
            (ACCEPTED, "Transfert accepté") if self.outcome == "accept" else (self.reject_code, self.reject_comment))
        if bad:
            code, comment = DIGEST_MISMATCH, "Empreinte ou fichier manquant : " + ", ".join(bad)
        self.transfers[key] = Received(transfer["message_id"], transfer["transferring_agency"],
                                       transfer["archival_agency"], self.clock.now(), manifest, code, comment,
                                       len(self.transfers) + 1)
        return web.json_response({"message": "Transfert reçu", "identifier": transfer["message_id"]}, status=201)

    async def h_message(self, request: web.Request) -> web.Response:
        parts = dict(p.split(":", 1) for p in request.match_info["tail"].split("/") if ":" in p)
        kind = parts.get("message")
        key = (parts.get("originOrganizationIdentification", ""), parts.get("originMessageIdentifier", ""))
        received = self.transfers.get(key)
        if parts.get("sequence") != "ArchiveTransfer" or kind not in ("Acknowledgement", "ArchiveTransferReply"):
            return web.json_response({"error": "séquence ou message inconnu"}, status=400)
        if received is None:
            return web.json_response({"error": "transfert inconnu", "code": 7}, status=404)
        delay = self.delays["ack" if kind == "Acknowledgement" else "reply"]
        now = self.clock.now()
        if now < received.received_at + delay:
            return web.json_response({"error": "message pas encore disponible", "code": 7}, status=404)
        when = received.received_at + delay
        if kind == "Acknowledgement":
            body = seda.build_acknowledgement(
                message_id=f"{self.identifier}-ACK-{received.number:06d}", received_id=received.transfer_id,
                sender=received.archival_agency, receiver=received.transferring_agency, date=when)
        else:
            body = seda.build_reply(
                message_id=f"{self.identifier}-ATR-{received.number:06d}", request_id=received.transfer_id,
                reply_code=received.reply_code, archival_agency=received.archival_agency,
                transferring_agency=received.transferring_agency, date=when, comment=received.comment)
        return web.Response(body=body, content_type="application/xml", charset="utf-8")


def _transfer_header(manifest: bytes) -> dict[str, str]:
    from lxml import etree
    root = etree.fromstring(manifest)
    ns = {"s": etree.QName(root).namespace}
    if etree.QName(root).localname != "ArchiveTransfer":
        raise PermanentError("seda_message n'est pas un ArchiveTransfer")
    return {"message_id": root.findtext("s:MessageIdentifier", default="", namespaces=ns),
            "archival_agency": root.findtext("s:ArchivalAgency/s:Identifier", default="", namespaces=ns),
            "transferring_agency": root.findtext("s:TransferringAgency/s:Identifier", default="", namespaces=ns)}


def _check_attachments(manifest: bytes, path: Path) -> list[str]:
    """Uris missing from the attachments or whose SHA-512 differs from the manifest."""
    expected = seda.data_objects(manifest)
    bad = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for uri, obj in expected.items():
                if uri not in names:
                    bad.append(uri)
                    continue
                h = hashlib.sha512()
                with z.open(uri) as f:
                    while chunk := f.read(1024 * 1024):
                        h.update(chunk)
                if h.hexdigest() != obj["digest"]:
                    bad.append(uri)
        return bad
    with tarfile.open(path, "r:*") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for uri, obj in expected.items():
            if uri not in members:
                bad.append(uri)
                continue
            f = tar.extractfile(members[uri])
            h = hashlib.sha512()
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
            if h.hexdigest() != obj["digest"]:
                bad.append(uri)
    return bad


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="As@lae simulator (flowbus)")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--login", default="flowbus")
    parser.add_argument("--password", default="flowbus")
    parser.add_argument("--outcome", choices=("accept", "reject"), default="accept")
    parser.add_argument("--xsd-dir", type=Path)
    args = parser.parse_args(argv)

    async def run() -> None:
        sim = AsalaeSimulator(login=args.login, password=args.password, outcome=args.outcome, xsd_dir=args.xsd_dir)
        print(f"As@lae simulator on {await sim.start(port=args.port)}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
