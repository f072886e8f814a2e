"""``/api/v2``: the Pastell 2.0 REST calls business software makes, answered as Pastell answers them.

Authentication is HTTP Basic as in Pastell: the login is the API key's id or name, the password
is the key itself.  Errors are ``{"status": "error", "error-message": "<French>"}`` with Pastell's
status codes (400 for every business error, 401, 403, 404).  Every successful POST answers 201.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from flowbus import __version__ as FLOWBUS_VERSION
from flowbus import documents
from flowbus.api import RUNTIME
from flowbus.api.auth import (authenticate_key_limited, csrf_matches, key_principal, session_principal,
                              visible_entities)
from flowbus.people import access, accounts, limits, passwords, sessions, throttle
from flowbus.people.access import Principal
from flowbus.connectors.inbound.pastell_v2 import mapping
from flowbus.errors import Conflict, FlowbusError, Forbidden, NotFound, Unauthorized, ValidationError
from flowbus.models import Document
from flowbus.store import repo, textsearch

log = structlog.get_logger(__name__)
CHUNK = 256 * 1024
PASTELL_VERSION = "2.0.16"
_ORDER = {"reader": 1, "editor": 2, "admin": 3}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY = web.RequestKey("pastell_principal", Principal)


def _error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="API Pastell"'} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"status": "error", "error-message": message}, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False, indent=4))


def pastell(handler: Handler) -> Handler:
    """Authenticate (HTTP Basic) and turn our errors into Pastell's error document."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            request[KEY] = await _basic_auth(request)
            return await handler(request)
        except limits.TooManyAttempts as exc:
            return _error(429, exc.message, retry_after=exc.retry_after)
        except FlowbusError as exc:
            status = exc.status if exc.status in (401, 403, 404) else (500 if exc.status >= 500 else 400)
            if status >= 500:
                log.warning("pastell.failed", path=request.path, error=str(exc))
            return _error(status, exc.message)
    return wrapped


async def _basic_auth(request: web.Request) -> Principal:
    """HTTP Basic as Pastell: a person's login and password, or an API key (login: its id or name; password: the key).

    Without ``Authorization``, a person's web session cookie is accepted too (CSRF header required
    to change anything), so a signed-in agent reaches the same documents here as in the pages.
    """
    rt = request.app[RUNTIME]
    header = request.headers.get("Authorization", "")
    if not header:
        who = await session_principal(rt, request.cookies.get(sessions.COOKIE))
        if who is not None:
            if who.must_change_password:
                raise Forbidden("Accès interdit : choisissez d'abord votre propre mot de passe")
            if request.method not in ("GET", "HEAD") and not csrf_matches(who.session_csrf,
                                                                       request.headers.get("X-CSRF-Token")):
                raise Forbidden("Accès interdit : jeton CSRF (X-CSRF-Token) absent ou invalide")
            return who
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("Accès interdit : authentification HTTP Basic requise (login et mot de passe du compte, "
                           "ou identifiant et valeur d'une clé d'API)")
    try:
        login, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Accès interdit : en-tête Authorization illisible") from None
    address = limits.source_address(request)
    wrong = "Accès interdit : identifiant ou mot de passe incorrect"
    if password.startswith("fbk_"):  # an API key: high entropy, counted only when wrong
        try:
            key = await authenticate_key_limited(rt, password, address, door="pastell")
        except Unauthorized:
            raise Unauthorized(wrong) from None
        if login not in (key.id, key.name):
            wait = await limits.failed(rt, "pastell", address, key.id, reason="identifiant ne correspondant pas à la clé")
            if wait:
                raise limits.TooManyAttempts(wait, field="Authorization")
            raise Unauthorized(wrong)
        return key_principal(key)
    # a person's password: a blocked address (or login) is refused before the password is even looked at
    wait = await limits.retry_after(rt, "pastell", address, login)
    if wait:
        raise limits.TooManyAttempts(wait, field="Authorization")
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, login) if login else None
        if user is not None and throttle.is_locked(user, now):
            raise Unauthorized("Accès interdit : compte verrouillé après trop de mots de passe erronés")
        stored = await accounts.password_hash(tx, user.id) if user else None
        ok = passwords.verify(stored, password)
        if not ok and user is not None:
            await throttle.wrong_password(tx, user, now)  # kept: the block ends without raising
        who = await accounts.principal(tx, user) if ok and user is not None and user.active else None
    if not ok:
        log.warning("pastell.sign_in_failed", login=login, address=address)
        wait = await limits.failed(rt, "pastell", address, login, reason="mot de passe incorrect")
        if wait:
            raise limits.TooManyAttempts(wait, field="Authorization")
        raise Unauthorized(wrong)
    if who is None:
        raise Unauthorized("Accès interdit : compte désactivé")
    return who


