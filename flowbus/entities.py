"""Entity service: create, rename, move and deactivate collectivités — used by the API and the console, journaled with before/after."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flowbus import journal
from flowbus.errors import Conflict, ValidationError
from flowbus.models import Entity
from flowbus.people import audit
from flowbus.store import repo
from flowbus.store.base import Tx

_SIREN = re.compile(r"^\d{9}$")


def siren_ok(siren: str) -> bool:
    """SIREN: 9 digits with a Luhn checksum."""
    if not _SIREN.match(siren):
        return False
    total = 0
    for i, ch in enumerate(reversed(siren)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("Le nom de la collectivité est obligatoire.", field="name")
    if len(name.strip()) > 200:
        raise ValidationError("Le nom de la collectivité ne peut dépasser 200 caractères.", field="name")
    return name.strip()


def check_siren(siren: Any) -> str | None:
    if siren is None or (isinstance(siren, str) and not siren.strip()):
        return None
    text = str(siren).replace(" ", "").strip()
    if not siren_ok(text):
        raise ValidationError(f"SIREN « {siren} » invalide : 9 chiffres dont le dernier est une clé de contrôle "
                              "(algorithme de Luhn).", field="siren")
    return text


async def _siren_free(tx: Tx, siren: str | None, entity_id: str | None) -> None:
    if siren:
        other = await repo.entity_by_siren(tx, siren)
        if other is not None and other.id != entity_id:
            raise Conflict(f"Le SIREN {siren} est déjà celui de « {other.name} ».", field="siren")


async def create(rt: Any, *, name: Any, siren: Any, parent: str | None, actor_name: str) -> Entity:
    name, siren = check_name(name), check_siren(siren)
    entity = Entity(uuid.uuid4().hex[:12], name, siren, parent, rt.clock.now())
    async with rt.store.transaction() as tx:
        if parent is not None:
            await repo.get_entity(tx, parent)
        await _siren_free(tx, siren, None)
        await repo.insert_entity(tx, entity)
        await journal.append(tx, entity_id=entity.id, actor=actor_name, kind="entity.created", at=entity.created_at,
                             data={"name": entity.name, "siren": siren, "parent": parent})
    return entity


def _state(e: Entity) -> dict[str, Any]:
    return {"name": e.name, "siren": e.siren, "parent": e.parent_id, "active": e.active}


async def change(rt: Any, entity_id: str, *, actor: str, name: Any = None, siren: Any = ..., parent: Any = ...,
                 active: bool | None = None) -> Entity:
    """Rename, change the SIREN, move under another parent (never under itself or below it), (de)activate."""
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        before = await repo.get_entity(tx, entity_id)
        new_name = before.name if name is None else check_name(name)
        new_siren = before.siren if siren is ... else check_siren(siren)
        new_parent = before.parent_id if parent is ... else (parent or None)
        await _siren_free(tx, new_siren, entity_id)
        if new_parent != before.parent_id and new_parent is not None:
            target = await repo.get_entity(tx, new_parent)
            if entity_id in await repo.ancestors(tx, new_parent):
                raise ValidationError(f"« {before.name} » ne peut pas être placée sous « {target.name} », qui en "
                                      "fait partie.", field="parent")
        after = Entity(before.id, new_name, new_siren, new_parent, before.created_at,
                       before.active if active is None else active)
        if after == before:
            return before
        await repo.update_entity(tx, entity_id, name=after.name, siren=after.siren, parent_id=after.parent_id,
                                 active=after.active)
        await audit.record(tx, actor=actor, kind="admin.entity.changed", at=now, entity_id=entity_id,
                           before=_state(before), after=_state(after))
    return after
