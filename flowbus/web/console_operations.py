"""Console, for platform administrators: queues and dead letters (re-queue, discard), documents waiting the longest per flow, scheduled jobs and their last run, processes seen alive."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowbus import heartbeat, jobs, metrics, scheduler
from flowbus.clock import parse_iso
from flowbus.errors import NotFound
from flowbus.people import audit
from flowbus.store import repo
from flowbus.web import console
from flowbus.web.admin import document_title

BASE = "/admin/operations"
QUEUES = metrics.queues()
WAITING_STATES = ("running", "waiting", "error")
PER_FLOW = 5


def _ago(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d}"
    return f"{seconds // 86400} j {seconds % 86400 // 3600} h"


async def page(request: web.Request) -> web.Response:
    who = await console.signed_in(request)
    console.require_platform_admin(request, who)
    rt = console.runtime(request)
    now = rt.clock.now()
    stats = await rt.bus.queue_stats(list(QUEUES))
    letters = {q: await rt.bus.dead_letters(q) for q in QUEUES}
    waiting = []
    async with rt.store.transaction() as tx:
        for flow in sorted(rt.flows.values(), key=lambda f: f.label):
            rows = []
            for state in WAITING_STATES:  # one index range each: (flow_id, state, updated_at)
                rows += await tx.fetch("SELECT * FROM documents WHERE flow_id = $1 AND state = $2 "
                                       "ORDER BY updated_at LIMIT $3", flow.id, state, PER_FLOW)
            rows = sorted(rows, key=lambda r: r["updated_at"])[:PER_FLOW]
            if rows:
                docs = [repo.document_from_row(r, []) for r in rows]
                waiting.append({"flow": flow, "docs": [{"doc": d, "title": document_title(d, rt.flows),
                                                        "since": _ago(now - d.updated_at),
                                                        "state": flow.state_label(d.state)} for d in docs]})
        names = {i: e.name for i, e in (await repo.entities_by_ids(
            tx, {d["doc"].entity_id for w in waiting for d in w["docs"]})).items()}
        subjects = {}  # dead letter id → what it was about, in words
        for items in letters.values():
            for d in items:
                doc_id = d.message.body.get("document") if isinstance(d.message.body, dict) else None
                doc = await repo.document_with_files(tx, doc_id) if isinstance(doc_id, str) else None
                if doc is not None:
                    flow = rt.flows.get(doc.flow_id)
                    step = d.message.body.get("step")
                    label = flow.step(step).label if flow and step and flow.has_step(step) else step
                    subjects[d.message.id] = f"« {document_title(doc, rt.flows)} »" + (f", étape « {label} »" if label else "")
        scheduled = []
        for item in await scheduler.last_runs(tx, jobs.platform_jobs()):
            run = item["run"]
            scheduled.append({"label": item["job"].label, "run": run,
                              "ago": _ago(now - parse_iso(run["started_at"])) if run else None})
        processes = []
        for r in await heartbeat.seen(tx):
            age = now - parse_iso(r["last_seen_at"])
            processes.append({"row": r, "alive": age <= heartbeat.ALIVE, "ago": _ago(age)})
    return await console.page(request, "console_operations.html", who=who, stats=stats, queues=QUEUES,
                              letters=letters, waiting=waiting, names=names, processes=processes, subjects=subjects,
                              scheduled=scheduled)


async def _letter_action(request: web.Request, action: str) -> web.Response:
    who = await console.signed_in(request)
    console.require_platform_admin(request, who)
    rt = console.runtime(request)
    queue, message_id = request.match_info["queue"], request.match_info["id"]
    if queue not in QUEUES:
        raise web.HTTPNotFound(text="File inconnue.")
    letter = next((d for d in await rt.bus.dead_letters(queue) if d.message.id == message_id), None)
    try:
        if action == "requeue":
            await rt.bus.requeue_dead_letter(queue, message_id)
        else:
            await rt.bus.discard_dead_letter(queue, message_id)
    except NotFound:
        raise console.failed(BASE, "Ce message n'est plus dans les lettres mortes.") from None
    async with rt.store.transaction() as tx:
        await audit.record(tx, actor=who.actor, at=rt.clock.now(),
                           kind="admin.dead_letter.requeued" if action == "requeue" else "admin.dead_letter.discarded",
                           queue=queue, message=message_id, key=letter.message.key if letter else None,
                           error=letter.error if letter else None)
    raise console.done(BASE, "Message remis en file." if action == "requeue" else "Message supprimé.")


async def requeue(request: web.Request) -> web.Response:
    return await _letter_action(request, "requeue")


async def discard(request: web.Request) -> web.Response:
    return await _letter_action(request, "discard")


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get(BASE, page)
    app.router.add_post(BASE + "/lettres-mortes/{queue}/{id}/remettre", requeue)
    app.router.add_post(BASE + "/lettres-mortes/{queue}/{id}/supprimer", discard)
