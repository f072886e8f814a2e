"""The shape every domain endpoint shares: multipart in, validation, a started document out.

A ``DomainSpec`` names the flow, maps the domain's field names onto the flow's (first candidate
the flow declares wins), and validates the payload.  Files are streamed to the BlobStore as
they arrive (never held in memory), then attached from there once everything is valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.api.auth import actor, require_role
from flowbus.connectors.inbound.common import Upload, blob_upload, status_url, submit
from flowbus.errors import ConfigError, ValidationError
from flowbus.store import repo

log = structlog.get_logger(__name__)
CHUNK = 256 * 1024
CONTROL = frozenset({"entity", "siren", "start", "type"})  # how to submit, not document data


@dataclass
class Payload:
    """A parsed request: text fields and uploaded files (already in the BlobStore)."""

    form: dict[str, Any]
    files: dict[str, list[Upload]] = field(default_factory=dict)
    magic: dict[tuple[str, int], bytes] = field(default_factory=dict)  # first bytes of each file

    def text(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""


Validator = Callable[[Payload], list[ValidationError]]


@dataclass(frozen=True)
class DomainSpec:
    name: str
    flow: str | tuple[str, ...]  # flow id, or candidates (first loaded wins)
    fields: dict[str, tuple[str, ...]]  # domain field → candidate flow fields
    files: dict[str, tuple[str, ...]]  # domain file part → candidate flow file fields
    validate: Validator

    def flow_id(self, rt: Any, payload: Payload | None = None) -> str:
        ids = (self.flow,) if isinstance(self.flow, str) else self.flow
        for fid in ids:
            if fid in rt.flows:
                return fid
        raise ConfigError(f"the {self.name} endpoint needs flow {' or '.join(ids)}, which is not loaded",
                          hint="ship config/flows/<flow>.yml")


def resolve_name(flow: Any, domain_name: str, candidates: tuple[str, ...]) -> str | None:
    names = {f.name for f in flow.fields}
    return next((c for c in candidates if c in names), domain_name if domain_name in names else None)


def to_flow(rt: Any, flow_id: str, spec: DomainSpec, payload: Payload) -> tuple[dict[str, Any], list[Upload]]:
    """Domain names → flow names; a domain value the flow has no field for is an error naming it."""
    flow = rt.flow(flow_id)
    fields: dict[str, Any] = {}
    for name, value in payload.form.items():
        if name in CONTROL or value in (None, ""):
            continue
        candidates = spec.fields.get(name)
        if candidates is None:
            raise ValidationError(f"unknown field {name!r} for the {spec.name} endpoint", field=name,
                                  hint="fields: " + ", ".join(sorted(spec.fields)))
        target = resolve_name(flow, name, candidates)
        if target is None:
            log.info("inbound.field_not_in_flow", endpoint=spec.name, field=name, flow=flow_id)
            continue
        fields[target] = value
    uploads: list[Upload] = []
    for part, ups in payload.files.items():
        target = resolve_name(flow, part, spec.files.get(part, ()))
        if target is None:
            raise ValidationError(f"flow {flow_id!r} has no file field for {part!r}", field=part)
        uploads += [Upload(target, u.filename, u.media_type, u.open, u.sha256) for u in ups]
    return fields, uploads


async def read_payload(request: web.Request, spec: DomainSpec) -> Payload:
    """Multipart: text parts (or a JSON part named ``metadata``), file parts named as in ``spec.files``."""
    rt = request.app[RUNTIME]
    if not request.content_type.startswith("multipart/"):
        raise ValidationError("send the document as multipart/form-data", field="Content-Type")
    payload = Payload({})
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        name = part.name or ""
        if part.filename is None:
            text = await part.text()
            if name == "metadata":
                try:
                    meta = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"the metadata part is not valid JSON: {exc}", field="metadata") from exc
                if not isinstance(meta, dict):
                    raise ValidationError("the metadata part must be a JSON object", field="metadata")
                payload.form.update(meta)
            else:
                payload.form[name] = text
            continue
        if name not in spec.files:
            raise ValidationError(f"unexpected file part {name!r}", field=name,
                                  hint="file parts: " + ", ".join(spec.files))
        head = bytearray()

        async def chunks(p: Any = part, h: bytearray = head) -> Any:
            while True:
                chunk = await p.read_chunk(CHUNK)
                if not chunk:
                    break
                if len(h) < 8:
                    h.extend(chunk[:8])
                yield chunk

        blob = await rt.blobs.put(chunks(), max_size=rt.settings.max_upload_size)
        media_type = sniff_media_type(part.headers.get("Content-Type", ""), bytes(head), part.filename)
        index = len(payload.files.get(name, []))
        payload.magic[(name, index)] = bytes(head)
        payload.files.setdefault(name, []).append(blob_upload(rt, name, part.filename, media_type, blob))
    return payload


def sniff_media_type(declared: str, head: bytes, filename: str) -> str:
    """The declared type, or (when a client sends none or octet-stream) one read from the first bytes."""
    media_type = (declared or "").split(";")[0].strip().lower()
    if media_type and media_type != "application/octet-stream":
        return media_type
    if head.startswith(b"%PDF"):
        return "application/pdf"
    if head.lstrip().startswith(b"<"):
        return "application/xml"
    import mimetypes
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def entity_of(request: web.Request, payload: Payload) -> str:
    rt = request.app[RUNTIME]
    entity = payload.text("entity")
    async with rt.store.transaction() as tx:
        if entity:
            await repo.get_entity(tx, entity)
        elif payload.text("siren"):
            found = await repo.entity_by_siren(tx, payload.text("siren"))
            if found is None:
                raise ValidationError(f"no entity has SIREN {payload.text('siren')}", field="siren")
            entity = found.id
        else:
            raise ValidationError("'entity' (an entity id) or 'siren' is required", field="entity")
    await require_role(request, entity, "editor")
    return entity


def raise_first(errors: list[ValidationError]) -> None:
    if errors:
        first = errors[0]
        others = "; ".join(f"{e.field}: {e.message}" for e in errors[1:])
        raise ValidationError(first.message, field=first.field, hint=f"also: {others}" if others else None)


def handler(spec: DomainSpec, *, extra_check: Callable[[Any, Payload], Any] | None = None,
            flow_for: Callable[[Payload], str] | None = None,
            adjust: Callable[[Any, dict[str, Any], Payload], dict[str, Any]] | None = None
            ) -> Callable[[web.Request], Any]:
    """The POST handler: parse, authorise, validate (``spec.validate`` then ``extra_check``), submit."""

    async def post(request: web.Request) -> web.Response:
        rt = request.app[RUNTIME]
        payload = await read_payload(request, spec)
        entity = await entity_of(request, payload)
        errors = spec.validate(payload)
        if extra_check is not None:
            errors += await extra_check(rt, payload)
        raise_first(errors)
        flow_id = flow_for(payload) if flow_for else spec.flow_id(rt, payload)
        rt.flow(flow_id)
        fields, uploads = to_flow(rt, flow_id, spec, payload)
        if adjust is not None:
            fields = adjust(rt.flow(flow_id), fields, payload)
        start = payload.text("start").lower() not in ("false", "0", "non", "no")
        doc = await submit(rt, entity_id=entity, flow_id=flow_id, fields=fields, uploads=uploads,
                           actor=actor(request), start=start)
        url = status_url(rt, doc.id)
        return web.json_response({"id": doc.id, "status_url": url, "flow": flow_id, "state": doc.state},
                                 status=201, headers={"Location": url})
    return post


def is_pdf(payload: Payload, part: str, index: int = 0) -> bool:
    return payload.magic.get((part, index), b"").startswith(b"%PDF")


def openapi_post(summary: str, tag: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    problem = {"$ref": "#/components/responses/Problem"}
    return {"post": {
        "summary": summary, "tags": [tag],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": required, "properties": properties}}}},
        "responses": {"201": {"description": "Document created and started", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"id": {"type": "string"}, "status_url": {"type": "string"},
                                                        "flow": {"type": "string"}, "state": {"type": "string"}}}}}},
                      "422": problem, "403": problem}}}


ENTITY_PROPS = {"entity": {"type": "string", "description": "entity id (or give siren)"},
                "siren": {"type": "string", "pattern": "^\\d{9}$"},
                "start": {"type": "boolean", "default": True, "description": "start the flow at once"},
                "metadata": {"type": "string", "description": "the text fields as one JSON object"}}
FILE_PROP = {"type": "string", "format": "binary"}
