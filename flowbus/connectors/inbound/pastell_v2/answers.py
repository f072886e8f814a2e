"""Pastell's way of answering: its JSON, its error document and status codes, the caller and its rights on an entity.

``pastell(handler)`` authenticates the call (``auth.authenticate``) and turns our errors into
``{"status": "error", "error-message": "<French>"}`` with Pastell's status codes: 400 for every
business error, 401 (with ``WWW-Authenticate: Basic realm="API Pastell"``), 403, 404, 429 with
``Retry-After`` when an address is blocked.  Handlers name entities with Pastell numbers
(``flowbus.connectors.inbound.pastell_v2.ids``): ``entity(request, ref)`` reads one, ``check`` asks
for a Pastell right on it (``rights``), ``entity_numbers`` numbers ours for an answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from flowbus.api import RUNTIME
from flowbus.connectors.inbound.pastell_v2 import auth, ids, rights
from flowbus.errors import FlowbusError, NotFound
from flowbus.people import limits
from flowbus.people.access import Principal
from flowbus.store import repo

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Caller:
    """Who calls, and (once asked) the Pastell ``id_u`` it is numbered as."""

    who: Principal
    numbers: dict[str, str] = field(default_factory=dict)


CALLER = web.RequestKey("pastell_caller", Caller)


def error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="API Pastell"'} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"status": "error", "error-message": message}, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def answer(data: Any, status: int = 200) -> web.Response:
    """JSON pretty-printed as Pastell's API v2 prints it."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False, indent=4))


def pastell(handler: Handler) -> Handler:
    """Authenticate (HTTP Basic or Bearer) and turn our errors into Pastell's error document."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            request[CALLER] = Caller(await auth.authenticate(request))
            return await handler(request)
        except limits.TooManyAttempts as exc:
            return error(429, exc.message, retry_after=exc.retry_after)
        except FlowbusError as exc:
            status = exc.status if exc.status in (401, 403, 404) else (500 if exc.status >= 500 else 400)
            if status >= 500:
                log.warning("pastell.failed", path=request.path, error=str(exc))
            return error(status, exc.message)
    return wrapped


def rt(request: web.Request) -> Any:
    return request.app[RUNTIME]


def who(request: web.Request) -> Principal:
    return request[CALLER].who


async def form(request: web.Request) -> dict[str, Any]:
    """Form fields of a POST/PATCH/DELETE (urlencoded or multipart, else the query), ``name[]`` kept as lists."""
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


# ---- numbers ------------------------------------------------------------------------------------


async def entity_numbers(request: web.Request, entity_ids: Iterable[str | None]) -> dict[str, str]:
    """Pastell ``id_e`` of each of our entity ids (None and the root are ``"0"``), numbered in creation order."""
    wanted = [e for e in dict.fromkeys(entity_ids) if e and e != ids.ROOT]
    out: dict[str, str] = {ids.ROOT: "0"}
    if wanted:
        runtime = rt(request)
        async with runtime.store.transaction() as tx:
            known = await repo.entities_by_ids(tx, wanted)
            ordered = sorted(wanted, key=lambda e: (known[e].created_at, e) if e in known else (runtime.clock.now(), e))
            nums = await ids.numbers(tx, ids.ENTITY, ordered, runtime.clock.now())
        out.update({e: str(n) for e, n in nums.items()})
    return out


async def entity_number(request: web.Request, entity_id: str | None) -> str:
    return (await entity_numbers(request, [entity_id]))[entity_id or ids.ROOT]


async def caller_id_u(request: web.Request) -> str:
    """The caller's Pastell ``id_u`` (a person or an API key), numbered the first time it is asked."""
    caller = request[CALLER]
    if "id_u" not in caller.numbers:
        runtime = rt(request)
        async with runtime.store.transaction() as tx:
            caller.numbers["id_u"] = str(await ids.number(tx, ids.USER, ids.user_key(caller.who),
                                                          runtime.clock.now()))
    return caller.numbers["id_u"]


# ---- entities and rights ----------------------------------------------------------------------


async def entity(request: web.Request, ref: Any, *, missing: str = "L'entité {ref} n'existe pas",
                 root: bool = False) -> str:
    """Our id of the entity a client names (Pastell number or our id); ``ids.ROOT`` for 0 when ``root``.

    Raises NotFound with ``missing`` (``{ref}``: what the client sent) when it names nothing."""
    runtime = rt(request)
    async with runtime.store.transaction() as tx:
        ours = await ids.entity_ref(tx, ref)
        if ours == ids.ROOT and root:
            return ours
        if ours is not None and ours != ids.ROOT and await repo.find_entity(tx, ours) is not None:
            return ours
    raise NotFound(missing.format(ref=ref))


async def allowed(request: web.Request, entity_id: str, droit: str, flow_id: str | None = None) -> bool:
    runtime = rt(request)
    chain: list[str] = []
    if entity_id != ids.ROOT:
        async with runtime.store.transaction() as tx:
            chain = await repo.ancestors(tx, entity_id)
    return rights.allowed(who(request), chain, droit, flow_id)


async def check(request: web.Request, entity_id: str, droit: str, flow_id: str | None = None) -> None:
    """Pastell's ``checkDroit(id_e, droit)``: Forbidden with Pastell's message unless the caller has it."""
    if not await allowed(request, entity_id, droit, flow_id):
        raise rights.refused(await entity_number(request, entity_id), droit, await caller_id_u(request))
