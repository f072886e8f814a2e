"""Which flows a collectivité uses: enabled or disabled per entity, inherited down the tree (the nearest decision up the tree wins; none: used)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flowbus.clock import isoformat
from flowbus.people import audit
from flowbus.store import repo
from flowbus.store.base import Tx


@dataclass(frozen=True)
class Use:
    flow_id: str
    enabled: bool
    decided_by: str | None  # the entity whose decision applies (None: nobody decided — used by default)


async def uses(tx: Tx, entity_id: str, flow_ids: list[str]) -> dict[str, Use]:
    """For each flow, whether ``entity_id`` uses it and which entity decided (one statement over the ancestors)."""
    chain = await repo.ancestors(tx, entity_id)
    ph = ", ".join(f"${i}" for i in range(1, len(chain) + 1))
    rows = await tx.fetch(f"SELECT entity_id, flow_id, enabled FROM entity_flows WHERE entity_id IN ({ph})", *chain)
    depth = {eid: i for i, eid in enumerate(chain)}
    nearest: dict[str, tuple[int, str, bool]] = {}
    for r in rows:
        d = depth[r["entity_id"]]
        if r["flow_id"] not in nearest or d < nearest[r["flow_id"]][0]:
            nearest[r["flow_id"]] = (d, r["entity_id"], bool(r["enabled"]))
    return {f: Use(f, nearest[f][2], nearest[f][1]) if f in nearest else Use(f, True, None) for f in flow_ids}


async def is_used(tx: Tx, entity_id: str, flow_id: str) -> bool:
    return (await uses(tx, entity_id, [flow_id]))[flow_id].enabled


async def set_used(tx: Tx, entity_id: str, flow_id: str, enabled: bool, *, actor: str, at: datetime) -> None:
    before = (await uses(tx, entity_id, [flow_id]))[flow_id]
    await tx.execute("DELETE FROM entity_flows WHERE entity_id = $1 AND flow_id = $2", entity_id, flow_id)
    await tx.execute("INSERT INTO entity_flows (entity_id, flow_id, enabled, changed_by, changed_at) "
                     "VALUES ($1, $2, $3, $4, $5)", entity_id, flow_id, 1 if enabled else 0, actor, isoformat(at))
    await audit.record(tx, actor=actor, at=at, entity_id=entity_id,
                       kind="admin.flow.enabled" if enabled else "admin.flow.disabled", flow=flow_id,
                       before={"used": before.enabled}, after={"used": enabled})
