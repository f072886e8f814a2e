"""Pastell's ``last_action`` of documents read from the store: state, step, and the last step done that Pastell knows.

A finished document's Pastell state is the end of its last step that a Pastell flux has
(``accepter-sae`` after the archive, ``acquiter-tdt`` when it stopped after the préfecture…): the
engine keeps one ``step_states`` row per step run, read here by primary-key prefix for the
documents of one answer.
"""

from __future__ import annotations

from typing import Any

from flowbus.connectors.inbound.pastell_v2 import mapping
from flowbus.models import Document
from flowbus.store.base import Tx

_CHUNK = 400


async def done_steps(tx: Tx, document_ids: list[str]) -> dict[str, set[str]]:
    """The steps each document has done (``step_states.status = 'done'``)."""
    out: dict[str, set[str]] = {}
    for start in range(0, len(document_ids), _CHUNK):
        chunk = document_ids[start:start + _CHUNK]
        marks = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        rows = await tx.fetch(f"SELECT document_id, step FROM step_states WHERE document_id IN ({marks}) "
                              "AND status = 'done'", *chunk)
        for r in rows:
            out.setdefault(r["document_id"], set()).add(r["step"])
    return out


def last_known(flow: Any, done: set[str]) -> str | None:
    """The last step (in flow order) of ``done`` that Pastell knows."""
    known = [s for s in mapping.pastell_steps(flow) if s in done]
    return known[-1] if known else None


async def last_done(tx: Tx, flows: dict[str, Any], docs: list[Document]) -> dict[str, str | None]:
    """Per document, its last step done that Pastell knows (drafts: None, without a read)."""
    started = [d.id for d in docs if d.state != "draft"]
    done = await done_steps(tx, started) if started else {}
    out: dict[str, str | None] = {}
    for d in docs:
        flow = flows.get(d.flow_id)
        out[d.id] = last_known(flow, done.get(d.id, set())) if flow is not None else None
    return out


async def actions(tx: Tx, flows: dict[str, Any], docs: list[Document]) -> dict[str, str]:
    """Pastell's ``last_action`` of each document (documents of flows not loaded are left out)."""
    last = await last_done(tx, flows, docs)
    out: dict[str, str] = {}
    for d in docs:
        if d.flow_id in flows:
            out[d.id] = mapping.last_action_for(mapping.for_document(d.flow_id, flows), d, last[d.id])
    return out
