"""The document list's exports and batch actions: CSV of a filter (streamed), the files of chosen
documents as a zip (streamed), and batch actions (send, retry, cancel) with their progress page.

Documents are chosen by ticking them in the list, or « tous ceux du filtre »; either way they are read
page by page (``document_list.walk``), never all at once.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any
from urllib.parse import quote

from aiohttp import web

from flowbus import batches
from flowbus.api.auth import document_scope
from flowbus.errors import FlowbusError
from flowbus.store import repo
from flowbus.web import console, document_list, french
from flowbus.web.admin import STATE_LABELS, document_title

ZIP_MAX_DOCUMENTS = 500


def _stamp(rt: Any) -> str:
    return rt.clock.now().astimezone(french.PARIS).strftime("%Y%m%d-%H%M")


# ---- CSV ----------------------------------------------------------------------------------------

async def export_csv(request: web.Request) -> web.StreamResponse:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    scope = await document_scope(rt, who)
    f = document_list.parse(request.query, rt.flows)
    flow = rt.flows.get(f.flow) if f.flow else None
    columns = [flow.field(c) for c in flow.columns] if flow else []
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f"attachment; filename=documents-{_stamp(rt)}.csv"})
    await resp.prepare(request)
    buf = io.StringIO()
    out = csv.writer(buf, delimiter=";")
    out.writerow(["Document", "Collectivité", "Flux", "État", "Étape", "Créé le", "Modifié le", "Dernière erreur",
                  *[c.label for c in columns], "Identifiant"])
    await resp.write(("\ufeff" + buf.getvalue()).encode())  # the BOM lets spreadsheets read UTF-8
    names: dict[str, str] = {}
    pending: list[Any] = []

    async def flush() -> None:
        missing = {d.entity_id for d in pending} - names.keys()
        if missing:
            async with rt.store.transaction() as tx:
                names.update({eid: e.name for eid, e in (await repo.entities_by_ids(tx, missing)).items()})
        buf.seek(0)
        buf.truncate()
        for d in pending:
            fl = rt.flows.get(d.flow_id)
            out.writerow([document_title(d, rt.flows), names.get(d.entity_id, d.entity_id), fl.label if fl else d.flow_id,
                          fl.state_label(d.state) if fl else STATE_LABELS.get(d.state, d.state),
                          fl.step(d.step).label if fl and d.step and fl.has_step(d.step) else (d.step or ""),
                          french.datetime_fr(d.created_at), french.datetime_fr(d.updated_at), d.last_error or "",
                          *[french.field_value(c, d.fields.get(c.name)) for c in columns], d.id])
        await resp.write(buf.getvalue().encode())
        pending.clear()

    async for doc in document_list.walk(rt.store, scope, f):
        pending.append(doc)
        if len(pending) >= 500:
            await flush()
    await flush()
    await resp.write_eof()
    return resp


# ---- choosing documents -------------------------------------------------------------------------

async def _chosen(request: web.Request, form: Any, who: Any, *, limit: int) -> list[Any]:
    """The documents ticked (``doc`` values) or, with ``tous=1``, those of the filter — as the person may see them."""
    rt = console.runtime(request)
    scope = await document_scope(rt, who)
    if form.get("tous") == "1":
        f = document_list.parse(form, rt.flows)
        return [d async for d in document_list.walk(rt.store, scope, f, limit=limit + 1)]
    ids = list(dict.fromkeys(str(v) for v in form.getall("doc", [])))[:limit + 1]
    if not ids:
        return []
    async with rt.store.transaction() as tx:
        found = await repo.documents_by_ids(tx, ids)
    return [found[i] for i in ids if i in found and scope.allows(found[i].entity_id, found[i].flow_id)]


def _back(form: Any) -> str:
    keep = {k: str(form.get(k, "")) for k in document_list.KEYS if form.get(k)}
    return "/admin/?" + "&".join(f"{k}={quote(v)}" for k, v in keep.items())


# ---- batch actions ------------------------------------------------------------------------------

async def start_batch(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    form = await request.post()
    action = str(form.get("action", ""))
    if action == "zip":
        return await _zip(request, form, who)
    docs = await _chosen(request, form, who, limit=batches.MAX_DOCUMENTS)
    try:
        batch_id = await batches.create(rt, who, action, docs, title=lambda d: document_title(d, rt.flows))
    except FlowbusError as exc:
        raise console.failed(_back(form), exc.message) from None
    batches.launch(rt, batch_id)
    raise web.HTTPSeeOther(f"/admin/lots/{batch_id}")


async def batch_page(request: web.Request) -> web.Response:
    rt = console.runtime(request)
    who = await console.signed_in(request)
    after = int(request.query.get("apres", "-1")) if request.query.get("apres", "").lstrip("-").isdigit() else -1
    async with rt.store.transaction() as tx:
        batch = await batches.get(tx, request.match_info["id"])
        if batch is None or (batch.actor != who.actor and not who.is_platform_admin):
            raise web.HTTPNotFound(text="Action groupée introuvable.")
        rows = await batches.items(tx, batch.id, after=after, limit=201)
    more = len(rows) > 200
    rows = rows[:200]
    return await console.page(request, "console_batch.html", who=who, batch=batch, rows=rows,
                              outcomes=batches.OUTCOME_LABELS,
                              next_url=f"/admin/lots/{batch.id}?apres={rows[-1]['position']}" if more else None)


# ---- zip of files -------------------------------------------------------------------------------

class _Sink(io.RawIOBase):
    """Where zipfile writes: kept until the response takes it (zipfile needs no seek on a stream)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


