"""i-Parapheur 5 simulator: the Keycloak token endpoint and the standard API v1, over real HTTP.

It follows the protocol rather than returning canned strings: Keycloak-style tokens that
expire, tenants/desks/types/subtypes from a configuration, folders created from a multipart
PREMIS draft, moving ``DRAFT → PENDING → FINISHED | REJECTED`` through the subtype's circuit,
PREMIS summaries with one event per task (empty date = current task), the ZIP of a folder
with its real layout, DELETE refused while pending.  The main document is really signed
(PAdES/XAdES with the project's signature code when it is there, detached CAdES otherwise).

Scripting (like Pastell's fakeIparapheur): ``sim.approve(folder_id)`` / ``sim.reject(folder_id,
comment)`` act as the signer; ``sim.script(name, "approve"|"reject", delay=…)`` acts by itself
once the folder has been pending ``delay`` seconds; ``sim.fail("premis", status=500, times=2)``
answers errors; ``sim.latency`` slows every answer; ``sim.count("create_folder", name)``.

Run alone for a demo: ``python -m flowbus.signature.iparapheur_sim --port 8090`` (an HTML
page at ``/sim/`` lists pending folders with « Signer » / « Refuser » buttons).

Module size (~700 lines): the HTTP handlers, the folder state machine and the test hooks share
one in-memory model; they are kept together so that the model has one owner.  The default
tenants, desks, users and typology live in ``iparapheur_sim.yml`` beside this module.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import html
import io
import json
import secrets
import uuid
import zipfile
from collections import Counter
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from aiohttp import web
from lxml import etree

from flowbus.clock import Clock, SystemClock
from flowbus.signature.premis import (
    NS,
    RESERVED_DUE_DATE,
    FolderSummary,
    PremisEvent,
    PremisFile,
    build_premis,
    parse_premis,
)
from flowbus.signature.sim_signing import SimSigner, simple_pdf

PARIS = ZoneInfo("Europe/Paris")
API = "/api/standard/v1"

def default_config() -> dict[str, Any]:
    """The packaged configuration (``iparapheur_sim.yml``): one commune, three desks, four types."""
    text = resources.files("flowbus.signature").joinpath("iparapheur_sim.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@dataclass
class SimFile:
    id: str
    name: str
    main: bool
    content: bytes
    media_type: str


@dataclass
class SimTask:
    id: str
    type: str
    desk: str | None
    date: str | None = None
    note: str | None = None
    user_id: str | None = None


@dataclass
class SimFolder:
    id: str
    name: str
    tenant: str
    desk: str  # the emitting desk
    type: dict[str, Any]
    subtype: dict[str, Any]
    metadata: dict[str, str]
    due_date: str | None
    files: list[SimFile]
    tasks: list[SimTask]
    state: str = "DRAFT"
    step: int = -1  # index in the subtype's circuit
    started_at: float | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)  # "Documents principaux/<name>" etc.

    def summary(self, agents: dict[str, str]) -> FolderSummary:
        files = tuple(PremisFile(f.name, f.main, f.id, hashlib.sha256(f.content).hexdigest(), len(f.content),
                                 f.media_type) for f in self.files)
        events = tuple(PremisEvent(t.id, t.type, t.date, t.note, t.user_id) for t in self.tasks)
        meta = dict(self.metadata)
        used = {t.user_id for t in self.tasks if t.user_id}
        return FolderSummary(self.id, self.name, self.type["name"], self.subtype["name"], meta, files, events,
                             {u: n for u, n in agents.items() if u in used})

    def item(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "dueDate": self.due_date, "metadata": dict(self.metadata),
                "type": {"id": self.type["id"], "name": self.type["name"]},
                "subtype": {"id": self.subtype["id"], "name": self.subtype["name"]}}


class SimError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            503: "Service Unavailable"}


class IParapheurSimulator:
    """In-process i-Parapheur 5: ``async with IParapheurSimulator() as sim: sim.url``."""

    def __init__(self, config: dict[str, Any] | None = None, *, clock: Clock | None = None,
                 token_ttl: int = 900, refresh_ttl: int = 1800, signer: SimSigner | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or default_config()
        self.clock = clock or SystemClock()
        self.token_ttl = token_ttl
        self.refresh_ttl = refresh_ttl
        self.signer = signer or SimSigner()
        self.host, self.port = host, port
        self.folders: dict[str, SimFolder] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.latency = 0.0
        self._failures: dict[str, list[int]] = {}
        self._scripts: dict[str, tuple[str, str | None, float]] = {}
        self._default_script: tuple[str, str | None, float] | None = None
        self._secret = secrets.token_bytes(32)
        self._generation = 0  # bumped by expire_tokens(): older tokens are refused
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._index()

    def _index(self) -> None:
        cfg = self.config
        self.tenants = {t["id"]: t for t in cfg["tenants"]}
        self.desks = {d["id"]: d for d in cfg["desks"]}
        self.users = {u["username"]: u for u in cfg["users"]}
        self.agents = {u["id"]: u["name"] for u in cfg["users"]}
        self.types = {t["id"]: t for t in cfg["types"]}
        self.subtypes = {(t["id"], s["id"]): s for t in cfg["types"] for s in t.get("subtypes", [])}

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> IParapheurSimulator:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")), **kwargs)

    # ---- lifecycle ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        r = app.router
        r.add_post("/auth/realms/api/protocol/openid-connect/token", self._token)
        r.add_get(f"{API}/tenant", self._tenants)
        r.add_get(f"{API}/tenant/{{t}}/desk", self._desks)
        r.add_get(f"{API}/tenant/{{t}}/types", self._types)
        r.add_get(f"{API}/tenant/{{t}}/types/{{ty}}/subtypes", self._subtypes)
        r.add_get(f"{API}/tenant/{{t}}/desk/{{d}}/types/creation-allowed", self._allowed_types)
        r.add_get(f"{API}/tenant/{{t}}/desk/{{d}}/types/{{ty}}/subtypes/creation-allowed", self._allowed_subtypes)
        r.add_post(f"{API}/tenant/{{t}}/desk/{{d}}/folder", self._create)
        r.add_get(f"{API}/tenant/{{t}}/desk/{{d}}/folder/{{f}}/premis", self._premis)
        r.add_get(f"{API}/tenant/{{t}}/desk/{{d}}/folder/{{f}}/zip", self._zip)
        r.add_delete(f"{API}/tenant/{{t}}/desk/{{d}}/folder/{{f}}", self._delete)
        r.add_put(f"{API}/tenant/{{t}}/desk/{{d}}/folder/{{f}}/task/{{task}}/{{action}}", self._task)
        r.add_get(f"{API}/tenant/{{t}}/desk/{{d}}/{{state}}", self._list)
        r.add_get("/sim/", self._demo_page)
        r.add_post("/sim/folders/{f}/{action}", self._demo_action)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> IParapheurSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- test hooks -----------------------------------------------------------------------

    def count(self, op: str, key: str = "") -> int:
        return self.calls[(op, key)]

    def fail(self, op: str, *, status: int = 500, times: int = 1) -> None:
        """The next ``times`` calls of ``op`` (token, create_folder, start, premis, zip, list, delete) fail."""
        self._failures.setdefault(op, []).extend([status] * times)

    def script(self, name: str | None, action: str, *, comment: str | None = None, delay: float = 0.0) -> None:
        """Act on a folder (by name or id; None = every folder) once pending for ``delay`` seconds."""
        if action not in ("approve", "reject"):
            raise ValueError(f"unknown scripted action {action!r}")
        entry = (action, comment, delay)
        if name is None:
            self._default_script = entry
        else:
            self._scripts[name] = entry

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on (as after a Keycloak session logout)."""
        self._generation += 1

    def folder_by_name(self, name: str) -> SimFolder:
        matches = [f for f in self.folders.values() if f.name == name]
        if not matches:
            raise KeyError(name)
        return matches[-1]

    def approve(self, folder_id: str, *, user: str | None = None, annotation: str | None = None) -> None:
        folder = self._folder_or_key(folder_id)
        if folder.state != "PENDING":
            raise SimError(400, f"Le dossier {folder_id} n'est pas en cours ({folder.state})")
        step = folder.subtype["circuit"][folder.step]
        self._act(folder, "approve", self._signer_of(step["desk"], user), annotation)

    def reject(self, folder_id: str, comment: str, *, user: str | None = None) -> None:
        folder = self._folder_or_key(folder_id)
        if folder.state != "PENDING":
            raise SimError(400, f"Le dossier {folder_id} n'est pas en cours ({folder.state})")
        step = folder.subtype["circuit"][folder.step]
        self._act(folder, "reject", self._signer_of(step["desk"], user), comment)

    # ---- folder state machine -------------------------------------------------------------

    def _folder_or_key(self, folder_id: str) -> SimFolder:
        folder = self.folders.get(folder_id)
        if folder is None:
            raise KeyError(folder_id)
        return folder

    def _signer_of(self, desk: str, username: str | None) -> dict[str, Any]:
        if username:
            return self.users[username]
        for user in self.users.values():
            if desk in user.get("desks", []):
                return user
        raise SimError(500, f"aucun utilisateur sur le bureau {desk}")

    def _now(self) -> str:
        now = self.clock.now().astimezone(PARIS)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}" + now.strftime("%z")

    def _start(self, folder: SimFolder, user: dict[str, Any], annotation: str | None,
               metadata: dict[str, str]) -> None:
        task = folder.tasks[-1]
        task.date, task.user_id, task.note = self._now(), user["id"], annotation
        folder.metadata.update({k: str(v) for k, v in (metadata or {}).items()})
        folder.state, folder.step, folder.started_at = "PENDING", 0, self.clock.monotonic()
        self._open_step(folder)

    def _open_step(self, folder: SimFolder) -> None:
        step = folder.subtype["circuit"][folder.step]
        folder.tasks.append(SimTask(str(uuid.uuid4()), step["action"], step["desk"]))

    def _act(self, folder: SimFolder, action: str, user: dict[str, Any], note: str | None) -> None:
        task = folder.tasks[-1]
        task.date, task.user_id, task.note = self._now(), user["id"], note
        if action == "reject":
            task.type = "REJECT"
            folder.tasks.append(SimTask(str(uuid.uuid4()), "DELETE", folder.desk))
            folder.state = "REJECTED"
            return
        if task.type in ("SIGNATURE", "SEAL"):
            self._sign(folder, user)
        folder.step += 1
        if folder.step < len(folder.subtype["circuit"]):
            self._open_step(folder)
            return
        folder.tasks.append(SimTask(str(uuid.uuid4()), "ARCHIVE", folder.desk))
        folder.state = "FINISHED"

    def _sign(self, folder: SimFolder, user: dict[str, Any]) -> None:
        fmt = folder.type.get("format", "cades")
        for f in folder.files:
            if not f.main:
                continue
            signed, detached = self.signer.sign(f.name, f.content, f.media_type, fmt, signer_name=user["name"])
            folder.outputs[f"Documents principaux/{f.name}"] = signed
            if detached is not None:
                folder.outputs[f"Documents principaux/{detached[0]}"] = detached[1]

    def _run_scripts(self) -> None:
        now = self.clock.monotonic()
        for folder in list(self.folders.values()):
            if folder.state != "PENDING" or folder.started_at is None:
                continue
            entry = self._scripts.get(folder.id) or self._scripts.get(folder.name) or self._default_script
            if entry is None:
                continue
            action, comment, delay = entry
            if now - folder.started_at < delay:
                continue
            while folder.state == "PENDING":
                step = folder.subtype["circuit"][folder.step]
                user = self._signer_of(step["desk"], None)
                if action == "reject":
                    self._act(folder, "reject", user, comment or "Refusé par le simulateur")
                else:
                    self._act(folder, "approve", user, None)

    # ---- HTTP plumbing --------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            self._run_scripts()
            return await handler(request)
        except SimError as exc:
            return web.json_response({"timestamp": self._now(), "status": exc.status,
                                      "error": _REASONS.get(exc.status, "Error"), "message": exc.message,
                                      "path": request.path}, status=exc.status)

    def _injected(self, op: str) -> None:
        pending = self._failures.get(op)
        if pending:
            status = pending.pop(0)
            raise SimError(status, f"Erreur simulée sur {op}")

    def _make_token(self, user: dict[str, Any], kind: str, ttl: int) -> str:
        now = self.clock.monotonic()
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        claims = {"sub": user["id"], "preferred_username": user["username"], "typ": kind, "iat": now,
                  "exp": now + ttl, "jti": uuid.uuid4().hex, "gen": self._generation}
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        sig = base64.urlsafe_b64encode(hmac.new(self._secret, head + b"." + body, "sha256").digest()).rstrip(b"=")
        return (head + b"." + body + b"." + sig).decode()

    def _read_token(self, token: str, kind: str) -> dict[str, Any] | None:
        try:
            head, body, sig = token.encode().split(b".")
            expected = base64.urlsafe_b64encode(hmac.new(self._secret, head + b"." + body, "sha256").digest())
            if not hmac.compare_digest(expected.rstrip(b"="), sig):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            return None
        now = self.clock.monotonic()
        if claims.get("typ") != kind or now >= claims["exp"] or claims.get("gen") != self._generation:
            return None
        return claims

    async def _token(self, request: web.Request) -> web.Response:
        self.calls[("token", "")] += 1
        self._injected("token")
        form = await request.post()
        if form.get("client_id") != "ipcore-web":
            return web.json_response({"error": "invalid_client", "error_description": "Invalid client credentials"},
                                     status=401)
        grant = form.get("grant_type")
        user = None
        if grant == "password":
            candidate = self.users.get(str(form.get("username", "")))
            if candidate and hmac.compare_digest(candidate["password"], str(form.get("password", ""))):
                user = candidate
            error = "Invalid user credentials"
        elif grant == "refresh_token":
            claims = self._read_token(str(form.get("refresh_token", "")), "Refresh")
            user = self.users.get(claims["preferred_username"]) if claims else None
            error = "Invalid refresh token"
        else:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if user is None:
            return web.json_response({"error": "invalid_grant", "error_description": error}, status=401)
        self.calls[("token", grant)] += 1
        return web.json_response({
            "access_token": self._make_token(user, "Bearer", self.token_ttl), "expires_in": self.token_ttl,
            "refresh_expires_in": self.refresh_ttl,
            "refresh_token": self._make_token(user, "Refresh", self.refresh_ttl), "token_type": "Bearer",
            "not-before-policy": 0, "session_state": str(uuid.uuid4()), "scope": "email profile"})

    def _user(self, request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        claims = self._read_token(auth[7:], "Bearer") if auth.startswith("Bearer ") else None
        if claims is None:
            raise SimError(401, "Jeton absent, invalide ou expiré")
        return self.users[claims["preferred_username"]]

    def _tenant(self, request: web.Request, user: dict[str, Any]) -> str:
        tenant = request.match_info["t"]
        if tenant not in self.tenants:
            raise SimError(404, f"Entité inconnue : {tenant}")
        return tenant

    def _desk(self, request: web.Request, user: dict[str, Any]) -> str:
        tenant = self._tenant(request, user)
        desk = request.match_info["d"]
        if desk not in self.desks or self.desks[desk]["tenant"] != tenant:
            raise SimError(404, f"Bureau inconnu : {desk}")
        if desk not in user.get("desks", []):
            raise SimError(403, f"L'utilisateur {user['username']} n'a pas accès au bureau {desk}")
        return desk

    def _folder(self, request: web.Request, desk: str) -> SimFolder:
        folder = self.folders.get(request.match_info["f"])
        if folder is None:
            raise SimError(404, f"Dossier inconnu : {request.match_info['f']}")
        involved = {folder.desk} | {s["desk"] for s in folder.subtype["circuit"]}
        if desk not in involved:
            raise SimError(403, f"Le bureau {desk} n'a pas accès au dossier {folder.id}")
        return folder

    @staticmethod
    def _page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
        try:
            page = int(request.query.get("page", "0"))
            size = int(request.query.get("size", "10"))
        except ValueError:
            raise SimError(400, "Paramètres de pagination invalides") from None
        if page < 0 or size < 1:
            raise SimError(400, "Paramètres de pagination invalides")
        chunk = items[page * size:(page + 1) * size]
        total_pages = (len(items) + size - 1) // size
        sort = {"sorted": False, "unsorted": True, "empty": True}
        return web.json_response({
            "content": chunk, "totalPages": total_pages, "totalElements": len(items), "number": page, "size": size,
            "numberOfElements": len(chunk),
            "pageable": {"pageNumber": page, "pageSize": size, "offset": page * size, "paged": True,
                         "unpaged": False, "sort": sort},
            "first": page == 0, "last": page >= total_pages - 1, "empty": not chunk, "sort": sort})

    # ---- typology handlers ----------------------------------------------------------------

    async def _tenants(self, request: web.Request) -> web.Response:
        user = self._user(request)
        mine = {self.desks[d]["tenant"] for d in user.get("desks", [])}
        return self._page([{"id": t["id"], "name": t["name"]} for t in self.tenants.values() if t["id"] in mine],
                          request)

    async def _desks(self, request: web.Request) -> web.Response:
        user = self._user(request)
        tenant = self._tenant(request, user)
        return self._page([{"id": d["id"], "name": d["name"]} for d in self.desks.values()
                           if d["tenant"] == tenant and d["id"] in user.get("desks", [])], request)

    @staticmethod
    def _type_item(t: dict[str, Any]) -> dict[str, Any]:
        return {"id": t["id"], "name": t["name"], "description": t.get("description", "")}

    async def _types(self, request: web.Request) -> web.Response:
        self._tenant(request, self._user(request))
        return self._page([self._type_item(t) for t in self.types.values()], request)

    def _type(self, key: str) -> dict[str, Any]:
        for t in self.types.values():
            if key in (t["id"], t["name"]):
                return t
        raise SimError(404, f"Type inconnu : {key}")

    def _subtype(self, type_: dict[str, Any], key: str) -> dict[str, Any]:
        for s in type_.get("subtypes", []):
            if key in (s["id"], s["name"]):
                return s
        raise SimError(404, f"Sous-type inconnu : {key} (type {type_['name']})")

    async def _subtypes(self, request: web.Request) -> web.Response:
        self._tenant(request, self._user(request))
        t = self._type(request.match_info["ty"])
        return self._page([{"id": s["id"], "name": s["name"]} for s in t.get("subtypes", [])], request)

    def _allowed(self, desk: str) -> list[dict[str, Any]]:
        ids = self.config.get("creation_allowed", {}).get(desk, [])
        return [self.types[i] for i in ids if i in self.types]

    async def _allowed_types(self, request: web.Request) -> web.Response:
        desk = self._desk(request, self._user(request))
        return self._page([self._type_item(t) for t in self._allowed(desk)], request)

    async def _allowed_subtypes(self, request: web.Request) -> web.Response:
        desk = self._desk(request, self._user(request))
        t = self._type(request.match_info["ty"])
        if t not in self._allowed(desk):
            raise SimError(403, f"Le bureau {desk} ne peut pas créer de dossier de type {t['name']}")
        return self._page([{"id": s["id"], "name": s["name"]} for s in t.get("subtypes", [])], request)

    # ---- folder handlers ------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        user = self._user(request)
        desk = self._desk(request, user)
        premis_bytes: bytes | None = None
        uploads: dict[str, tuple[bytes, str]] = {}
        reader = await request.multipart()
        async for part in reader:
            if part.name == "folder":
                premis_bytes = await part.read()
            elif part.name == "documents":
                uploads[part.filename or ""] = (bytes(await part.read()),
                                                part.headers.get("Content-Type", "application/octet-stream"))
        if premis_bytes is None:
            raise SimError(400, "Partie « folder » (PREMIS) manquante")
        try:
            draft = parse_premis(premis_bytes)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's
            raise SimError(400, f"PREMIS invalide : {exc}") from exc
        self.calls[("create_folder", draft.name)] += 1
        self._injected("create_folder")
        if not draft.type or not draft.subtype:
            raise SimError(400, "Le type et le sous-type (i_Parapheur_reserved_type/subtype) sont obligatoires")
        type_ = self._type(draft.type)
        subtype = self._subtype(type_, draft.subtype)
        if type_ not in self._allowed(desk):
            raise SimError(403, f"Le bureau {desk} ne peut pas créer de dossier de type {type_['name']}")
        if not draft.main_files:
            raise SimError(400, "Aucun document principal (i_Parapheur_reserved_mainDocument=true)")
        files = []
        for pf in draft.files:
            if pf.name not in uploads:
                raise SimError(400, f"Document « {pf.name} » décrit dans le PREMIS mais absent de la requête")
            content, media = uploads[pf.name]
            files.append(SimFile(str(uuid.uuid4()), pf.name, pf.main, content, media))
        due = _due_date(premis_bytes)
        folder = SimFolder(str(uuid.uuid4()), draft.name, request.match_info["t"], desk, type_, subtype,
                           dict(draft.metadata), due or None, files, [SimTask(str(uuid.uuid4()), "START", desk)])
        self.folders[folder.id] = folder
        if request.query.get("autoStart", "false").lower() == "true":
            self._start(folder, user, None, {})
        return web.json_response({"id": folder.id, "name": folder.name, "dueDate": folder.due_date,
                                  "metadata": dict(folder.metadata)}, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        user = self._user(request)
        desk = self._desk(request, user)
        state = request.match_info["state"]
        if state not in ("DRAFT", "PENDING", "LATE", "DELEGATED", "FINISHED", "REJECTED", "RETRIEVABLE"):
            raise SimError(400, f"État inconnu : {state}")
        self.calls[("list", state)] += 1
        self._injected("list")
        out = []
        for f in self.folders.values():
            current = f.subtype["circuit"][f.step]["desk"] if f.state == "PENDING" else None
            late = bool(f.due_date and f.due_date < self.clock.now().isoformat())
            match state:
                case "DRAFT" | "FINISHED" | "REJECTED":
                    keep = f.state == state and f.desk == desk
                case "PENDING":
                    keep = current == desk and not late
                case "LATE":
                    keep = current == desk and late
                case "RETRIEVABLE":  # sent by this desk, nobody acted on it yet (« droit de remords »)
                    keep = f.state == "PENDING" and f.desk == desk and f.step == 0
                case _:
                    keep = False
            if keep and (not request.query.get("typeId") or request.query["typeId"] == f.type["id"]) and \
                    (not request.query.get("subtypeId") or request.query["subtypeId"] == f.subtype["id"]):
                out.append(f.item())
        return self._page(out, request)

    async def _premis(self, request: web.Request) -> web.Response:
        folder = self._folder(request, self._desk(request, self._user(request)))
        self.calls[("premis", folder.id)] += 1
        self._injected("premis")
        return web.Response(body=build_premis(folder.summary(self.agents)), content_type="application/xml")

    async def _zip(self, request: web.Request) -> web.Response:
        folder = self._folder(request, self._desk(request, self._user(request)))
        self.calls[("zip", folder.id)] += 1
        self._injected("zip")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in folder.files:
                if f.main:
                    name = f"Documents principaux/{f.name}"
                    zf.writestr(name, folder.outputs.get(name, f.content))
                else:
                    zf.writestr(f"Annexes/{f.name}", f.content)
            for name, content in folder.outputs.items():
                if name.startswith("Documents principaux/") and name[21:] not in {f.name for f in folder.files}:
                    zf.writestr(name, content)
            zf.writestr(f"{folder.name}_bordereau.pdf", self._bordereau(folder))
            zf.writestr("i_Parapheur_internal_premis.xml", build_premis(folder.summary(self.agents)))
        return web.Response(body=buf.getvalue(), content_type="application/zip")

    def _bordereau(self, folder: SimFolder) -> bytes:
        lines = [f"Bordereau de signature - {folder.name}", f"Type : {folder.type['name']} / "
                 f"{folder.subtype['name']}", ""]
        for t in folder.tasks:
            who = self.agents.get(t.user_id or "", "")
            lines.append(f"{t.type:<10} {t.date or 'en attente':<30} {who} {t.note or ''}".rstrip())
        return simple_pdf(lines)

    async def _delete(self, request: web.Request) -> web.Response:
        folder = self._folder(request, self._desk(request, self._user(request)))
        self.calls[("delete", folder.id)] += 1
        self._injected("delete")
        if folder.state == "PENDING":
            raise SimError(403, f"Le dossier {folder.id} est en cours de circuit : suppression impossible")
        del self.folders[folder.id]
        return web.Response(status=204)

    async def _task(self, request: web.Request) -> web.Response:
        user = self._user(request)
        desk = self._desk(request, user)
        folder = self._folder(request, desk)
        action = request.match_info["action"]
        self.calls[(action, folder.id)] += 1
        self._injected(action)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise SimError(400, "Corps JSON invalide") from None
        task = folder.tasks[-1] if folder.tasks else None
        if task is None or task.id != request.match_info["task"] or task.date is not None:
            raise SimError(404, f"Tâche inconnue ou déjà traitée : {request.match_info['task']}")
        note = (body or {}).get("publicAnnotation")
        if action == "start":
            if folder.state != "DRAFT" or folder.desk != desk:
                raise SimError(400, f"Le dossier {folder.id} n'est pas un brouillon de ce bureau")
            self._start(folder, user, note, (body or {}).get("metadata") or {})
            return web.Response(status=200)
        if folder.state != "PENDING" or task.desk != desk:
            raise SimError(403, f"Le bureau {desk} n'a pas d'action en cours sur le dossier {folder.id}")
        expected = {"visa": ("VISA",), "seal": ("SIGNATURE", "SEAL"), "reject": ("VISA", "SIGNATURE", "SEAL")}
        if action not in expected:
            raise SimError(400, f"Action non prise en charge par le simulateur : {action}")
        if task.type not in expected[action]:
            raise SimError(400, f"Action {action} impossible sur une tâche {task.type}")
        if action == "reject" and not note:
            raise SimError(400, "Un refus doit être motivé (publicAnnotation)")
        self._act(folder, "reject" if action == "reject" else "approve", user, note)
        return web.Response(status=200)

    # ---- demo page ------------------------------------------------------------------------

    async def _demo_page(self, request: web.Request) -> web.Response:
        rows = []
        for f in self.folders.values():
            buttons = ""
            if f.state == "PENDING":
                buttons = (f'<form method="post" action="/sim/folders/{f.id}/approve"><button>Signer</button></form>'
                           f'<form method="post" action="/sim/folders/{f.id}/reject"><input name="comment" '
                           f'placeholder="Motif du refus" required><button>Refuser</button></form>')
            rows.append(f"<tr><td>{html.escape(f.name)}</td><td>{html.escape(f.subtype['name'])}</td>"
                        f"<td>{f.state}</td><td>{buttons}</td></tr>")
        page = ("<!doctype html><html lang='fr'><meta charset='utf-8'><title>Simulateur i-Parapheur</title>"
                "<h1>Simulateur i-Parapheur</h1><table><tr><th>Dossier</th><th>Sous-type</th><th>État</th>"
                "<th>Action</th></tr>" + "".join(rows) + "</table></html>")
        return web.Response(text=page, content_type="text/html")

    async def _demo_action(self, request: web.Request) -> web.Response:
        form = await request.post()
        fid = request.match_info["f"]
        if fid not in self.folders:
            raise SimError(404, f"Dossier inconnu : {fid}")
        if request.match_info["action"] == "approve":
            self.approve(fid)
        elif request.match_info["action"] == "reject":
            self.reject(fid, str(form.get("comment") or "Refusé"))
        else:
            raise SimError(400, "Action inconnue")
        raise web.HTTPSeeOther("/sim/")


def _due_date(premis: bytes) -> str | None:
    root = etree.fromstring(premis, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    for prop in root.iter(f"{{{NS}}}significantProperties"):
        if prop.findtext(f"{{{NS}}}significantPropertiesType") == RESERVED_DUE_DATE:
            return prop.findtext(f"{{{NS}}}significantPropertiesValue")
    return None


async def _serve(port: int, config: Path | None, auto: str | None, delay: float) -> None:
    sim = IParapheurSimulator.from_file(config, port=port) if config else IParapheurSimulator(port=port)
    if auto:
        sim.script(None, auto, delay=delay)
    url = await sim.start()
    users = ", ".join(f"{u['username']}/{u['password']}" for u in sim.config["users"])
    print(f"i-Parapheur simulator on {url} (users: {users}); demo page {url}/sim/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flowbus.signature.iparapheur_sim")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--config", type=Path, help="YAML file: tenants, desks, users, types (see iparapheur_sim.yml)")
    parser.add_argument("--auto", choices=["approve", "reject"], help="act on every started folder by itself")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before --auto acts")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.port, args.config, args.auto, args.delay))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
