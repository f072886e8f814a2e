"""Secure-mail address book of a collectivité: contacts (name, e-mail) and groups of contacts.

A group is written ``groupe:<nom>`` wherever a secure-mail recipient is expected (a step's ``to``, a
document's recipient field); ``expand`` turns it into addresses at sending time, from the
collectivité's book or the book of a collectivité above it (the nearest wins).  ``import_csv`` reads
« nom;courriel;groupes » lines (groups separated by commas), keeps every good line and names each bad
one with its line number.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat
from flowbus.errors import ValidationError
from flowbus.store import repo
from flowbus.store.base import Tx

GROUP_PREFIX = "groupe:"
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
MAX_IMPORT = 5000


@dataclass(frozen=True)
class Contact:
    id: str
    entity_id: str
    name: str
    email: str
    groups: tuple[str, ...] = ()


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)  # « ligne 4 : … »


def check_contact(name: Any, email: Any) -> tuple[str, str]:
    name = str(name or "").strip()
    email = str(email or "").strip().lower()
    if not name or len(name) > 200:
        raise ValidationError("Le nom du contact est obligatoire (200 caractères au plus).", field="name")
    if not _EMAIL.match(email):
        raise ValidationError(f"Adresse électronique invalide « {email} ».", field="email")
    return name, email


def check_group(name: Any) -> str:
    name = str(name or "").strip()
    if not name or len(name) > 100 or ":" in name:
        raise ValidationError(f"Nom de groupe invalide « {name} » (100 caractères au plus, sans « : »).",
                              field="group")
    return name


async def save_contact(tx: Tx, entity_id: str, *, name: str, email: str, groups: list[str], now: datetime) -> bool:
    """Add (True) or update (False) the contact of this e-mail, and add it to ``groups`` (created if new)."""
    name, email = check_contact(name, email)
    groups = [check_group(g) for g in groups if str(g).strip()]
    row = await tx.fetchrow("SELECT id FROM contacts WHERE entity_id = $1 AND email = $2", entity_id, email)
    if row is None:
        contact_id = uuid.uuid4().hex
        await tx.execute("INSERT INTO contacts (id, entity_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
                         contact_id, entity_id, name, email, isoformat(now))
    else:
        contact_id = row["id"]
        await tx.execute("UPDATE contacts SET name = $2 WHERE id = $1", contact_id, name)
    for g in groups:
        group_id = await _group_id(tx, entity_id, g, now)
        await tx.execute("INSERT INTO contact_group_members (group_id, contact_id) VALUES ($1, $2) "
                         "ON CONFLICT DO NOTHING", group_id, contact_id)
    return row is None


async def _group_id(tx: Tx, entity_id: str, name: str, now: datetime) -> str:
    row = await tx.fetchrow("SELECT id FROM contact_groups WHERE entity_id = $1 AND name = $2", entity_id, name)
    if row is not None:
        return str(row["id"])
    group_id = uuid.uuid4().hex
    await tx.execute("INSERT INTO contact_groups (id, entity_id, name, created_at) VALUES ($1, $2, $3, $4)",
                     group_id, entity_id, name, isoformat(now))
    return group_id


async def delete_contact(tx: Tx, entity_id: str, contact_id: str) -> bool:
    await tx.execute("DELETE FROM contact_group_members WHERE contact_id = $1 AND contact_id IN "
                     "(SELECT id FROM contacts WHERE entity_id = $2)", contact_id, entity_id)
    return bool(await tx.execute("DELETE FROM contacts WHERE id = $1 AND entity_id = $2", contact_id, entity_id))


async def contacts(tx: Tx, entity_id: str, *, q: str | None = None, limit: int = 200) -> list[Contact]:
    args: list[Any] = [entity_id]
    where = "c.entity_id = $1"
    if q:
        args.append("%" + q.strip().lower() + "%")
        where += " AND (LOWER(c.name) LIKE $2 OR c.email LIKE $2)"
    rows = await tx.fetch(f"SELECT c.* FROM contacts c WHERE {where} ORDER BY c.name, c.email LIMIT {int(limit)}",
                          *args)
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    ph = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
    member = await tx.fetch(f"SELECT m.contact_id, g.name FROM contact_group_members m JOIN contact_groups g "
                            f"ON g.id = m.group_id WHERE m.contact_id IN ({ph}) ORDER BY g.name", *ids)
    groups: dict[str, list[str]] = {}
    for m in member:
        groups.setdefault(m["contact_id"], []).append(m["name"])
    return [Contact(r["id"], r["entity_id"], r["name"], r["email"], tuple(groups.get(r["id"], ()))) for r in rows]


async def groups(tx: Tx, entity_id: str) -> list[tuple[str, int]]:
    """(group name, number of contacts) of the collectivité's own book."""
    rows = await tx.fetch("SELECT g.name, COUNT(m.contact_id) AS n FROM contact_groups g LEFT JOIN "
                          "contact_group_members m ON m.group_id = g.id WHERE g.entity_id = $1 GROUP BY g.name "
                          "ORDER BY g.name LIMIT 500", entity_id)
    return [(r["name"], int(r["n"])) for r in rows]


async def expand(tx: Tx, entity_id: str, names: list[str]) -> dict[str, list[str]]:
    """Group name → its contacts' addresses, from the nearest collectivité (itself, then up) that has it.

    Raises:
        ValidationError: a group found in no book up the tree (field ``to``).
    """
    chain = await repo.ancestors(tx, entity_id)
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        for owner in chain:
            row = await tx.fetchrow("SELECT id FROM contact_groups WHERE entity_id = $1 AND name = $2", owner, name)
            if row is not None:
                rows = await tx.fetch("SELECT c.email FROM contact_group_members m JOIN contacts c ON c.id = "
                                      "m.contact_id WHERE m.group_id = $1 ORDER BY c.email LIMIT 5000", row["id"])
                out[name] = [r["email"] for r in rows]
                break
        else:
            entity = await repo.get_entity(tx, entity_id)
            raise ValidationError(f"Le groupe « {name} » n'existe pas dans le carnet d'adresses de "
                                  f"« {entity.name} » ni au-dessus.", field="to")
    return out


def group_names(values: list[str]) -> list[str]:
    """The group names among recipient values (``groupe:<nom>``)."""
    return [v.strip()[len(GROUP_PREFIX):].strip() for v in values
            if v.strip().lower().startswith(GROUP_PREFIX)]


async def import_csv(tx: Tx, entity_id: str, data: bytes, *, now: datetime) -> ImportReport:
    """« nom;courriel;groupes » (a header line is skipped; « , » also separates columns)."""
    report = ImportReport()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252")  # a spreadsheet's « CSV (séparateur : point-virgule) »
    sample = text[:2000]
    delimiter = ";" if sample.count(";") >= sample.count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if len(rows) > MAX_IMPORT + 1:
        raise ValidationError(f"Au plus {MAX_IMPORT} contacts par import.", field="fichier")
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and len(cells) > 1 and "@" not in cells[1]:
            continue  # the header
        if len(cells) < 2:
            report.errors.append(f"ligne {number} : deux colonnes au moins sont attendues (nom ; courriel)")
            continue
        group_cell = cells[2] if len(cells) > 2 else ""
        try:
            added = await save_contact(tx, entity_id, name=cells[0], email=cells[1],
                                       groups=[g for g in re.split(r"[,|]", group_cell) if g.strip()], now=now)
        except ValidationError as exc:
            report.errors.append(f"ligne {number} : {exc.message}")
            continue
        if added:
            report.added += 1
        else:
            report.updated += 1
    return report
