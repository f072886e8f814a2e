"""A document's route for people: each step of its flow as done, current (running, waiting, in error), skipped or still to come, with since when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowbus.flows.expr import context
from flowbus.flows.machine import should_run

CURRENT = {"running": "en cours", "waiting": "en attente d'une réponse", "error": "en erreur"}


@dataclass(frozen=True)
class RouteStep:
    label: str
    status: str  # done, current, rejected, skipped, planned, not_planned
    text: str  # in French
    at: datetime | None


DONE_WORDS = {"tdt-actes": "acquitté par la préfecture", "tdt-helios": "acquitté par la DGFiP",
              "signature": "signé", "sae": "archivé", "mailsec": "envoyé", "ged": "déposé en GED"}


def route(flow: Any, doc: Any, entries: list[Any]) -> list[RouteStep]:
    """Steps in flow order; what happened to each comes from the document's journal, what will come from its fields."""
    done: dict[str, datetime] = {}
    rejected: dict[str, datetime] = {}
    skipped: dict[str, datetime] = {}
    by_admin: dict[str, datetime] = {}
    entered: dict[str, datetime] = {}
    for e in entries:
        step = e.data.get("step") if isinstance(e.data, dict) else None
        if not step:
            continue
        if e.kind == "step.done":
            done[step] = e.at
        elif e.kind == "step.rejected":
            rejected[step] = e.at
        elif e.kind == "step.skipped":
            skipped[step] = e.at
        elif e.kind == "admin.action" and e.data.get("action") == "skip":
            by_admin[step] = e.at
        if step not in entered:  # the first entry about the step: since when the document is there
            entered[step] = e.at
    ctx = context(doc.fields, [f.field for f in doc.files], None)
    out = []
    for s in flow.steps:
        if s.id == doc.step and doc.state in CURRENT:
            out.append(RouteStep(s.label, "current", CURRENT[doc.state], entered.get(s.id) or doc.updated_at))
        elif s.id in rejected:
            out.append(RouteStep(s.label, "rejected", "refusé", rejected[s.id]))
        elif s.id in done:
            out.append(RouteStep(s.label, "done", DONE_WORDS.get(s.family, "fait"), done[s.id]))
        elif s.id in by_admin:
            out.append(RouteStep(s.label, "skipped", "passé par un administrateur", by_admin[s.id]))
        elif s.id in skipped:
            out.append(RouteStep(s.label, "skipped", "passé : condition non remplie ou étape sautée", skipped[s.id]))
        elif doc.state in ("done", "cancelled") or doc.state in flow.states:
            out.append(RouteStep(s.label, "not_planned", "non fait", None))
        else:
            planned = should_run(flow, s.id, ctx)
            out.append(RouteStep(s.label, "planned" if planned else "not_planned",
                                 "à venir" if planned else "ne sera pas fait (condition non remplie)", None))
    return out
