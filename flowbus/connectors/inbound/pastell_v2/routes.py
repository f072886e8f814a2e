"""``/api/v2`` documents, flux and version: the Pastell 2.0 REST calls business software makes, answered as Pastell answers them.

Authentication (HTTP Basic, Bearer), the error document and rights are ``answers``/``auth``/``rights``;
entities are ``entities``, counts ``counts``.  Entities and journal entries are named by Pastell
numbers (``ids``); documents keep their ids (Pastell's ``id_d`` are strings too).  Every successful
POST answers 201.
"""

from __future__ import annotations

import base64
import csv
import io
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from flowbus import __version__ as FLOWBUS_VERSION
from flowbus import documents
from flowbus.api import RUNTIME
from flowbus.connectors.inbound.pastell_v2 import counts, entities, journal, laststate, mapping, roles
from flowbus.connectors.inbound.pastell_v2.answers import (allowed, answer, check, entity, entity_number, error,
                                                           form, pastell, who)
from flowbus.errors import Conflict, NotFound, ValidationError
from flowbus.models import Document
from flowbus.people import access
from flowbus.people.access import Principal
from flowbus.store import repo, textsearch

log = structlog.get_logger(__name__)
CHUNK = 256 * 1024
PASTELL_VERSION = "2.0.16"
_json = answer
_form = form


def _rt(request: web.Request) -> Any:
    return request.app[RUNTIME]


def _key(request: web.Request) -> Principal:
    return who(request)


def _actor(request: web.Request) -> str:
    return _key(request).actor


def _date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S")


# ---- reading -------------------------------------------------------------------------------


async def _document(request: web.Request, role: str = "reader") -> Document:
    """The document of the path, once Pastell's checks pass: ``entite:lecture`` on the entity, then
    ``<flux>:lecture`` (``role`` reader: without it the document does not exist for the caller) or
    ``<flux>:edition`` (``role`` editor)."""
    ref, id_d = request.match_info["id_e"], request.match_info["id_d"]
    id_e = await entity(request, ref)
    await check(request, id_e, "entite:lecture")
    try:
        doc = await documents.get_document(_rt(request), id_d)
    except NotFound:
        raise NotFound(f"Le document {id_d} n'existe pas") from None
    if doc.entity_id != id_e:
        raise NotFound(f"Le document {id_d} n'appartient pas à l'entité {ref}")
    droit = f"{_flux_of(request, doc).flux}:{'lecture' if role == 'reader' else 'edition'}"
    if not await allowed(request, id_e, droit, doc.flow_id):
        if role == "reader":  # no right on this flow: the document does not exist for this caller
            raise NotFound(f"Le document {id_d} n'existe pas")
        await check(request, id_e, droit, doc.flow_id)
    return doc


def _flux_of(request: web.Request, doc: Document) -> mapping.ResolvedFlux:
    return mapping.for_document(doc.flow_id, _rt(request).flows)


async def _detail(request: web.Request, flux: mapping.ResolvedFlux, doc: Document, *,
                  message: str | None = None) -> dict[str, Any]:
    rt = _rt(request)
    async with rt.store.transaction() as tx:
        last = await laststate.last_done(tx, rt.flows, [doc])
    return detail(flux, doc, message=message, last_done=last[doc.id])


async def _last_action(request: web.Request, doc: Document) -> str:
    rt = _rt(request)
    async with rt.store.transaction() as tx:
        return (await laststate.actions(tx, rt.flows, [doc]))[doc.id]


def detail(flux: mapping.ResolvedFlux, doc: Document, *, message: str | None = None,
           last_done: str | None = None) -> dict[str, Any]:
    """Pastell's document detail: info, data, action_possible, last_action."""
    data: dict[str, Any] = {}
    for name, value in doc.fields.items():
        if value is None or value == "":
            continue
        data[flux.to_pastell.get(name, name)] = flux.value_out(name, value)
    by_field: dict[str, list[str]] = {}
    for f in sorted(doc.files, key=lambda f: (f.field, f.index)):
        by_field.setdefault(flux.to_pastell.get(f.field, f.field), []).append(f.filename)
    data.update(by_field)
    action = mapping.last_action_for(flux, doc, last_done)
    possible = mapping.actions_possible(flux, doc)
    title_ours = flux.to_ours.get(flux.map.title_field, flux.map.title_field)
    last_message = doc.last_error if doc.state == "error" and doc.last_error else mapping.state_label(action)
    return {"info": {"id_d": doc.id, "type": flux.flux, "titre": str(doc.fields.get(title_ours) or ""),
                     "creation": _date(doc.created_at), "modification": _date(doc.updated_at)},
            "data": data, "action_possible": possible, "action-possible": possible,
            "last_action": {"action": action, "message": message or last_message, "date": _date(doc.updated_at)}}


