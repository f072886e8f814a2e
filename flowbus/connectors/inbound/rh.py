"""RH: contracts, arrêtés and payslips (PDF + the agent's identity and e-mail) → the RH flows.

* ``POST /api/v1/inbound/rh`` (multipart): one document; ``type`` is ``contrat``, ``arrete`` (flow
  rh-contrat) or ``bulletin`` (flow rh-paie).
* ``POST /api/v1/inbound/rh/batches`` (multipart: ``entity``, ``archive`` = a zip holding the PDFs
  and ``manifest.csv`` or ``manifest.json``): a month of payslips at once.

Batch behaviour (chosen): **per-entry report by position, valid entries kept.**  The manifest is
checked whole before anything is created (file present in the zip and a PDF, name, e-mail,
period); the answer (202) lists every rejected entry by its position (1 = first entry) with the
field at fault, and the valid entries are turned into documents in the background (queue
``inbound-batches``), each recorded so that a worker restart resumes the batch without creating
a payslip twice.  Refusing 13,000 payslips because one line has a typo would delay every agent's
payslip for one agent's; the report tells the sender exactly which lines to send again.
``GET /api/v1/inbound/batches/{id}`` gives the progress and the per-entry outcome.

manifest.csv: a header line, ``;`` or ``,`` separated, columns ``fichier`` (or ``file``),
``matricule``, ``nom``, ``prenom``, ``email``, ``periode`` (AAAA-MM), optional ``type``.
manifest.json: a list of objects with the same keys (or ``{"entries": [...]}``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import actor, principal, require_role, visible_entities
from flowbus.bus.base import Message, Retry
from flowbus.clock import isoformat, parse_iso
from flowbus.connectors.inbound.common import Upload, status_url, submit
from flowbus.connectors.inbound.domain import (
    ENTITY_PROPS,
    FILE_PROP,
    DomainSpec,
    Payload,
    entity_of,
    handler,
    is_pdf,
    openapi_post,
    resolve_name,
)
from flowbus.errors import FlowbusError, NotFound, ValidationError

log = structlog.get_logger(__name__)
ROUTE = "/api/v1/inbound/rh"
BATCH_ROUTE = "/api/v1/inbound/rh/batches"
STATUS_ROUTE = "/api/v1/inbound/batches/{id}"
QUEUE = "inbound-batches"
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PERIODE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
TYPES = {"contrat": "rh-contrat", "bulletin": "rh-paie"}
LEASE = 300.0
CHUNK = 1024 * 1024

FIELDS = {"type_contrat": ("type_contrat",), "agent_nom": ("agent_nom", "nom"),
          "agent_prenom": ("agent_prenom", "prenom"), "agent_matricule": ("agent_matricule", "matricule"),
          "agent_email": ("agent_email", "email", "courriel"), "periode": ("periode", "mois"),
          "objet": ("objet", "title", "libelle"), "date_effet": ("date_debut", "date_effet"),
          "date_debut": ("date_debut",)}
FILES = {"document": ("document", "fichier", "bulletin", "contrat", "pdf")}


def _check_agent(get: Any, err: Any, *, kind: str) -> None:
    if kind not in TYPES:
        err("type", f"type {kind!r} inconnu : contrat ou bulletin")
    if not get("agent_nom"):
        err("agent_nom", "le nom de l'agent est obligatoire")
    email = get("agent_email")
    if not email or not EMAIL.fullmatch(email):
        err("agent_email", f"adresse e-mail de l'agent {email!r} invalide")
    periode = get("periode")
    if kind == "bulletin" and not PERIODE.fullmatch(periode or ""):
        err("periode", f"période {periode!r} invalide : AAAA-MM (mois de paie)")


def full_name(flow: Any, fields: dict[str, Any], payload: Payload | None = None,
              prenom: str | None = None) -> dict[str, Any]:
    """A flow without a first-name field gets « Prénom Nom » in agent_nom."""
    prenom = prenom if prenom is not None else (payload.text("agent_prenom") if payload else "")
    if prenom and "agent_prenom" not in {f.name for f in flow.fields} and fields.get("agent_nom"):
        fields = {**fields, "agent_nom": f"{prenom} {fields['agent_nom']}"}
    return fields


def validate(p: Payload) -> list[ValidationError]:
    errors: list[ValidationError] = []
    kind = p.text("type").lower() or "bulletin"
    p.form["type"] = kind
    _check_agent(p.text, lambda f, m: errors.append(ValidationError(m, field=f)), kind=kind)
    docs = p.files.get("document", [])
    if len(docs) != 1:
        errors.append(ValidationError("un fichier « document » (le PDF) est obligatoire, un seul", field="document"))
    elif not is_pdf(p, "document"):
        errors.append(ValidationError(f"{docs[0].filename!r} n'est pas un PDF", field="document"))
    return errors


SPEC = DomainSpec("rh", ("rh-paie",), FIELDS, FILES, validate)


# ---- batches -------------------------------------------------------------------------------


def _decode(raw: bytes) -> str:
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def read_manifest(zf: zipfile.ZipFile) -> list[dict[str, str]]:
    names = set(zf.namelist())
    if "manifest.json" in names:
        try:
            data = json.loads(_decode(zf.read("manifest.json")))
        except json.JSONDecodeError as exc:
            raise ValidationError(f"manifest.json n'est pas un JSON valide : {exc}", field="manifest.json") from exc
        entries = data.get("entries") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ValidationError("manifest.json doit être une liste d'entrées (ou {\"entries\": [...]})",
                                  field="manifest.json")
        return [{str(k): ("" if v is None else str(v)) for k, v in e.items()} if isinstance(e, dict) else {}
                for e in entries]
    if "manifest.csv" in names:
        text = _decode(zf.read("manifest.csv"))
        first = text.split("\n", 1)[0]
        delimiter = ";" if first.count(";") >= first.count(",") else ","
        rows = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        if not rows.fieldnames or not {"fichier", "file"} & {h.strip().lower() for h in rows.fieldnames}:
            raise ValidationError("manifest.csv doit commencer par une ligne d'en-tête avec une colonne « fichier »",
                                  field="manifest.csv")
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in rows]
    raise ValidationError("l'archive ne contient ni manifest.csv ni manifest.json", field="archive")


def entry_fields(flow: Any, entry: dict[str, str]) -> dict[str, Any]:
    """A manifest entry → the flow's fields."""
    values = {"agent_nom": entry.get("nom", ""), "agent_prenom": entry.get("prenom", ""),
              "agent_matricule": entry.get("matricule", ""), "agent_email": entry.get("email", ""),
              "periode": entry.get("periode", ""),
              "objet": entry.get("objet") or f"Bulletin de paie {entry.get('periode', '')} — "
                                              f"{entry.get('prenom', '')} {entry.get('nom', '')}".strip()}
    names = {d: resolve_name(flow, d, c) for d, c in FIELDS.items()}
    fields = {names[k]: v for k, v in values.items() if names.get(k) and v}
    return full_name(flow, fields, prenom=values["agent_prenom"])


