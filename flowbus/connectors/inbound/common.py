"""What every inbound connector does: turn (entity, flow, fields, files) into a started document.

``submit`` is idempotent on an optional ``origin`` string: the document is created with the
actor ``<actor>|<origin>``, and a second call with the same origin finds that document (through
the journal's ``document.created`` entry) and only completes what is missing — the files not yet
attached, the start not yet done.  Glaneur and batch entries use it so a crash between two of
these steps never creates a document twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from flowbus import documents
from flowbus.errors import ValidationError
from flowbus.models import BlobRef, Document

ChunkSource = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Upload:
    """A file for a document field; ``open()`` yields its bytes (a blob, a zip member, a local file)."""

    field: str
    filename: str
    media_type: str
    open: ChunkSource
    sha256: str | None = None


def blob_upload(rt: Any, field: str, filename: str, media_type: str, blob: BlobRef) -> Upload:
    return Upload(field, filename, media_type, lambda: rt.blobs.open(blob.key), blob.sha256)


def status_url(rt: Any, document_id: str) -> str:
    return f"/api/v1/documents/{document_id}"


def check_against_flow(rt: Any, flow_id: str, fields: dict[str, Any], uploads: list[Upload]) -> dict[str, Any]:
    """Validate fields and files against the flow before anything is written.

    Raises:
        ValidationError: naming the first offending field (a missing required field included).
    """
    from flowbus.flows.fields import check_fields, missing_for_start
    flow = rt.flow(flow_id)
    values = check_fields(flow, fields, partial=True)
    by_name = {f.name: f for f in flow.fields}
    for up in uploads:
        f = by_name.get(up.field)
        if f is None or f.type not in ("file", "files"):
            raise ValidationError(f"le flux {flow_id} n'a pas de champ fichier « {up.field} »", field=up.field,
                                  hint="champs fichiers : " + ", ".join(n for n, d in by_name.items()
                                                                        if d.type in ("file", "files")))
        if f.type == "file" and sum(1 for u in uploads if u.field == up.field) > 1:
            raise ValidationError(f"le champ « {up.field} » ne prend qu'un fichier", field=up.field)
    defaults = {f.name: f.default for f in flow.fields if f.default is not None and f.type not in ("file", "files")}
    missing = missing_for_start(flow, {**defaults, **values}, {u.field for u in uploads})
    if missing:
        raise ValidationError(f"champ(s) obligatoire(s) manquant(s) : {', '.join(missing)}", field=missing[0])
    return values


async def find_by_origin(rt: Any, actor: str) -> str | None:
    async with rt.store.transaction() as tx:
        return await tx.fetchval("SELECT document_id FROM journal WHERE kind = 'document.created' AND actor = $1 "
                                 "ORDER BY at LIMIT 1", actor)


async def submit(rt: Any, *, entity_id: str, flow_id: str, fields: dict[str, Any], uploads: list[Upload],
                 actor: str, start: bool = True, origin: str | None = None, resume: bool = False) -> Document:
    """Create the document, attach its files, start it.

    ``resume``: a previous call with this ``origin`` may have been interrupted; find its document
    and complete it instead of creating another (see the module docstring).
    """
    values = check_against_flow(rt, flow_id, fields, uploads)
    who = f"{actor}|{origin}" if origin else actor
    doc_id = await find_by_origin(rt, who) if origin and resume else None
    if doc_id is None:
        doc = await documents.create_document(rt, entity_id=entity_id, flow_id=flow_id, fields=values, actor=who)
    else:
        doc = await documents.get_document(rt, doc_id)
    have = {(f.field, f.filename, f.sha256) for f in doc.files}
    have_count: dict[str, int] = {}
    for f in doc.files:
        have_count[f.field] = have_count.get(f.field, 0) + 1
    seen: dict[str, int] = {}
    for up in uploads:
        seen[up.field] = seen.get(up.field, 0) + 1
        if doc_id is not None and (((up.field, up.filename, up.sha256) in have and up.sha256)
                                   or seen[up.field] <= have_count.get(up.field, 0)):
            continue  # attached before a crash
        await documents.attach_file(rt, doc.id, up.field, filename=up.filename, media_type=up.media_type,
                                    chunks=up.open(), actor=who)
    if start:
        current = await documents.get_document(rt, doc.id)
        if current.state == "draft":
            await documents.run_action(rt, doc.id, "start", actor=who)
    return await documents.get_document(rt, doc.id)