def _rt(request: web.Request) -> Any:
    return request.app[RUNTIME]


def _key(request: web.Request) -> Principal:
    return request[KEY]


def _actor(request: web.Request) -> str:
    return _key(request).actor


async def _check_right(request: web.Request, id_e: str, role: str | None, flow_id: str | None = None, *,
                       droit: str = "lecture") -> None:
    """``role`` on the entity (for ``flow_id``'s documents); ``role`` None: any right at all on it (``droit``
    names the missing right in Pastell's message)."""
    rt = _rt(request)
    async with rt.store.transaction() as tx:
        if await repo.find_entity(tx, id_e) is None:
            raise NotFound(f"L'entité {id_e} n'existe pas")
        chain = await repo.ancestors(tx, id_e)
    who = _key(request)
    if role is None:
        if who.is_platform_admin or who.sees_something_of(chain):
            return
        raise Forbidden(f"Acces interdit id_e={id_e}, droit={droit}")
    have = "admin" if who.is_platform_admin else who.role_for(chain, flow_id)
    if have is None or _ORDER[have] < _ORDER[role]:
        droit = "lecture" if role == "reader" else "edition"
        raise Forbidden(f"Acces interdit id_e={id_e}, droit={droit}")


def _date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S")


async def _form(request: web.Request) -> dict[str, Any]:
    """Form fields of a POST/PATCH (urlencoded or multipart), ``name[]`` kept as lists."""
    if not request.can_read_body:
        return dict(request.query)
    data = await request.post()
    out: dict[str, Any] = {}
    for name in data:
        values = [v for v in data.getall(name) if isinstance(v, str)]
        if not values:
            continue
        if name.endswith("[]"):
            out[name[:-2]] = values
        else:
            out[name] = values[-1]
    return out


# ---- reading -------------------------------------------------------------------------------


async def _document(request: web.Request, role: str = "reader") -> Document:
    id_e, id_d = request.match_info["id_e"], request.match_info["id_d"]
    await _check_right(request, id_e, None)
    try:
        doc = await documents.get_document(_rt(request), id_d)
    except NotFound:
        raise NotFound(f"Le document {id_d} n'existe pas") from None
    if doc.entity_id != id_e:
        raise NotFound(f"Le document {id_d} n'appartient pas à l'entité {id_e}")
    try:
        await _check_right(request, id_e, role, doc.flow_id)
    except Forbidden:
        if role == "reader":  # no right on this flow: the document does not exist for this caller
            raise NotFound(f"Le document {id_d} n'existe pas") from None
        raise
    return doc


def _flux_of(request: web.Request, doc: Document) -> mapping.ResolvedFlux:
    return mapping.for_document(doc.flow_id, _rt(request).flows)


def detail(flux: mapping.ResolvedFlux, doc: Document, *, message: str | None = None) -> dict[str, Any]:
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
    action = mapping.last_action_for(flux, doc)
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


def _entity_json(e: Any, children: list[str] | None = None) -> dict[str, Any]:
    out = {"id_e": e.id, "denomination": e.name, "siren": e.siren or "", "type": "collectivite",
           "entite_mere": e.parent_id or "0", "centre_de_gestion": "0"}
    if children is not None:
        out["entite_fille"] = [{"id_e": c} for c in children]
    return out