def check_entries(zf: zipfile.ZipFile, entries: list[dict[str, str]],
                  flow: Any = None) -> list[tuple[int, str | None, str | None]]:
    """One (position, error, field) per entry; error None when the entry is valid.

    With ``flow``, an entry that passes the RH checks is also checked against the flow's fields
    (patterns, required fields), so that every rejection is known before anything is created.
    """
    members = {i.filename: i for i in zf.infolist()}
    out: list[tuple[int, str | None, str | None]] = []
    seen: set[str] = set()
    for pos, entry in enumerate(entries, 1):
        problems: list[tuple[str, str]] = []

        def get(name: str, e: dict[str, str] = entry) -> str:
            alias = {"agent_nom": "nom", "agent_prenom": "prenom", "agent_email": "email",
                     "agent_matricule": "matricule"}.get(name, name)
            return (e.get(name) or e.get(alias) or "").strip()

        if not entry:
            out.append((pos, "l'entrée n'est pas un objet", None))
            continue
        name = entry.get("fichier") or entry.get("file") or ""
        if not name:
            problems.append(("fichier", "le nom du fichier PDF manque"))
        elif name not in members:
            problems.append(("fichier", f"le fichier {name!r} est absent de l'archive"))
        elif name in seen:
            problems.append(("fichier", f"le fichier {name!r} figure deux fois dans le manifeste"))
        else:
            with zf.open(members[name]) as fh:
                if not fh.read(5).startswith(b"%PDF"):
                    problems.append(("fichier", f"le fichier {name!r} n'est pas un PDF"))
        seen.add(name)
        kind = (entry.get("type") or "bulletin").lower()
        _check_agent(get, lambda f, m: problems.append((f, m)), kind=kind)
        if not problems and flow is not None:
            from flowbus.flows.fields import check_fields, missing_for_start
            try:
                values = check_fields(flow, entry_fields(flow, entry), partial=True)
                file_field = resolve_name(flow, "document", FILES["document"]) or "document"
                missing = missing_for_start(flow, values, {file_field})
                if missing:
                    problems.append((missing[0], f"champ obligatoire manquant : {', '.join(missing)}"))
            except ValidationError as exc:
                problems.append((exc.field or "", exc.message))
        if problems:
            out.append((pos, "; ".join(m for _, m in problems), problems[0][0]))
        else:
            out.append((pos, None, None))
    return out


