"""Pastell's rights (``checkDroit(id_e, droit)``) on our roles, with Pastell's 403 message.

Pastell checks a named right (``entite:edition``, ``actes-generique:lecture``…) on an entity; rights
given on an entity hold below it, and a right on the root (``id_e`` 0) holds everywhere.  Ours are
three roles given on an entity and its sub-entities (``flowbus.people.access``), so each right
maps onto the role that allows the same thing in our console and API v1:

=========================================  ======================================================
Pastell right                              needs, on the entity or one of its parents
=========================================  ======================================================
``entite:lecture``, ``journal:lecture``    any grant (one restricted to some flows too)
``<flux>:lecture``                         ``reader`` for that flux's flow
``<flux>:edition``                         ``editor`` for that flux's flow
``entite:edition``, ``utilisateur:*``,     ``admin`` (« Administrateur »), not restricted to flows
``role:*``, ``connecteur:*``,
``annuaire:edition``
``system:lecture``, ``system:edition``     ``admin`` of every entity (platform administrator)
=========================================  ======================================================

So creating an entity under a parent needs ``entite:edition`` on the parent (« Administrateur » of
it); a top-level one (parent 0) needs it on the root: only a platform administrator.
"""

from __future__ import annotations

from flowbus.errors import Forbidden
from flowbus.people.access import EVERY_ENTITY, ORDER, Principal

_ANY = "any"  # any grant covering the entity
_PLATFORM = "platform"
CORE: dict[str, str] = {
    "entite:lecture": _ANY, "journal:lecture": _ANY, "annuaire:lecture": _ANY,
    "entite:edition": "admin", "utilisateur:lecture": "admin", "utilisateur:edition": "admin",
    "utilisateur:creation": "admin", "role:lecture": "admin", "role:edition": "admin",
    "connecteur:lecture": "admin", "connecteur:edition": "admin", "annuaire:edition": "admin",
    "system:lecture": _PLATFORM, "system:edition": _PLATFORM,
}


def needed(droit: str) -> str:
    """The role (or ``any``/``platform``) a Pastell right needs; a flux right by its suffix."""
    if droit in CORE:
        return CORE[droit]
    if droit.endswith(":lecture"):
        return "reader"
    if droit.endswith(":edition"):
        return "editor"
    return _PLATFORM  # a right we do not know: only the platform administrator has every right


def allowed(who: Principal, chain: list[str], droit: str, flow_id: str | None = None) -> bool:
    """Whether ``who`` has ``droit`` on the entity whose chain (itself then its parents) is ``chain``;
    ``chain`` empty is Pastell's root.  ``flow_id``: the flow a ``<flux>:…`` right is about."""
    need = needed(droit)
    if who.is_platform_admin:
        return True
    if need == _PLATFORM:
        return False
    covered = set(chain) | {EVERY_ENTITY}
    if need == _ANY:
        return any(g.entity_id in covered for g in who.grants)
    is_flux_right = droit not in CORE
    best = who.role_for(chain, flow_id if is_flux_right else None)
    return best is not None and ORDER[best] >= ORDER[need]


def holds_somewhere(who: Principal, droit: str) -> bool:
    """Pastell's ``hasOneDroit``: the right on at least one entity."""
    need = needed(droit)
    if who.is_platform_admin:
        return True
    if need in (_PLATFORM,):
        return False
    if need == _ANY:
        return bool(who.grants)
    return any(g.flows is None and ORDER[g.role] >= ORDER[need] for g in who.grants)


def refused(id_e: str, droit: str, id_u: str) -> Forbidden:
    """Pastell's answer to a failed ``checkDroit`` (``BaseAPIController::checkDroit``), word for word."""
    return Forbidden(f"Acces interdit id_e={id_e}, droit={droit},id_u={id_u}")


def refused_everywhere(droit: str) -> Forbidden:
    """Pastell's answer to a failed ``checkOneDroit``."""
    return Forbidden(f"Vous devez avoir le droit {droit} pour accéder à la ressource.")
