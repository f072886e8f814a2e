"""Document service: create, change fields, attach files, run actions — used by every API layer.

Each operation is one transaction that writes the document and its journal entries together;
file bytes are streamed to the BlobStore first, so a failed upload leaves nothing attached.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace
from typing import Any

from flowbus import filecheck, journal
from flowbus.errors import Conflict, PayloadTooLarge, ValidationError
from flowbus.flows import associations
from flowbus.flows.fields import check_fields
from flowbus.models import Document, FileRef
from flowbus.store import repo
from flowbus.web import french  # pure formatting: « 1,5 Mo »

EDITABLE_STATES = ("draft", "error")
_STATE_WORDS = {"running": "en cours", "waiting": "en attente", "done": "terminé", "cancelled": "annulé",
                "rejected": "refusé"}
_BAD_FILENAME = re.compile(r"[\x00-\x1f/\\]")


def new_id() -> str:
    return uuid.uuid4().hex


def check_filename(filename: str) -> str:
    name = (filename or "").strip()
    if not name or name in (".", "..") or _BAD_FILENAME.search(name) or ".." in name.split("."):
        raise ValidationError(f"Nom de fichier invalide « {filename} » : un nom simple est attendu, sans chemin, "
                              "sans « .. » ni caractère de contrôle.", field="filename")
    if len(name) > 255:
        raise ValidationError("Nom de fichier trop long : 255 caractères au plus.", field="filename")
    return name


async def create_document(rt: Any, *, entity_id: str, flow_id: str, fields: dict[str, Any], actor: str) -> Document:
    flow = rt.flow(flow_id)
    values = check_fields(flow, fields or {}, partial=True)
    for f in flow.fields:
        if f.default is not None and f.name not in values and f.type not in ("file", "files"):
            values[f.name] = f.default
    now = rt.clock.now()
    doc = Document(new_id(), entity_id, flow_id, "draft", values, 1, now, now, flow_version=flow.version or None)
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, entity_id)
        if not entity.active:
            raise ValidationError(f"La collectivité « {entity.name} » est désactivée : elle ne reçoit plus de "
                                  "nouveau document.", field="entity")
        if not await associations.is_used(tx, entity_id, flow_id):
            raise ValidationError(f"Le flux « {flow.label} » n'est pas utilisé par la collectivité « {entity.name} ».",
                                  field="flow")
        await repo.insert_document(tx, doc)
        await journal.append(tx, entity_id=entity_id, actor=actor, kind="document.created", at=now,
                             document_id=doc.id, data={"flow": flow_id, "fields": sorted(values)})
    return doc


async def update_fields(rt: Any, document_id: str, fields: dict[str, Any], *, actor: str,
                        expected_version: int | None = None) -> Document:
    """Merge ``fields`` into the document.

    Without ``expected_version`` a concurrent change is merged (re-read and re-applied), so two
    concurrent updates of different fields both survive; with it, a stale version is a Conflict.
    """
    for _ in range(20):
        async with rt.store.transaction() as tx:
            doc = await repo.get_document(tx, document_id, with_files=False)
            if expected_version is not None and doc.version != expected_version:
                raise Conflict(f"Le document a changé entre-temps (version {doc.version}, pas {expected_version}) : rechargez-le.",
                               field="version", expected_version=expected_version)
            if doc.state not in EDITABLE_STATES:
                raise Conflict(f"Les champs d'un document {_STATE_WORDS.get(doc.state, doc.state)} ne peuvent plus être modifiés.",
                               field="state", hint="fields can change in the draft and error states")
            values = check_fields(rt.flow(doc.flow_id), fields, partial=True)
            merged = {**doc.fields, **values}
            try:
                new = await repo.update_document(tx, replace(doc, fields=merged), expected_version=doc.version,
                                                 at=rt.clock.now())
            except Conflict:
                if expected_version is not None:
                    raise
                continue
            await journal.append(tx, entity_id=doc.entity_id, actor=actor, kind="fields.changed",
                                 at=rt.clock.now(), document_id=doc.id, data={"fields": sorted(values)})
            return new
    raise Conflict("Le document est modifié par d'autres au même moment : réessayez.", field="fields")


def _file_field(rt: Any, doc: Document, field_name: str) -> Any:
    flow = rt.flow(doc.flow_id)
    try:
        field = flow.field(field_name)
    except Exception:  # noqa: BLE001 - flow.field raises its own not-found
        field = None
    if field is None:
        raise ValidationError(f"Le flux « {flow.label} » n'a pas de champ « {field_name} ».", field=field_name)
    if field.type not in ("file", "files"):
        raise ValidationError(f"Le champ « {field_name} » n'est pas un champ de fichier.", field=field_name)
    return field


async def attach_file(rt: Any, document_id: str, field_name: str, *, filename: str, media_type: str,
                      chunks: AsyncIterable[bytes], actor: str, append: bool | None = None) -> FileRef:
    filename = check_filename(filename)
    async with rt.store.transaction() as tx:
        doc = await repo.get_document(tx, document_id, with_files=False)
    field = _file_field(rt, doc, field_name)
    if doc.state not in EDITABLE_STATES:
        raise Conflict(f"Les fichiers d'un document {_STATE_WORDS.get(doc.state, doc.state)} ne peuvent plus être modifiés.", field="state")
    media_type = (media_type or "application/octet-stream").split(";")[0].strip().lower()
    if field.media_types and media_type not in field.media_types:
        raise ValidationError(f"Le fichier « {filename} » (champ « {field.label} ») est de type {media_type} ; "
                              f"ce champ accepte : {', '.join(field.media_types)}.", field=field_name)
    limit = min(x for x in (field.max_size, rt.settings.max_upload_size) if x)
    too_large = PayloadTooLarge(f"Le fichier « {filename} » (champ « {field.label} ») dépasse la taille permise "
                                f"({french.size(limit)}).", field=field_name)
    facts = filecheck.FileFacts(kind="")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        if filecheck.kind_of(media_type, filename, field.content):
            # checked at the door, before anything is stored: spooled, then opened in a worker thread
            await _spool(chunks, spool, limit, too_large)
            facts = await asyncio.to_thread(filecheck.inspect, spool, filename=filename, field=field_name,
                                            media_type=media_type, content=field.content, label=field.label)
            spool.seek(0)
            chunks = _unspool(spool)
        try:
            blob = await rt.blobs.put(chunks, max_size=limit)
        except PayloadTooLarge as exc:
            raise too_large from exc
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        doc = await repo.get_document(tx, document_id, with_files=False)
        if doc.state not in EDITABLE_STATES:
            raise Conflict(f"Les fichiers d'un document {_STATE_WORDS.get(doc.state, doc.state)} ne peuvent plus être modifiés.", field="state")
        multiple = field.type == "files" if append is None else append
        ref = await repo.put_file(tx, FileRef(doc.id, field_name, 0, filename, media_type, blob.size, blob.sha256,
                                              blob.key, now), replace=not multiple)
        await repo.update_document(tx, doc, expected_version=doc.version, at=now)
        await journal.append(tx, entity_id=doc.entity_id, actor=actor, kind="file.added", at=now,
                             document_id=doc.id, data={"field": field_name, "filename": filename,
                                                       "sha256": blob.sha256, "size": blob.size, **facts.journal()})
    return ref


_SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger uploads are spooled to a temporary file


async def _spool(chunks: AsyncIterable[bytes], spool: Any, limit: int, too_large: PayloadTooLarge) -> None:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large
        spool.write(chunk)
    spool.seek(0)


async def _unspool(spool: Any) -> AsyncIterator[bytes]:
    while chunk := spool.read(256 * 1024):
        yield chunk



async def run_action(rt: Any, document_id: str, action: str, *, actor: str, comment: str | None = None) -> Document:
    for _ in range(10):
        try:
            async with rt.store.transaction() as tx:
                doc, row = await repo.document_and_row(tx, document_id)
                if action == "start":
                    return await rt.engine.start_document(tx, doc, actor=actor, row=row)
                return await rt.engine.admin_action(tx, doc, action, actor=actor, comment=comment, row=row)
        except Conflict as exc:
            if exc.expected_version is None:
                raise
    raise Conflict("Le document est modifié par d'autres au même moment : réessayez.", field="action")


async def get_document(rt: Any, document_id: str) -> Document:
    async with rt.store.transaction() as tx:
        return await repo.get_document(tx, document_id)