async def _spool_blob(rt: Any, key: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=".zip", prefix="flowbus-batch-")
    loop = asyncio.get_running_loop()
    with open(fd, "wb") as out:
        async for chunk in rt.blobs.open(key):
            await loop.run_in_executor(None, out.write, chunk)
    return Path(name)


async def post_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not request.content_type.startswith("multipart/"):
        raise ValidationError("send the batch as multipart/form-data (entity, archive)", field="Content-Type")
    reader = await request.multipart()
    form: dict[str, str] = {}
    blob = None
    while True:
        part = await reader.next()
        if part is None:
            break
        if part.name == "archive" and part.filename is not None:
            async def chunks(p: Any = part) -> Any:
                while True:
                    chunk = await p.read_chunk(256 * 1024)
                    if not chunk:
                        break
                    yield chunk
            blob = await rt.blobs.put(chunks(), max_size=rt.settings.max_upload_size)
        elif part.filename is None:
            form[part.name or ""] = await part.text()
        else:
            raise ValidationError(f"unexpected file part {part.name!r}; the zip goes in 'archive'", field=part.name)
    if blob is None:
        raise ValidationError("the zip file (part 'archive') is missing", field="archive")
    entity = await entity_of(request, Payload(form))
    flow_id = SPEC.flow_id(rt)
    path = await _spool_blob(rt, blob.key)
    try:
        def inspect() -> tuple[list[dict[str, str]], list[tuple[int, str | None, str | None]]]:
            try:
                with zipfile.ZipFile(path) as zf:
                    entries = read_manifest(zf)
                    return entries, check_entries(zf, entries, rt.flow(flow_id))
            except zipfile.BadZipFile as exc:
                raise ValidationError(f"l'archive n'est pas un zip lisible : {exc}", field="archive") from exc
        entries, checks = await asyncio.to_thread(inspect)
    finally:
        path.unlink(missing_ok=True)
    if not entries:
        raise ValidationError("le manifeste ne contient aucune entrée", field="archive")
    batch_id = uuid.uuid4().hex
    now = isoformat(rt.clock.now())
    rejected = [(pos, err, field) for pos, err, field in checks if err]
    async with rt.store.transaction() as tx:
        await tx.execute("INSERT INTO inbound_batches (id, entity_id, flow_id, kind, blob_key, status, total, accepted, "
                         "rejected, created_by, created_at, updated_at) VALUES ($1, $2, $3, 'rh-paie', $4, $5, $6, 0, "
                         "$7, $8, $9, $9)", batch_id, entity, flow_id, blob.key,
                         "processing" if len(rejected) < len(entries) else "done", len(entries), len(rejected),
                         actor(request), now)
        for pos, err, field in checks:
            await tx.execute("INSERT INTO inbound_batch_entries (batch_id, position, status, error, field) "
                             "VALUES ($1, $2, $3, $4, $5)", batch_id, pos, "rejected" if err else "pending", err,
                             field)
        if len(rejected) < len(entries):
            await rt.bus.publish(Message(QUEUE, {"batch": batch_id}, key=f"batch:{batch_id}"), tx=tx)
    url = STATUS_ROUTE.replace("{id}", batch_id)
    return web.json_response({"id": batch_id, "status_url": url, "total": len(entries),
                              "accepted": len(entries) - len(rejected), "rejected": len(rejected),
                              "errors": [{"position": p, "field": f, "error": e} for p, e, f in rejected]},
                             status=202, headers={"Location": url})


