"""Console: create and edit a document in the browser — a form generated from the flow's fields, every error in French next to its field, save as draft or « Envoyer »."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from flowbus import addressbook, documents
from flowbus.errors import FlowbusError, NotFound, ValidationError
from flowbus.flows import associations
from flowbus.flows.fields import normalize_value
from flowbus.people import access
from flowbus.store import repo
from flowbus.web import console
from flowbus.web.admin import document_title

BASE = "/admin/documents"


async def _iter(field: FileField) -> Any:
    while chunk := field.file.read(256 * 1024):
        yield chunk


async def _flows_for(request: web.Request, who: Any, entity_id: str) -> list[Any]:
    """The flows ``who`` may create documents of in this collectivité, and that it uses."""
    rt = console.runtime(request)
    out = []
    async with rt.store.transaction() as tx:
        use = await associations.uses(tx, entity_id, list(rt.flows))
        for flow in sorted(rt.flows.values(), key=lambda f: f.label):
            if use[flow.id].enabled and access.has(await access.role_on(tx, who, entity_id, flow.id), "editor"):
                out.append(flow)
    return out


def _values_from_form(flow: Any, form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Each input field's value as typed, normalised, and the French error of each field that does not fit."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in flow.fields:
        if f.is_file or f.produced:
            continue
        raw: Any = form.get(f.name)
        if f.type == "boolean":
            raw = "true" if raw else "false"
        elif raw is None or (isinstance(raw, str) and not raw.strip()):
            values[f.name] = None
            continue
        try:
            values[f.name] = normalize_value(f, raw.strip() if isinstance(raw, str) else raw)
        except ValidationError as exc:
            errors[f.name] = exc.message
    return values, errors


def _files_from_form(flow: Any, form: Any) -> dict[str, list[FileField]]:
    out: dict[str, list[FileField]] = {}
    for f in flow.fields:
        if f.is_file and not f.produced:
            chosen = [v for v in form.getall(f.name, []) if isinstance(v, FileField) and v.filename]
            if chosen:
                out[f.name] = chosen if f.type == "files" else chosen[:1]
    return out


async def _render(request: web.Request, who: Any, *, entity: Any, flow: Any, doc: Any = None,
                  shown: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                  status: int = 200) -> web.Response:
    contacts = []
    if any(f.type == "email" for f in flow.fields):  # the collectivité's address book as suggestions
        async with console.runtime(request).store.transaction() as tx:
            contacts = await addressbook.contacts(tx, entity.id, limit=300)
    return await console.page(request, "console_document_form.html", who=who, status=status, entity=entity,
                              contacts=contacts, max_upload=console.runtime(request).settings.max_upload_size,
                              flow=flow, doc=doc, shown=shown if shown is not None else (doc.fields if doc else {}),
                              errors=errors or {}, title=document_title(doc, console.runtime(request).flows) if doc else None)


async def new_page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    q = request.query
    entity, flows, flow = None, [], None
    if q.get("collectivite"):
        async with rt.store.transaction() as tx:
            text = q["collectivite"].strip()
            entity = await repo.entity_by_siren(tx, text.replace(" ", "")) or await repo.find_entity(tx, text)
        if entity is None:
            raise console.failed(f"{BASE}/nouveau", f"Aucune collectivité de SIREN ou d'identifiant « {text} ».")
        flows = await _flows_for(request, who, entity.id)
        if not flows:
            raise console.forbid(request, who, f"Vous ne pouvez créer aucun document pour « {entity.name} ».")
        flow = next((f for f in flows if f.id == q.get("flux")), None)
    if entity is not None and flow is not None:
        return await _render(request, who, entity=entity, flow=flow)
    async with rt.store.transaction() as tx:
        editable = (await access.scope(tx, who, "editor")).entity_ids
        choices = [] if editable is None else sorted(
            (await repo.entities_by_ids(tx, editable[:300])).values(), key=lambda e: e.name)
    return await console.page(request, "console_document_new.html", who=who, entity=entity, flows=flows,
                              choices=choices, query=q)


async def create(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    form = await request.post()
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, str(form.get("collectivite", "")))
    flow = rt.flow(str(form.get("flux", "")))
    await console.require_entity_role(request, who, entity.id, "editor", flow.id)
    values, errors = _values_from_form(flow, form)
    if errors:
        return await _render(request, who, entity=entity, flow=flow, shown=dict(form), errors=errors, status=422)
    try:
        doc = await documents.create_document(rt, entity_id=entity.id, flow_id=flow.id,
                                              fields={k: v for k, v in values.items() if v is not None},
                                              actor=who.actor)
    except FlowbusError as exc:
        return await _render(request, who, entity=entity, flow=flow, shown=dict(form),
                             errors={exc.field or "flux": exc.message}, status=422)
    return await _finish(request, who, entity, flow, doc, form)


async def _finish(request: web.Request, who: Any, entity: Any, flow: Any, doc: Any, form: Any) -> web.Response:
    """Attach the chosen files, then send the document if asked; errors are shown on the document's form."""
    rt = console.runtime(request)
    errors: dict[str, str] = {}
    for name, chosen in _files_from_form(flow, form).items():
        for i, upload in enumerate(chosen):
            try:
                await documents.attach_file(rt, doc.id, name, filename=upload.filename,
                                            media_type=upload.content_type, chunks=_iter(upload), actor=who.actor,
                                            append=i > 0 or None)
            except FlowbusError as exc:
                errors[name] = exc.message if upload.filename in exc.message \
                    else f"« {upload.filename} » refusé : {exc.message}"
                break
    doc = await documents.get_document(rt, doc.id)
    if errors:
        return await _render(request, who, entity=entity, flow=flow, doc=doc, errors=errors, status=422)
    if form.get("action") == "envoyer":
        try:
            await documents.run_action(rt, doc.id, "start", actor=who.actor)
        except FlowbusError as exc:
            return await _render(request, who, entity=entity, flow=flow, doc=doc,
                                 errors={exc.field or "flux": exc.message}, status=422)
        raise console.done(f"{BASE}/{doc.id}", "Document envoyé : il suit maintenant son circuit.")
    raise console.done(f"{BASE}/{doc.id}", "Brouillon enregistré.")


