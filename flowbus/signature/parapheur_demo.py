"""A ready-made commune for tests and the demo: desks, signers with passwords, two circuits."""

from __future__ import annotations

from typing import Any

from flowbus.api.entities import create_entity
from flowbus.signature import parapheur


async def seed_commune(rt: Any, name: str = "Commune de Démo") -> dict[str, Any]:
    """An entity with desks DGS, Maire, Premier adjoint and one signer each (login ``<role>-<entity id prefix>``,
    password ``<role>-motdepasse``); circuits « Délibérations » (visa DGS, signature Maire) and « Convention »
    (signature Maire, then an outside signer through a link)."""
    ent = await create_entity(rt, name=name, siren=None, parent=None, actor_name="flowbus parapheur demo")
    now = rt.clock.now()
    out: dict[str, Any] = {"entity": ent}
    async with rt.store.transaction() as tx:
        for key, desk_name, login, person in (("dgs", "Directeur général des services", "dgs", "Paul Durand"),
                                              ("maire", "Maire", "maire", "Jeanne Martin"),
                                              ("adjoint", "Premier adjoint", "adjoint", "Luc Bernard")):
            desk = await parapheur.create_desk(tx, entity_id=ent.id, name=desk_name, now=now)
            signer = await parapheur.create_signer(tx, entity_id=ent.id, login=f"{login}-{ent.id[:6]}",
                                                   name=person, password=f"{login}-motdepasse", now=now)
            await parapheur.add_member(tx, desk.id, signer.id)
            out[f"desk_{key}"], out[key] = desk, signer
        await parapheur.create_circuit(tx, entity_id=ent.id, name="Délibérations", now=now, steps=[
            {"kind": "visa", "desk": out["desk_dgs"].id}, {"kind": "signature", "desk": out["desk_maire"].id}])
        await parapheur.create_circuit(tx, entity_id=ent.id, name="Convention", now=now, steps=[
            {"kind": "signature", "desk": out["desk_maire"].id},
            {"kind": "external", "name": "Sophie Leroy", "email": "s.leroy@example.org"}])
    return out