async def get_version(request: web.Request) -> web.Response:
    return _json({"version": PASTELL_VERSION, "revision": FLOWBUS_VERSION, "last_changed_date": "",
                  "extensions_versions_accepted": [],
                  "version_complete": f"flowbus {FLOWBUS_VERSION} (compatibilité API Pastell {PASTELL_VERSION})"})


async def list_flux(request: web.Request) -> web.Response:
    rt = _rt(request)
    out: dict[str, Any] = {}
    for flux in mapping.available_flux(rt.flows):
        out[flux.flux] = {"type": "Flux Généraux", "nom": flux.map.label}
    for flow_id, flow in sorted(rt.flows.items()):
        out.setdefault(flow_id, {"type": "Flux flowbus", "nom": getattr(flow, "label", flow_id) or flow_id})
    return _json(out)


async def get_flux(request: web.Request) -> web.Response:
    flux = mapping.resolve_any(request.match_info["flux"], _rt(request).flows)
    out: dict[str, Any] = {}
    for f in getattr(flux.flow, "fields", ()):
        kind = getattr(f, "type", "text")
        out[flux.to_pastell.get(f.name, f.name)] = {
            "name": getattr(f, "label", None) or f.name,
            "type": {"files": "file", "boolean": "checkbox", "integer": "text", "number": "text"}.get(kind, kind),
            "requis": bool(getattr(f, "required", False)), "multiple": kind == "files"}
    return _json(out)