class BatchWorker:
    """Turns a batch's pending entries into documents (one consumer of ``inbound-batches``)."""

    def __init__(self, runtime: Any, *, lease: float = LEASE) -> None:
        self.rt = runtime
        self.lease = lease  # a batch untouched this long belongs to a dead worker: another one resumes it
        self._consumer: Any = None

    async def start(self) -> None:
        if self._consumer is None:
            self._consumer = await self.rt.bus.consume(QUEUE, self.handle, prefetch=2)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def _claim(self, batch_id: str, token: str) -> float | None:
        now = self.rt.clock.now()
        async with self.rt.store.transaction() as tx:
            changed = await tx.execute(
                "UPDATE inbound_batches SET status = 'processing:' || $2, updated_at = $3 WHERE id = $1 AND "
                "(status = 'processing' OR (status LIKE 'processing:%' AND updated_at < $4))",
                batch_id, token, isoformat(now), isoformat(now - timedelta(seconds=self.lease)))
            if changed:
                return None
            row = await tx.fetchrow("SELECT status, updated_at FROM inbound_batches WHERE id = $1", batch_id)
        if row is None or not row["status"].startswith("processing"):
            return -1.0  # finished (or gone): nothing to do
        return max(0.1, self.lease - (now - parse_iso(row["updated_at"])).total_seconds())

    async def handle(self, msg: Message) -> None:
        batch_id = msg.body["batch"]
        token = uuid.uuid4().hex[:12]
        wait = await self._claim(batch_id, token)
        if wait is not None:
            if wait < 0:
                return
            raise Retry(timedelta(seconds=wait), "batch held by another worker")
        await self.run(batch_id, token)

    async def run(self, batch_id: str, token: str) -> None:
        rt = self.rt
        async with rt.store.transaction() as tx:
            batch = await tx.fetchrow("SELECT * FROM inbound_batches WHERE id = $1", batch_id)
            todo = [int(r["position"]) for r in await tx.fetch(
                "SELECT position FROM inbound_batch_entries WHERE batch_id = $1 AND status = 'pending' "
                "ORDER BY position", batch_id)]
        path = await _spool_blob(rt, batch["blob_key"])
        flow = rt.flow(batch["flow_id"])
        file_field = resolve_name(flow, "document", FILES["document"]) or "document"
        try:
            zf = zipfile.ZipFile(path)
            entries = read_manifest(zf)
            last_beat = rt.clock.monotonic()
            for pos in todo:
                entry = entries[pos - 1]
                name = entry.get("fichier") or entry.get("file") or ""
                fields = entry_fields(flow, entry)
                upload = Upload(file_field, Path(name).name, "application/pdf", _member_reader(zf, name))
                status, doc_id, error, field = "done", None, None, None
                try:
                    doc = await submit(rt, entity_id=batch["entity_id"], flow_id=batch["flow_id"], fields=fields,
                                       uploads=[upload], actor=batch["created_by"], origin=f"batch:{batch_id}:{pos}",
                                       resume=True)
                    doc_id = doc.id
                except FlowbusError as exc:
                    status, error, field = "rejected", exc.message, exc.field
                async with rt.store.transaction() as tx:
                    await tx.execute("UPDATE inbound_batch_entries SET status = $3, document_id = $4, error = $5, "
                                     "field = $6 WHERE batch_id = $1 AND position = $2", batch_id, pos, status,
                                     doc_id, error, field)
                    column = "accepted" if status == "done" else "rejected"
                    beat = rt.clock.monotonic() - last_beat > self.lease / 3
                    await tx.execute(f"UPDATE inbound_batches SET {column} = {column} + 1"
                                     + (", updated_at = $2" if beat else "") + " WHERE id = $1",
                                     batch_id, *([isoformat(rt.clock.now())] if beat else []))
                    if beat:
                        last_beat = rt.clock.monotonic()
            zf.close()
        finally:
            path.unlink(missing_ok=True)
        async with rt.store.transaction() as tx:
            await tx.execute("UPDATE inbound_batches SET status = 'done', updated_at = $2 WHERE id = $1",
                             batch_id, isoformat(rt.clock.now()))
        log.info("inbound.batch_done", batch=batch_id, entries=len(todo))