async def _zip(request: web.Request, form: Any, who: Any) -> web.StreamResponse:
    rt = console.runtime(request)
    docs = await _chosen(request, form, who, limit=ZIP_MAX_DOCUMENTS)
    if not docs:
        raise console.failed(_back(form), "Aucun document choisi : cochez des documents ou choisissez "
                                          "« tous ceux du filtre ».")
    if len(docs) > ZIP_MAX_DOCUMENTS:
        raise console.failed(_back(form), f"Au plus {ZIP_MAX_DOCUMENTS} documents par archive zip : "
                                          "affinez le filtre.")
    resp = web.StreamResponse(headers={"Content-Type": "application/zip",
                                       "Content-Disposition": f"attachment; filename=documents-{_stamp(rt)}.zip"})
    await resp.prepare(request)
    sink = _Sink()
    used: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for doc in docs:
            async with rt.store.transaction() as tx:
                full = await repo.get_document(tx, doc.id, with_files=True)
            folder = _safe(f"{document_title(full, rt.flows)} ({full.id[:8]})")
            for ref in full.files:
                name = _unique(f"{folder}/{ref.field}-{ref.index + 1}-{_safe(ref.filename)}", used)
                with zf.open(zipfile.ZipInfo(name, date_time=_zip_time(full.created_at)), "w",
                             force_zip64=True) as member:
                    async for chunk in rt.blobs.open(ref.blob_key):
                        member.write(chunk)
                        if sink.position and len(sink.parts) > 16:
                            await resp.write(sink.take())
                await resp.write(sink.take())
    await resp.write(sink.take())
    await resp.write_eof()
    return resp


def _safe(name: str) -> str:
    cleaned = "".join("_" if c in '/\\:*?"<>|' or ord(c) < 32 else c for c in name).strip(" .")
    return cleaned[:120] or "document"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        stem, dot, ext = name.rpartition(".")
        candidate = f"{stem}-{n}.{ext}" if dot else f"{name}-{n}"
    used.add(candidate)
    return candidate


def _zip_time(value: Any) -> tuple[int, int, int, int, int, int]:
    local = value.astimezone(french.PARIS)
    return (max(local.year, 1980), local.month, local.day, local.hour, local.minute, local.second)


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get("/admin/documents.csv", export_csv)
    r.add_post("/admin/documents/lot", start_batch)
    r.add_get("/admin/lots/{id}", batch_page)

    async def resume(_app: web.Application) -> None:
        await batches.resume(runtime)
    app.on_startup.append(resume)