def documents_query(dialect: str, entity_id: str, *, scope: Any, flow: str | None, search: str | None,
                    limit: int | None, offset: int) -> tuple[str, list[Any]]:
    """The statement of Pastell's document list: an entity's documents by last change, newest first
    (index documents_entity_updated, or documents_entity_flow_updated for one flux), ``offset`` as
    Pastell pages; ``limit`` None: every one (the ``lastetat`` filter is applied afterwards)."""
    sql, args = "SELECT * FROM documents WHERE entity_id = $1", [entity_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    allowed = scope.sql(arg)
    if allowed is not None:
        sql += f" AND {allowed}"
    if flow:
        sql += f" AND flow_id = {arg(flow)}"
    text = textsearch.condition(dialect, "documents", search, arg)
    if text is not None:
        sql += f" AND {text}"
    sql += " ORDER BY updated_at DESC, id DESC"  # one direction: the index is read backwards
    if limit is not None:
        sql += f" LIMIT {arg(limit)} OFFSET {arg(offset)}"
    return sql, args


LIST_COLUMNS = ("id_d", "id_e", "role", "last_action", "last_action_date", "type", "creation", "modification",
                "titre", "entite_base", "denomination")


async def list_documents(request: web.Request) -> web.StreamResponse:
    """An entity's documents by last change, newest first; ``format=csv`` answers the same rows in CSV."""
    ref = request.match_info["id_e"]
    id_e = await entity(request, ref)
    await check(request, id_e, "entite:lecture")
    rt = _rt(request)
    q = request.query
    async with rt.store.transaction() as tx:
        scope = await access.scope(tx, _key(request))
    try:
        offset, limit = max(0, int(q.get("offset", "0"))), max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        raise ValidationError("offset et limit doivent être des nombres", field="limit") from None
    flow: str | None = None
    if q.get("type"):
        flux = mapping.resolve_any(q["type"], rt.flows)
        await check(request, id_e, f"{flux.flux}:lecture", flux.flow.id)
        flow = flux.flow.id
    wanted = q.get("lastetat")
    sql, args = documents_query(rt.store.dialect, id_e, scope=scope, flow=flow,
                                search=q.get("search"), limit=None if wanted else limit, offset=offset)
    async with rt.store.transaction() as tx:
        rows = await tx.fetch(sql, *args)
        found = await repo.get_entity(tx, id_e)
        docs = [repo._document(row, []) for row in rows if row["flow_id"] in rt.flows]
        actions = await laststate.actions(tx, rt.flows, docs)
    number = await entity_number(request, id_e)
    out: list[dict[str, Any]] = []
    for doc in docs:
        flux = mapping.for_document(doc.flow_id, rt.flows)
        action = actions[doc.id]
        if wanted and action != wanted:
            continue
        title_ours = flux.to_ours.get(flux.map.title_field, flux.map.title_field)
        out.append({"id_d": doc.id, "id_e": number, "role": "editeur", "last_action": action,
                    "last_action_date": _date(doc.updated_at), "type": flux.flux,
                    "creation": _date(doc.created_at), "modification": _date(doc.updated_at),
                    "titre": str(doc.fields.get(title_ours) or ""), "entite_base": found.name,
                    "denomination": found.name})
    if wanted:
        out = out[offset:offset + limit]
    if q.get("format") == "csv":
        return _csv(out, LIST_COLUMNS, header=q.get("csv_entete_colonne", "") not in ("", "0", "false"))
    return _json(out)


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...], *, header: bool) -> web.Response:
    """Rows as Pastell's CSV exports write them (``fputcsv``: comma, double quotes); a first row naming the
    columns when the client asks ``csv_entete_colonne=1``, as for Pastell's journal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return web.Response(text=buffer.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="documents.csv"'})


async def get_document(request: web.Request) -> web.Response:
    doc = await _document(request)
    return _json(await _detail(request, _flux_of(request, doc), doc))


# ---- writing -------------------------------------------------------------------------------


async def create_document(request: web.Request) -> web.Response:
    id_e = await entity(request, request.match_info["id_e"])
    await check(request, id_e, "entite:lecture")
    form = await _form(request)
    if not form.get("type"):
        raise ValidationError("Le paramètre « type » (le flux) est obligatoire", field="type")
    flux = mapping.resolve_any(str(form["type"]), _rt(request).flows)
    await check(request, id_e, f"{flux.flux}:edition", flux.flow.id)
    doc = await documents.create_document(_rt(request), entity_id=id_e, flow_id=flux.flow.id, fields={},
                                          actor=_actor(request))
    return _json({"id_d": doc.id, **detail(flux, doc)}, status=201)


def _fields_from_form(flux: mapping.ResolvedFlux, form: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in form.items():
        ours = flux.our_field(name)
        if ours is None:
            continue
        if flux.is_file(ours):
            raise ValidationError(f"Le champ « {name} » est un fichier : utilisez POST …/file/{name}", field=name)
        fields[ours] = flux.value_in(name, value)
    return fields


async def _result(request: web.Request, doc_id: str, flux: mapping.ResolvedFlux, status: int) -> web.Response:
    rt = _rt(request)
    doc = await documents.get_document(rt, doc_id)
    from flowbus.flows.fields import missing_for_start
    missing = missing_for_start(flux.flow, doc.fields, {f.field for f in doc.files})
    message = ""
    if missing:
        message = f"Le formulaire est incomplet : le champ « {flux.to_pastell.get(missing[0], missing[0])} » " \
                  "est obligatoire."
    return _json({"result": "ok", "formulaire_ok": 0 if missing else 1, "message": message,
                  "content": await _detail(request, flux, doc)}, status=status)


async def patch_document(request: web.Request) -> web.Response:
    doc = await _document(request, "editor")
    flux = _flux_of(request, doc)
    fields = _fields_from_form(flux, await _form(request))
    if fields:
        try:
            await documents.update_fields(_rt(request), doc.id, fields, actor=_actor(request))
        except Conflict as exc:
            raise Conflict("L'action « modification » n'est pas permise : le dernier état du document "
                           f"({await _last_action(request, doc)}) ne permet pas de déclencher cette action"
                           f" — {exc.message}") from exc
    return await _result(request, doc.id, flux, 200)


async def _spooled(part: Any) -> tempfile.SpooledTemporaryFile:
    spool = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            break
        spool.write(chunk)
    spool.seek(0)
    return spool


async def _from_spool(spool: Any) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = spool.read(CHUNK)
            if not chunk:
                break
            yield chunk
    finally:
        spool.close()


async def post_file(request: web.Request) -> web.Response:
    doc = await _document(request, "editor")
    flux = _flux_of(request, doc)
    name = request.match_info["field"]
    ours = flux.our_field(name)
    if ours is None or not flux.is_file(ours):
        raise ValidationError(f"Le champ « {name} » n'est pas un champ fichier du flux {flux.flux}", field=name)
    num = request.match_info.get("num")
    existing = len(doc.files_of(ours))
    multiple = flux.field_type(ours) == "files"
    if num is not None:
        if not num.isdigit():
            raise ValidationError("Le numéro de fichier doit être un entier", field="num")
        if multiple and int(num) < existing:
            raise Conflict(f"Le fichier n°{num} du champ « {name} » existe déjà ; le remplacement d'un fichier "
                           "d'un champ multiple n'est pas pris en charge", field=name)
    if not request.content_type.startswith("multipart/"):
        raise ValidationError("Envoyez le fichier en multipart/form-data (file_name, file_content)",
                              field="file_content")
    reader = await request.multipart()
    file_name: str | None = None
    attached = False
    while True:
        part = await reader.next()
        if part is None:
            break
        if part.name == "file_name":
            file_name = (await part.text()).strip()
            continue
        if part.name != "file_content":
            await part.release()
            continue
        media_type = part.headers.get("Content-Type", "application/octet-stream")
        if file_name:
            name_now = file_name

            async def chunks(p: Any = part) -> AsyncIterator[bytes]:
                while True:
                    chunk = await p.read_chunk(CHUNK)
                    if not chunk:
                        break
                    yield chunk
            source: AsyncIterator[bytes] = chunks()
        else:  # Pastell takes file_name over the part's file name, and it may come after the content
            fallback = part.filename or ""
            spool = await _spooled(part)
            rest = await reader.next()
            while rest is not None and rest.name != "file_name":
                await rest.release()
                rest = await reader.next()
            name_now = ((await rest.text()).strip() if rest is not None else "") or fallback
            if not name_now:
                spool.close()
                raise ValidationError("Le paramètre file_name est obligatoire", field="file_name")
            source = _from_spool(spool)
        if media_type == "application/octet-stream":
            media_type = _guess(name_now)
        await documents.attach_file(_rt(request), doc.id, ours, filename=name_now, media_type=media_type,
                                    chunks=source, actor=_actor(request), append=multiple)
        attached = True
        break
    if not attached:
        raise ValidationError("Le paramètre file_content est obligatoire", field="file_content")
    return await _result(request, doc.id, flux, 201)


def _guess(filename: str) -> str:
    import mimetypes
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def get_file(request: web.Request) -> web.StreamResponse:
    doc = await _document(request)
    flux = _flux_of(request, doc)
    name = request.match_info["field"]
    ours = flux.to_ours.get(name, name)
    num = int(request.match_info.get("num") or 0)
    files = doc.files_of(ours)
    if len(files) <= num:
        raise NotFound(f"Le fichier {name} n°{num} n'existe pas pour le document {doc.id}")
    ref = files[num]
    rt = _rt(request)
    if request.query.get("receive") in ("true", "1"):
        data = await rt.blobs.read(ref.blob_key)
        return _json({"file_name": ref.filename, "file_content": base64.b64encode(data).decode("ascii")})
    resp = web.StreamResponse(headers={
        "Content-Type": ref.media_type, "Content-Length": str(ref.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(ref.filename)}"})
    await resp.prepare(request)
    async for chunk in rt.blobs.open(ref.blob_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def post_action(request: web.Request) -> web.Response:
    doc = await _document(request, "editor")
    flux = _flux_of(request, doc)
    action = request.match_info["action"]
    rt = _rt(request)
    current = await _last_action(request, doc)
    refused = (f"L'action « {action} »  n'est pas permise : Le dernier état du document "
               f"({current}) ne permet pas de déclencher cette action")
    if action in mapping.DELETE_ACTIONS:
        if doc.state in ("done", "cancelled"):
            raise Conflict(refused)
        await documents.run_action(rt, doc.id, "cancel", actor=_actor(request), comment="suppression (API Pastell)")
        return _json({"result": True, "message": "Le document a été supprimé"}, status=201)
    if action in mapping.NOOP_ACTIONS:
        if doc.state != "draft":
            raise Conflict(refused)
        return _json({"result": True, "message": "Modification enregistrée"}, status=201)
    if action not in mapping.TRIGGER_ACTIONS:
        raise ValidationError(f"L'action « {action} » n'existe pas pour le flux {flux.flux}", field="action")
    if doc.state == "draft":
        try:
            await documents.run_action(rt, doc.id, "start", actor=_actor(request))
        except ValidationError as exc:
            raise ValidationError(f"L'action « {action} » n'est pas permise : le formulaire est incomplet "
                                  f"({exc.message})", field=exc.field) from exc
        return _json({"result": True, "message": f"Le document a été envoyé ({mapping.state_label(action)})"},
                     status=201)
    if doc.state == "error":
        await documents.run_action(rt, doc.id, "retry", actor=_actor(request))
        return _json({"result": True, "message": "L'étape en erreur est relancée"}, status=201)
    if doc.state in ("running", "waiting", "done"):
        # our flows chain their steps: the step this action would start is run (or was) automatically
        return _json({"result": True, "message": "Le document suit son circuit automatiquement : "
                                                 f"{mapping.state_label(current)}"},
                     status=201)
    raise Conflict(refused)


async def get_external_data(request: web.Request) -> web.Response:
    """The choices of a choice field (Pastell answers ``{code: label}``)."""
    doc = await _document(request)
    flux = _flux_of(request, doc)
    name = request.match_info["field"]
    ours = flux.our_field(name)
    field = next((f for f in getattr(flux.flow, "fields", ()) if f.name == ours), None)
    if field is None or not getattr(field, "choices", None):
        raise NotFound(f"Le champ « {name} » n'a pas de liste de choix dans le flux {flux.flux}")
    return _json(dict(field.choices))


async def patch_external_data(request: web.Request) -> web.Response:
    doc = await _document(request, "editor")
    flux = _flux_of(request, doc)
    name = request.match_info["field"]
    form = await _form(request)
    value = form.get(name, form.get("value"))
    if value is None and len(form) == 1:
        value = next(iter(form.values()))
    if value is None:
        raise ValidationError(f"Aucune valeur pour « {name} »", field=name)
    ours = flux.our_field(name)
    if ours is None:
        return await _result(request, doc.id, flux, 200)
    await documents.update_fields(_rt(request), doc.id, {ours: flux.value_in(name, value)}, actor=_actor(request))
    return await _result(request, doc.id, flux, 200)


async def unknown(request: web.Request) -> web.Response:
    """Anything else under ``/api/v2``: Pastell's 405 for a method it never takes, 404 otherwise."""
    if request.method.lower() not in ("get", "post", "patch", "delete"):
        return error(405, "Cette méthode n'est pas utilisable sur l'API Pastell")
    return error(404, f"La ressource {request.match_info['tail']} n'a pas été trouvée sur l'API Pastell")


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    base = "/api/v2"
    r.add_get(f"{base}/version", pastell(get_version))
    entities.setup(app)
    roles.setup(app)
    counts.setup(app)
    r.add_get(f"{base}/flux", pastell(list_flux))
    r.add_get(f"{base}/flux/{{flux}}", pastell(get_flux))
    r.add_get(f"{base}/entite/{{id_e}}/document", pastell(list_documents))
    r.add_post(f"{base}/entite/{{id_e}}/document", pastell(create_document))
    r.add_get(f"{base}/entite/{{id_e}}/document/{{id_d}}", pastell(get_document))
    r.add_patch(f"{base}/entite/{{id_e}}/document/{{id_d}}", pastell(patch_document))
    for suffix in ("", "/{num}"):
        r.add_post(f"{base}/entite/{{id_e}}/document/{{id_d}}/file/{{field}}{suffix}", pastell(post_file))
        r.add_get(f"{base}/entite/{{id_e}}/document/{{id_d}}/file/{{field}}{suffix}", pastell(get_file))
    r.add_post(f"{base}/entite/{{id_e}}/document/{{id_d}}/action/{{action}}", pastell(post_action))
    r.add_get(f"{base}/entite/{{id_e}}/document/{{id_d}}/externalData/{{field}}", pastell(get_external_data))
    r.add_patch(f"{base}/entite/{{id_e}}/document/{{id_d}}/externalData/{{field}}", pastell(patch_external_data))
    journal.setup(app)
    r.add_route("*", f"{base}/{{tail:.*}}", unknown)
