"""Batch actions on documents (send, retry, cancel) chosen in the document list: run in the background,
one document at a time, each with its own result in French.

``create`` checks the person's right on every document (the same rule as the document page: ``start``
needs an agent, the others an administrator) and records the batch; ``run`` works through the documents
not done yet — started by ``launch`` in this process, and again at start-up for a batch its process left
unfinished (``resume``).  Each document is claimed by a guarded update, so two processes never act twice.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from flowbus import documents
from flowbus.clock import isoformat, parse_iso
from flowbus.errors import FlowbusError, ValidationError
from flowbus.people import access

log = structlog.get_logger("flowbus.batches")

ACTION_LABELS = {"start": "Envoyer", "retry": "Relancer l'étape en erreur", "cancel": "Annuler"}
ROLE_FOR = {"start": "editor", "retry": "admin", "cancel": "admin"}
MAX_DOCUMENTS = 10_000
OUTCOME_LABELS = {"ok": "Fait", "error": "Échec", "refused": "Refusé", "running": "En cours"}


@dataclass(frozen=True)
class Batch:
    id: str
    actor: str
    action: str
    total: int
    created_at: Any
    finished_at: Any
    done: int = 0
    failed: int = 0

    @property
    def label(self) -> str:
        return ACTION_LABELS.get(self.action, self.action)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


async def create(rt: Any, who: access.Principal, action: str, docs: list[Any], *, title: Any) -> str:
    """Record a batch of ``action`` on ``docs`` (documents as listed); documents ``who`` may not act on are
    recorded already refused.  Returns the batch id; ``launch`` runs it."""
    if action not in ACTION_LABELS:
        raise ValidationError(f"Action groupée inconnue « {action} ».", field="action")
    if not docs:
        raise ValidationError("Aucun document choisi : cochez des documents ou choisissez « tous ceux du filtre ».",
                           field="documents")
    if len(docs) > MAX_DOCUMENTS:
        raise ValidationError(f"Au plus {MAX_DOCUMENTS} documents par action groupée : affinez le filtre.",
                           field="documents")
    batch_id = uuid.uuid4().hex
    now = isoformat(rt.clock.now())
    roles: dict[tuple[str, str], str | None] = {}
    async with rt.store.transaction() as tx:
        await tx.execute("INSERT INTO batches (id, actor, action, total, created_at) VALUES ($1, $2, $3, $4, $5)",
                         batch_id, who.actor, action, len(docs), now)
        for position, doc in enumerate(docs):
            key = (doc.entity_id, doc.flow_id)
            if key not in roles:
                roles[key] = await access.role_on(tx, who, doc.entity_id, doc.flow_id)
            allowed = access.has(roles[key], ROLE_FOR[action])
            await tx.execute("INSERT INTO batch_items (batch_id, position, document_id, title, outcome, message) "
                             "VALUES ($1, $2, $3, $4, $5, $6)", batch_id, position, doc.id, title(doc)[:300],
                             None if allowed else "refused",
                             None if allowed else "Vos droits ne permettent pas cette action sur ce document.")
    log.info("batch.created", batch=batch_id, action=action, documents=len(docs), actor=who.actor)
    return batch_id


def launch(rt: Any, batch_id: str) -> asyncio.Task[None]:
    """Run the batch in the background of this process; stopped (and taken up again later) at close."""
    tasks: set[asyncio.Task[None]] | None = rt.__dict__.get("_batch_tasks")
    if tasks is None:
        tasks = rt.__dict__["_batch_tasks"] = set()

        async def stop() -> None:
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        rt.on_close(stop)
    task = asyncio.create_task(run(rt, batch_id), name=f"batch-{batch_id}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def resume(rt: Any) -> int:
    """Take up the batches left unfinished (a process stopped during them)."""
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT id FROM batches WHERE finished_at IS NULL ORDER BY created_at LIMIT 100")
        # a document claimed by a process that stopped: its action may or may not have happened
        for r in rows:
            await tx.execute("UPDATE batch_items SET outcome = 'error', message = $2 WHERE batch_id = $1 "
                             "AND outcome = 'running'", r["id"],
                             "Interrompu par l'arrêt du serveur : vérifiez l'état du document.")
    for r in rows:
        launch(rt, r["id"])
    return len(rows)


async def run(rt: Any, batch_id: str) -> None:
    async with rt.store.transaction() as tx:
        row = await tx.fetchrow("SELECT actor, action FROM batches WHERE id = $1", batch_id)
    if row is None:
        return
    actor, action = row["actor"], row["action"]
    bound = log.bind(batch=batch_id, action=action)
    while True:
        async with rt.store.transaction() as tx:
            item = await tx.fetchrow("SELECT position, document_id FROM batch_items WHERE batch_id = $1 "
                                     "AND outcome IS NULL ORDER BY position LIMIT 1", batch_id)
            if item is None:
                await tx.execute("UPDATE batches SET finished_at = $2 WHERE id = $1 AND finished_at IS NULL",
                                 batch_id, isoformat(rt.clock.now()))
                break
            claimed = await tx.execute("UPDATE batch_items SET outcome = 'running' WHERE batch_id = $1 "
                                       "AND position = $2 AND outcome IS NULL", batch_id, item["position"])
        if not claimed:
            continue  # another process took it
        outcome, message = "ok", None
        try:
            await documents.run_action(rt, item["document_id"], action, actor=actor,
                                       comment=f"Action groupée « {ACTION_LABELS[action]} »")
        except FlowbusError as exc:
            outcome, message = "error", exc.message
            bound.warning("batch.document_failed", document=item["document_id"], error=exc.message)
        except Exception as exc:  # noqa: BLE001 - one document's failure never stops the batch
            outcome, message = "error", f"Erreur inattendue : {exc}"
            bound.error("batch.document_crashed", document=item["document_id"], exc_info=True)
        async with rt.store.transaction() as tx:
            await tx.execute("UPDATE batch_items SET outcome = $3, message = $4 WHERE batch_id = $1 AND position = $2",
                             batch_id, item["position"], outcome, message)
    bound.info("batch.finished")


async def get(tx: Any, batch_id: str) -> Batch | None:
    row = await tx.fetchrow("SELECT * FROM batches WHERE id = $1", batch_id)
    if row is None:
        return None
    counts = await tx.fetchrow(
        "SELECT COUNT(*) FILTER (WHERE outcome = 'ok') AS ok, "
        "COUNT(*) FILTER (WHERE outcome IN ('error', 'refused')) AS failed FROM batch_items WHERE batch_id = $1",
        batch_id)
    return Batch(id=row["id"], actor=row["actor"], action=row["action"], total=int(row["total"]),
                 created_at=parse_iso(row["created_at"]),
                 finished_at=parse_iso(row["finished_at"]) if row["finished_at"] else None,
                 done=int(counts["ok"]), failed=int(counts["failed"]))


async def items(tx: Any, batch_id: str, *, after: int = -1, limit: int = 200) -> list[dict[str, Any]]:
    rows = await tx.fetch("SELECT position, document_id, title, outcome, message FROM batch_items "
                          "WHERE batch_id = $1 AND position > $2 ORDER BY position LIMIT $3", batch_id, after, limit)
    return [dict(r) for r in rows]
