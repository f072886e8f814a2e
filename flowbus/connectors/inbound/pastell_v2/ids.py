"""Pastell's integer identifiers (id_e, id_u, id_j) ↔ ours: numbered once from a counter (migration 082), never reused.

Pastell clients store the ``id_e`` of their collectivité, the ``id_u`` of a person and the ``id_j`` of
a journal entry as integers.  Ours are hex strings (entities, people, API keys) and
``<entity>:<seq>`` (journal entries), so the layer numbers each of ours the first time it names it —
in creation order when it names several at once — and keeps the number in ``pastell_ids``: the
same number at every restart, in every backup, and never given to anything else, even after what
it named is deleted.

Answers carry numbers as JSON strings of digits (``"id_e": "12"``), exactly as Pastell 2.0 sends its
MySQL integers: clients written against it read them with ``getString`` (org.json refuses a JSON
number there) or compare them as strings.

Requests accept both: a path or form value made only of digits and shorter than our ids (12
characters) is a Pastell number; anything else is taken as one of our ids, so a client that stored
an id this layer used to answer keeps working.  ``0`` is Pastell's root entity (the platform).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat
from flowbus.store.base import Tx

ENTITY, USER, JOURNAL = "e", "u", "j"
ROOT = "0"  # Pastell's id_e of the platform itself ("Entité racine")
_OURS_LENGTH = 12  # our entity ids are 12 hex characters: a shorter string of digits is a Pastell number
_CHUNK = 400


def parse(text: Any) -> int | None:
    """A Pastell number (``"12"``), or None when ``text`` is not one (then it may be one of our ids)."""
    value = str(text).strip() if text is not None else ""
    if not value.isdigit() or not value.isascii() or len(value) >= _OURS_LENGTH:
        return None
    if len(value) > 1 and value.startswith("0"):
        return None  # Pastell never writes leading zeros: "0123" is not one of its numbers
    return int(value)


def user_key(who: Any) -> str:
    """What a principal (person or API key) is numbered as."""
    return f"user:{who.id}" if who.kind == "user" else f"key:{who.id}"


async def _lookup(tx: Tx, kind: str, ours: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(ours), _CHUNK):
        chunk = ours[start:start + _CHUNK]
        marks = ", ".join(f"${i}" for i in range(2, len(chunk) + 2))
        for r in await tx.fetch(f"SELECT ours, num FROM pastell_ids WHERE kind = $1 AND ours IN ({marks})",
                                kind, *chunk):
            out[r["ours"]] = int(r["num"])
    return out


async def numbers(tx: Tx, kind: str, ours: Iterable[str], at: datetime) -> dict[str, int]:
    """The number of each of ``ours`` (in that order for the new ones), numbering those that have none.

    Run it in a short transaction of its own: on PostgreSQL the counter row stays locked until it
    commits.  Two processes numbering the same id at once both take numbers; the first insert wins and
    the other number is left unused (a gap, never a second number for one id)."""
    wanted = [o for o in dict.fromkeys(ours) if o]
    if not wanted:
        return {}
    found = await _lookup(tx, kind, wanted)
    missing = [o for o in wanted if o not in found]
    if not missing:
        return found
    last = await tx.fetchval(
        "INSERT INTO pastell_id_counters (kind, last_num) VALUES ($1, $2) ON CONFLICT (kind) DO UPDATE "
        "SET last_num = pastell_id_counters.last_num + $2 RETURNING last_num", kind, len(missing))
    first = int(last) - len(missing) + 1
    stamp = isoformat(at)
    for start in range(0, len(missing), _CHUNK // 4):
        chunk = missing[start:start + _CHUNK // 4]
        rows, args = [], [kind, stamp]
        for i, o in enumerate(chunk):
            args.extend([first + start + i, o])
            rows.append(f"($1, ${len(args) - 1}, ${len(args)}, $2)")
        await tx.execute("INSERT INTO pastell_ids (kind, num, ours, created_at) VALUES " + ", ".join(rows)
                         + " ON CONFLICT (kind, ours) DO NOTHING", *args)
    found.update(await _lookup(tx, kind, missing))
    return found


async def number(tx: Tx, kind: str, ours: str, at: datetime) -> int:
    return (await numbers(tx, kind, [ours], at))[ours]


async def ours_of(tx: Tx, kind: str, num: int) -> str | None:
    """Our id numbered ``num`` (None: no such number)."""
    return await tx.fetchval("SELECT ours FROM pastell_ids WHERE kind = $1 AND num = $2", kind, num)


async def entity_ref(tx: Tx, ref: Any) -> str | None:
    """Our entity id for what a client sent (a Pastell number or one of our ids); ``ROOT`` for ``0``;
    None when the number names nothing.  Whether the entity still exists is the caller's check."""
    num = parse(ref)
    if num == 0:
        return ROOT
    if num is not None:
        ours = await ours_of(tx, ENTITY, num)
        if ours is not None:
            return ours
    text = str(ref).strip() if ref is not None else ""
    return text or None


async def user_numbers_for_actors(tx: Tx, actors: Iterable[str], at: datetime) -> dict[str, str]:
    """Journal actors (``user:<login>``, ``api-key:<id>``) → Pastell ``id_u`` (``"0"``: the platform itself)."""
    actors = list(dict.fromkeys(actors))
    logins = [a.removeprefix("user:") for a in actors if a.startswith("user:")]
    by_login: dict[str, str] = {}
    for start in range(0, len(logins), _CHUNK):
        chunk = logins[start:start + _CHUNK]
        marks = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        for r in await tx.fetch(f"SELECT id, login FROM users WHERE login IN ({marks})", *chunk):
            by_login[r["login"]] = r["id"]
    keys: dict[str, str] = {}
    for a in actors:
        if a.startswith("user:") and a.removeprefix("user:") in by_login:
            keys[a] = f"user:{by_login[a.removeprefix('user:')]}"
        elif a.startswith("api-key:"):
            keys[a] = f"key:{a.removeprefix('api-key:')}"
    nums = await numbers(tx, USER, keys.values(), at)
    return {a: str(nums[keys[a]]) if a in keys else "0" for a in actors}