async def list_entities(request: web.Request) -> web.Response:
    rt = _rt(request)
    visible = await visible_entities(rt, _key(request))
    async with rt.store.transaction() as tx:
        entities = await repo.list_entities(tx)
    return _json([_entity_json(e) for e in entities if visible is None or e.id in visible])


async def get_entity(request: web.Request) -> web.Response:
    id_e = request.match_info["id_e"]
    await _check_right(request, id_e, "reader")
    rt = _rt(request)
    async with rt.store.transaction() as tx:
        entity = await repo.get_entity(tx, id_e)
        children = [r["id"] for r in await tx.fetch("SELECT id FROM entities WHERE parent_id = $1 ORDER BY id", id_e)]
    return _json(_entity_json(entity, children))


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


async def list_documents(request: web.Request) -> web.Response:
    id_e = request.match_info["id_e"]
    await _check_right(request, id_e, None)
    rt = _rt(request)
    q = request.query
    async with rt.store.transaction() as tx:
        scope = await access.scope(tx, _key(request))
    try:
        offset, limit = max(0, int(q.get("offset", "0"))), max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        raise ValidationError("offset et limit doivent être des nombres", field="limit") from None
    flows: list[str] | None = None
    if q.get("type"):
        flows = [mapping.resolve_any(q["type"], rt.flows).flow.id]
    wanted = q.get("lastetat")
    sql, args = documents_query(rt.store.dialect, id_e, scope=scope, flow=flows[0] if flows else None,
                                search=q.get("search"), limit=None if wanted else limit, offset=offset)
    async with rt.store.transaction() as tx:
        rows = await tx.fetch(sql, *args)
        entity = await repo.get_entity(tx, id_e)
    out: list[dict[str, Any]] = []
    for row in rows:
        doc = repo._document(row, [])
        flux = mapping.for_document(doc.flow_id, rt.flows) if doc.flow_id in rt.flows else None
        if flux is None:
            continue
        action = mapping.last_action_for(flux, doc)
        if wanted and action != wanted:
            continue
        title_ours = flux.to_ours.get(flux.map.title_field, flux.map.title_field)
        out.append({"id_d": doc.id, "id_e": id_e, "role": "editeur", "last_action": action,
                    "last_action_date": _date(doc.updated_at), "type": flux.flux,
                    "creation": _date(doc.created_at), "modification": _date(doc.updated_at),
                    "titre": str(doc.fields.get(title_ours) or ""), "entite_base": entity.name,
                    "denomination": entity.name})
    if wanted:
        out = out[offset:offset + limit]
    return _json(out)


async def get_document(request: web.Request) -> web.Response:
    doc = await _document(request)
    return _json(detail(_flux_of(request, doc), doc))


# ---- writing -------------------------------------------------------------------------------


async def create_document(request: web.Request) -> web.Response:
    id_e = request.match_info["id_e"]
    await _check_right(request, id_e, None, droit="edition")
    form = await _form(request)
    if not form.get("type"):
        raise ValidationError("Le paramètre « type » (le flux) est obligatoire", field="type")
    flux = mapping.resolve_any(str(form["type"]), _rt(request).flows)
    await _check_right(request, id_e, "editor", flux.flow.id)
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
                  "content": detail(flux, doc)}, status=status)


async def patch_document(request: web.Request) -> web.Response:
    doc = await _document(request, "editor")
    flux = _flux_of(request, doc)
    fields = _fields_from_form(flux, await _form(request))
    if fields:
        try:
            await documents.update_fields(_rt(request), doc.id, fields, actor=_actor(request))
        except Conflict as exc:
            raise Conflict("L'action « modification » n'est pas permise : le dernier état du document "
                           f"({mapping.last_action_for(flux, doc)}) ne permet pas de déclencher cette action"
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
    refused = (f"L'action « {action} »  n'est pas permise : Le dernier état du document "
               f"({mapping.last_action_for(flux, doc)}) ne permet pas de déclencher cette action")
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
                                                 f"{mapping.state_label(mapping.last_action_for(flux, doc))}"},
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


