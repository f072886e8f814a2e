"""Entity service: create, rename, move, deactivate and delete collectivités — used by the APIs and the console, journaled with before/after."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
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


Also = Callable[[Tx, Entity], Awaitable[None]]  # more writes in the same transaction (e.g. the Pastell layer's)


async def create(rt: Any, *, name: Any, siren: Any, parent: str | None, actor_name: str,
                 also: Also | None = None) -> Entity:
    name, siren = check_name(name), check_siren(siren)
    entity = Entity(uuid.uuid4().hex[:12], name, siren, parent, rt.clock.now())
    async with rt.store.transaction() as tx:
        if parent is not None:
            await repo.get_entity(tx, parent)
        await _siren_free(tx, siren, None)
        await repo.insert_entity(tx, entity)
        await journal.append(tx, entity_id=entity.id, actor=actor_name, kind="entity.created", at=entity.created_at,
                             data={"name": entity.name, "siren": siren, "parent": parent})
        if also is not None:
            await also(tx, entity)
    return entity


def _state(e: Entity) -> dict[str, Any]:
    return {"name": e.name, "siren": e.siren, "parent": e.parent_id, "active": e.active}


async def change(rt: Any, entity_id: str, *, actor: str, name: Any = None, siren: Any = ..., parent: Any = ...,
                 active: bool | None = None, also: Also | None = None) -> Entity:
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
        if also is not None:
            await also(tx, after)
        if after == before:
            return before
        await repo.update_entity(tx, entity_id, name=after.name, siren=after.siren, parent_id=after.parent_id,
                                 active=after.active)
        await audit.record(tx, actor=actor, kind="admin.entity.changed", at=now, entity_id=entity_id,
                           before=_state(before), after=_state(after))
    return after


# What keeps an entity from being deleted: (table, column, why) — its documents and archives, the people and
# keys with rights on it, its configuration.  Only what holds nothing of its own goes with it.
_KEEPS = (
    ("entities", "parent_id", "elle a des entités filles"),
    ("documents", "entity_id", "des documents sont définis sur l'entité"),
    ("archive_packages", "entity_id", "des archives sont conservées pour l'entité"),
    ("user_grants", "entity_id", "des utilisateurs ont des droits sur l'entité"),
    ("connector_instances", "entity_id", "des connecteurs sont définis sur l'entité"),
    ("webhooks", "entity_id", "des webhooks sont définis sur l'entité"),
    ("mailsec_mailings", "entity_id", "des envois de mail sécurisé sont rattachés à l'entité"),
    ("parapheur_desks", "entity_id", "des bureaux du parapheur sont définis sur l'entité"),
    ("parapheur_circuits", "entity_id", "des circuits du parapheur sont définis sur l'entité"),
    ("parapheur_signers", "entity_id", "des signataires sont définis sur l'entité"),
    ("contacts", "entity_id", "son carnet d'adresses n'est pas vide"),
    ("contact_groups", "entity_id", "son carnet d'adresses n'est pas vide"),
    ("subscriptions", "entity_id", "des abonnements aux notifications portent sur l'entité"),
    ("inbound_batches", "entity_id", "des dépôts (glaneur) sont rattachés à l'entité"),
)
_GOES_WITH = ("entity_flows", "tdt_classifications", "pastell_entities")


async def delete(rt: Any, entity_id: str, *, actor: str) -> Entity:
    """Delete an entity that holds nothing (see ``_KEEPS``); its journal chain stays, as every journal does.

    Raises:
        NotFound: no such entity.
        Conflict: something still belongs to it (the message says what).
    """
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        before = await repo.get_entity(tx, entity_id)
        for table, column, why in _KEEPS:
            if await tx.fetchval(f"SELECT 1 FROM {table} WHERE {column} = $1 LIMIT 1", entity_id) is not None:
                raise Conflict(f"Suppression impossible de « {before.name} » : {why}.", field="entity")
        keys = await tx.fetch("SELECT id, name, roles FROM api_keys WHERE revoked_at IS NULL AND roles LIKE $1",
                              f'%"{entity_id}"%')
        if keys:
            raise Conflict(f"Suppression impossible de « {before.name} » : la clé d'API « {keys[0]['name']} » a des "
                           "droits sur l'entité (révoquez-la d'abord).", field="entity")
        for table in _GOES_WITH:
            await tx.execute(f"DELETE FROM {table} WHERE entity_id = $1", entity_id)
        await tx.execute("DELETE FROM entities WHERE id = $1", entity_id)
        await audit.record(tx, actor=actor, kind="admin.entity.deleted", at=now, entity_id=None,
                           entity=entity_id, before=_state(before))
    return before