async def _editable(request: web.Request) -> tuple[Any, Any, Any, Any]:
    who = await console.signed_in(request)
    rt = console.runtime(request)
    try:
        doc = await documents.get_document(rt, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="Document introuvable.") from None
    await console.require_entity_role(request, who, doc.entity_id, "editor", doc.flow_id)
    if doc.state not in documents.EDITABLE_STATES:
        raise console.failed(f"{BASE}/{doc.id}", "Ce document ne se modifie plus : il suit son circuit.")
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, doc.entity_id)
    return who, doc, entity, rt.flow(doc.flow_id)


async def edit_page(request: web.Request) -> web.Response:
    who, doc, entity, flow = await _editable(request)
    return await _render(request, who, entity=entity, flow=flow, doc=doc)


async def edit(request: web.Request) -> web.Response:
    who, doc, entity, flow = await _editable(request)
    rt = console.runtime(request)
    form = await request.post()
    values, errors = _values_from_form(flow, form)
    if errors:
        return await _render(request, who, entity=entity, flow=flow, doc=doc, shown=dict(form), errors=errors,
                             status=422)
    try:
        doc = await documents.update_fields(rt, doc.id, values, actor=who.actor)
    except FlowbusError as exc:
        return await _render(request, who, entity=entity, flow=flow, doc=doc, shown=dict(form),
                             errors={exc.field or "flux": exc.message}, status=422)
    return await _finish(request, who, entity, flow, doc, form)


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    r.add_get(BASE + "/nouveau", new_page)
    r.add_post(BASE + "/nouveau", create)
    r.add_get(BASE + "/{id}/modifier", edit_page)
    r.add_post(BASE + "/{id}/modifier", edit)