def _member_reader(zf: zipfile.ZipFile, name: str):
    async def gen() -> Any:
        with zf.open(name) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                yield chunk
    return gen


async def get_batch(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    batch_id = request.match_info["id"]
    visible = await visible_entities(rt, principal(request))  # its own transaction: not nested below
    async with rt.store.transaction() as tx:
        batch = await tx.fetchrow("SELECT * FROM inbound_batches WHERE id = $1", batch_id)
        if batch is None or (visible is not None and batch["entity_id"] not in visible):
            raise NotFound(f"batch {batch_id} does not exist", field="id")
        entries = await tx.fetch("SELECT position, status, document_id, error, field FROM inbound_batch_entries "
                                 "WHERE batch_id = $1 ORDER BY position", batch_id)
    await require_role(request, batch["entity_id"], "reader")
    status = "processing" if batch["status"].startswith("processing") else batch["status"]
    return web.json_response({
        "id": batch_id, "entity": batch["entity_id"], "flow": batch["flow_id"], "status": status,
        "total": batch["total"], "accepted": batch["accepted"], "rejected": batch["rejected"],
        "entries": [{"position": e["position"], "status": e["status"], "document": e["document_id"],
                     "status_url": status_url(rt, e["document_id"]) if e["document_id"] else None,
                     "error": e["error"], "field": e["field"]} for e in entries]})


def _flow_for(p: Payload) -> str:
    return TYPES.get(p.text("type").lower() or "bulletin", "rh-paie")


def setup(app: web.Application, runtime: Any) -> None:
    from flowbus.connectors.inbound import install_batch_worker
    worker = install_batch_worker(runtime)

    async def start(_app: web.Application) -> None:
        await worker.start()

    app.on_startup.append(start)
    app.router.add_post(ROUTE, handler(SPEC, flow_for=_flow_for, adjust=full_name))
    app.router.add_post(BATCH_ROUTE, post_batch)
    app.router.add_get(STATUS_ROUTE, get_batch)


_PROBLEM = {"$ref": "#/components/responses/Problem"}
OPENAPI_PATHS = {
    ROUTE: openapi_post(
        "Submit one RH document: a contract, an arrêté or a payslip PDF with the agent's identity and e-mail",
        "inbound",
        {**ENTITY_PROPS, "document": FILE_PROP, "type": {"type": "string", "enum": list(TYPES)},
         "agent_nom": {"type": "string"}, "agent_prenom": {"type": "string"}, "agent_matricule": {"type": "string"},
         "agent_email": {"type": "string", "format": "email"}, "periode": {"type": "string", "pattern": "^\\d{4}-\\d{2}$"},
         "objet": {"type": "string"}, "date_effet": {"type": "string", "format": "date"}},
        ["document", "agent_nom", "agent_email"]),
    BATCH_ROUTE: {"post": {
        "summary": "Submit a month of payslips: a zip of PDFs with manifest.csv or manifest.json. Invalid entries are "
                   "reported by position (1 = first entry) and the valid ones become documents in the background",
        "tags": ["inbound"],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {"entity": {"type": "string"}, "siren": {"type": "string"}, "archive": FILE_PROP}}}}},
        "responses": {"202": {"description": "Accepted: per-entry errors, a status URL for the rest"},
                      "422": _PROBLEM}}},
    STATUS_ROUTE: {"get": {
        "summary": "Progress of a batch and the outcome of every entry (document id or error, by position)",
        "tags": ["inbound"], "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The batch"}, "404": _PROBLEM}}},
}