# ---- journal -------------------------------------------------------------------------------


async def get_journal(request: web.Request) -> web.Response:
    rt = _rt(request)
    q = request.query
    try:
        offset, limit = max(0, int(q.get("offset", "0"))), max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        raise ValidationError("offset et limit doivent être des nombres", field="limit") from None
    sql, args = "SELECT * FROM journal WHERE 1 = 1", []
    if q.get("id_e"):
        await _check_right(request, q["id_e"], "reader")
        args.append(q["id_e"])
        sql += f" AND entity_id = ${len(args)}"
    else:
        visible = await visible_entities(rt, _key(request))
        if visible is not None:
            if not visible:
                return _json([])
            marks = []
            for e in visible:
                args.append(e)
                marks.append(f"${len(args)}")
            sql += f" AND entity_id IN ({', '.join(marks)})"
    if q.get("id_d"):
        args.append(q["id_d"])
        sql += f" AND document_id = ${len(args)}"
    if q.get("date_debut"):
        args.append(q["date_debut"])
        sql += f" AND at >= ${len(args)}"
    if q.get("date_fin"):
        args.append(q["date_fin"] + "T23:59:59.999999Z" if len(q["date_fin"]) == 10 else q["date_fin"])
        sql += f" AND at <= ${len(args)}"
    args.extend([limit, offset])
    sql += f" ORDER BY at DESC, entity_id, seq DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    async with rt.store.transaction() as tx:
        rows = await tx.fetch(sql, *args)
        flows = {}
        for r in rows:
            if r["document_id"] and r["document_id"] not in flows:
                row = await tx.fetchrow("SELECT flow_id FROM documents WHERE id = $1", r["document_id"])
                flows[r["document_id"]] = row["flow_id"] if row else ""
        names = {e.id: e.name for e in await repo.list_entities(tx)}
    out = []
    for r in rows:
        flow_id = flows.get(r["document_id"] or "", "")
        doc_type = mapping.for_document(flow_id, rt.flows).flux if flow_id in rt.flows else flow_id
        if q.get("type") and q["type"] != doc_type:
            continue
        data = json.loads(r["data"])
        out.append({"id_j": f"{r['entity_id']}:{r['seq']}", "type": 1 if r["document_id"] else 3,
                    "id_e": r["entity_id"], "id_u": r["actor"], "id_d": r["document_id"] or "0",
                    "action": data.get("action") or data.get("to") or r["kind"], "message": _journal_message(r, data),
                    "date": r["at"], "document_type": doc_type, "denomination": names.get(r["entity_id"], ""),
                    "preuve": r["hash"], "date_horodatage": r["at"], "message_horodate": r["prev_hash"]})
    return _json(out)


def _journal_message(row: dict[str, Any], data: dict[str, Any]) -> str:
    kind = row["kind"]
    if kind == "state.changed":
        return f"État : {data.get('from')} → {data.get('to')}" + (f" ({data['reason']})" if data.get("reason") else "")
    if kind == "file.added":
        return f"Fichier ajouté au champ {data.get('field')} : {data.get('filename')}"
    if kind == "fields.changed":
        return "Modification du document : " + ", ".join(data.get("fields", []))
    if kind == "document.created":
        return "Création du document"
    return data.get("message") or kind


def setup(app: web.Application, runtime: Any) -> None:
    r = app.router
    base = "/api/v2"
    r.add_get(f"{base}/version", pastell(get_version))
    r.add_get(f"{base}/entite", pastell(list_entities))
    r.add_get(f"{base}/entite/{{id_e}}", pastell(get_entity))
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
    r.add_get(f"{base}/journal", pastell(get_journal))
