"""Built-in parapheur, the data: desks, signers, circuits, folders and tasks, decisions, delegations.

A *desk* (bureau) is a role within an entity (« Maire », « DGS »); signers are members of
desks.  A *circuit* is an ordered list of steps, each a ``visa``, a ``signature`` (the server
applies the entity's seal on approval) or an ``external`` signature by someone outside the
entity, reached through a personal link.  A *folder* is one document going through one
circuit; it has one *task* per step, exactly one of them ``active`` while it is pending.
A *delegation* lets the members of one desk act for another desk during a period.

Every function here takes the caller's transaction; nothing here signs or talks HTTP
(``parapheur_actions`` does the sealing, ``flowbus.web.signer`` the pages).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flowbus.clock import isoformat, parse_iso
from flowbus.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from flowbus.store import repo
from flowbus.store.base import Tx

STEP_KINDS = ("visa", "signature", "external")
KIND_LABELS = {"visa": "Visa", "signature": "Signature", "external": "Signature extérieure"}
SESSION_TTL = timedelta(hours=8)


def _id() -> str:
    return uuid.uuid4().hex[:16]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Desk:
    id: str
    entity_id: str
    name: str


@dataclass(frozen=True)
class Signer:
    id: str
    entity_id: str
    login: str
    name: str
    email: str | None


@dataclass(frozen=True)
class CircuitStep:
    kind: str
    desk_id: str | None
    label: str
    external_name: str | None = None
    external_email: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "desk": self.desk_id, "label": self.label, "name": self.external_name,
                "email": self.external_email}


@dataclass(frozen=True)
class Circuit:
    id: str
    entity_id: str
    name: str
    steps: tuple[CircuitStep, ...]


@dataclass(frozen=True)
class Folder:
    id: str
    entity_id: str
    document_id: str
    step_id: str
    instance_id: str
    idem_key: str
    title: str
    circuit: str
    status: str  # pending | approved | rejected
    position: int
    filename: str
    media_type: str
    source_blob: str
    current_blob: str
    current_size: int
    current_sha256: str
    annexes: list[dict[str, Any]]
    detached: list[dict[str, Any]]
    comment: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Task:
    id: str
    folder_id: str
    position: int
    kind: str
    desk_id: str | None
    label: str
    external_name: str | None
    external_email: str | None
    status: str  # waiting | active | approved | rejected | cancelled
    activated_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None


@dataclass(frozen=True)
class Decision:
    id: str
    folder_id: str
    task_id: str
    decision: str  # visa | signature | reject
    actor: str
    actor_name: str
    desk_id: str | None
    on_behalf_of: str | None
    at: datetime
    comment: str | None


@dataclass(frozen=True)
class Delegation:
    id: str
    entity_id: str
    from_desk: str
    to_desk: str
    starts_at: datetime
    ends_at: datetime
    created_by: str


@dataclass(frozen=True)
class InboxItem:
    task: Task
    folder: Folder
    desk: Desk
    delegated: bool  # the signer acts through a delegation to ``desk``


def _folder(row: dict[str, Any]) -> Folder:
    return Folder(row["id"], row["entity_id"], row["document_id"], row["step_id"], row["instance_id"],
                  row["idem_key"], row["title"], row["circuit"], row["status"], int(row["position"]),
                  row["filename"], row["media_type"], row["source_blob"], row["current_blob"],
                  int(row["current_size"]), row["current_sha256"], json.loads(row["annexes"]),
                  json.loads(row["detached"]), row["comment"], parse_iso(row["created_at"]),
                  parse_iso(row["updated_at"]))


def _task(row: dict[str, Any]) -> Task:
    return Task(row["id"], row["folder_id"], int(row["position"]), row["kind"], row["desk_id"], row["label"],
                row["external_name"], row["external_email"], row["status"],
                parse_iso(row["activated_at"]) if row["activated_at"] else None, row["decided_by"],
                parse_iso(row["decided_at"]) if row["decided_at"] else None, row["comment"])


def _desk(row: dict[str, Any]) -> Desk:
    return Desk(row["id"], row["entity_id"], row["name"])


def _signer(row: dict[str, Any]) -> Signer:
    return Signer(row["id"], row["entity_id"], row["login"], row["name"], row["email"])


# ---- passwords (scrypt, as the standard library offers it) -----------------------------------


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


# ---- administration --------------------------------------------------------------------------


async def create_desk(tx: Tx, *, entity_id: str, name: str, now: datetime, desk_id: str | None = None) -> Desk:
    await repo.get_entity(tx, entity_id)
    if not name.strip():
        raise ValidationError("a desk needs a name", field="name")
    if await tx.fetchrow("SELECT id FROM parapheur_desks WHERE entity_id = $1 AND name = $2", entity_id, name):
        raise Conflict(f"entity {entity_id} already has a desk named {name!r}", field="name")
    desk = Desk(desk_id or _id(), entity_id, name.strip())
    await tx.execute("INSERT INTO parapheur_desks (id, entity_id, name, created_at) VALUES ($1, $2, $3, $4)",
                     desk.id, desk.entity_id, desk.name, isoformat(now))
    return desk


async def get_desk(tx: Tx, desk_id: str) -> Desk:
    row = await tx.fetchrow("SELECT * FROM parapheur_desks WHERE id = $1", desk_id)
    if row is None:
        raise NotFound(f"desk {desk_id!r} does not exist", field="desk")
    return _desk(row)


async def list_desks(tx: Tx, entity_id: str) -> list[Desk]:
    return [_desk(r) for r in await tx.fetch("SELECT * FROM parapheur_desks WHERE entity_id = $1 ORDER BY name",
                                             entity_id)]


async def create_signer(tx: Tx, *, entity_id: str, login: str, name: str, password: str, now: datetime,
                        email: str | None = None) -> Signer:
    await repo.get_entity(tx, entity_id)
    if len(password) < 10:
        raise ValidationError("a signer's password needs at least 10 characters", field="password")
    if await tx.fetchrow("SELECT id FROM parapheur_signers WHERE login = $1", login):
        raise Conflict(f"the login {login!r} is already taken", field="login")
    signer = Signer(_id(), entity_id, login, name, email)
    await tx.execute("INSERT INTO parapheur_signers (id, entity_id, login, name, email, password_hash, created_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7)", signer.id, entity_id, login, name, email,
                     hash_password(password), isoformat(now))
    return signer


async def get_signer(tx: Tx, signer_id: str) -> Signer:
    row = await tx.fetchrow("SELECT * FROM parapheur_signers WHERE id = $1", signer_id)
    if row is None:
        raise NotFound(f"signer {signer_id!r} does not exist", field="signer")
    return _signer(row)


async def add_member(tx: Tx, desk_id: str, signer_id: str) -> None:
    desk = await get_desk(tx, desk_id)
    signer = await get_signer(tx, signer_id)
    chain = await repo.ancestors(tx, desk.entity_id)
    if signer.entity_id not in chain and desk.entity_id not in await repo.ancestors(tx, signer.entity_id):
        raise Forbidden(f"signer {signer.login!r} does not belong to the entity of desk {desk.name!r}", field="desk")
    await tx.execute("INSERT INTO parapheur_desk_members (desk_id, signer_id) VALUES ($1, $2) "
                     "ON CONFLICT (desk_id, signer_id) DO NOTHING", desk_id, signer_id)


async def members(tx: Tx, desk_id: str) -> list[Signer]:
    rows = await tx.fetch("SELECT s.* FROM parapheur_signers s JOIN parapheur_desk_members m ON m.signer_id = s.id "
                          "WHERE m.desk_id = $1 ORDER BY s.name", desk_id)
    return [_signer(r) for r in rows]


def parse_steps(raw: Any, *, where: str = "steps") -> tuple[CircuitStep, ...]:
    """Check a circuit's steps (a list of ``{kind, desk, label, name, email}``); every error names the step."""
    if not isinstance(raw, list) or not raw:
        raise ValidationError("a circuit needs at least one step", field=where)
    out = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ValidationError(f"step {i} of the circuit must be a mapping", field=where)
        kind = item.get("kind")
        if kind not in STEP_KINDS:
            raise ValidationError(f"step {i} of the circuit: unknown kind {kind!r}", field=where,
                                  hint=f"kinds: {', '.join(STEP_KINDS)}")
        if kind == "external":
            if i == 1:
                raise ValidationError("an external signature cannot be the first step: the link to the outside "
                                      "signer is handed over by the step before", field=where)
            if not item.get("name"):
                raise ValidationError(f"step {i} of the circuit (external) needs the signer's name", field=where)
            out.append(CircuitStep(kind, None, str(item.get("label") or f"Signature de {item['name']}"),
                                   str(item["name"]), item.get("email")))
        else:
            if not item.get("desk"):
                raise ValidationError(f"step {i} of the circuit ({kind}) needs a desk", field=where)
            out.append(CircuitStep(kind, str(item["desk"]), str(item.get("label") or KIND_LABELS[kind])))
    return tuple(out)


async def create_circuit(tx: Tx, *, entity_id: str, name: str, steps: list[dict[str, Any]], now: datetime) -> Circuit:
    await repo.get_entity(tx, entity_id)
    parsed = parse_steps(steps)
    for step in parsed:
        if step.desk_id:
            desk = await get_desk(tx, step.desk_id)
            if desk.entity_id not in await repo.ancestors(tx, entity_id):
                raise ValidationError(f"desk {desk.name!r} belongs to another entity", field="steps")
    if await tx.fetchrow("SELECT id FROM parapheur_circuits WHERE entity_id = $1 AND name = $2", entity_id, name):
        raise Conflict(f"entity {entity_id} already has a circuit named {name!r}", field="name")
    circuit = Circuit(_id(), entity_id, name, parsed)
    await tx.execute("INSERT INTO parapheur_circuits (id, entity_id, name, steps, created_at) VALUES ($1, $2, $3, $4, $5)",
                     circuit.id, entity_id, name, json.dumps([s.to_json() for s in parsed]), isoformat(now))
    return circuit


async def get_circuit(tx: Tx, entity_id: str, name: str) -> Circuit:
    """The circuit ``name`` of the entity or, failing that, of its nearest parent."""
    for eid in await repo.ancestors(tx, entity_id):
        row = await tx.fetchrow("SELECT * FROM parapheur_circuits WHERE entity_id = $1 AND name = $2", eid, name)
        if row is not None:
            steps = parse_steps(json.loads(row["steps"]))
            return Circuit(row["id"], row["entity_id"], row["name"], steps)
    raise NotFound(f"no parapheur circuit named {name!r} for entity {entity_id} or its parents", field="circuit",
                   hint="create it with `flowbus parapheur circuit-add`")


async def add_delegation(tx: Tx, *, from_desk: str, to_desk: str, starts_at: datetime, ends_at: datetime,
                         created_by: str, now: datetime) -> Delegation:
    src, dst = await get_desk(tx, from_desk), await get_desk(tx, to_desk)
    if src.id == dst.id:
        raise ValidationError("a desk cannot delegate to itself", field="to_desk")
    if ends_at <= starts_at:
        raise ValidationError("the delegation must end after it starts", field="ends_at")
    d = Delegation(_id(), src.entity_id, src.id, dst.id, starts_at, ends_at, created_by)
    await tx.execute("INSERT INTO parapheur_delegations (id, entity_id, from_desk, to_desk, starts_at, ends_at, "
                     "created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", d.id, d.entity_id, d.from_desk,
                     d.to_desk, isoformat(starts_at), isoformat(ends_at), created_by, isoformat(now))
    return d


async def delegations_from(tx: Tx, desk_id: str) -> list[Delegation]:
    rows = await tx.fetch("SELECT * FROM parapheur_delegations WHERE from_desk = $1 ORDER BY starts_at", desk_id)
    return [Delegation(r["id"], r["entity_id"], r["from_desk"], r["to_desk"], parse_iso(r["starts_at"]),
                       parse_iso(r["ends_at"]), r["created_by"]) for r in rows]


# ---- signer sessions -------------------------------------------------------------------------


async def authenticate(tx: Tx, login: str, password: str) -> Signer:
    row = await tx.fetchrow("SELECT * FROM parapheur_signers WHERE login = $1", login)
    if row is None or not check_password(password, row["password_hash"]):
        raise Unauthorized("wrong login or password", field="password")
    return _signer(row)


async def open_session(tx: Tx, signer: Signer, now: datetime) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token).  Only the token's hash is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    await tx.execute("INSERT INTO parapheur_sessions (token_hash, signer_id, csrf, expires_at, created_at) "
                     "VALUES ($1, $2, $3, $4, $5)", token_hash(token), signer.id, csrf,
                     isoformat(now + SESSION_TTL), isoformat(now))
    return token, csrf


async def session(tx: Tx, token: str, now: datetime) -> tuple[Signer, str] | None:
    row = await tx.fetchrow("SELECT * FROM parapheur_sessions WHERE token_hash = $1", token_hash(token))
    if row is None or parse_iso(row["expires_at"]) <= now:
        return None
    return await get_signer(tx, row["signer_id"]), row["csrf"]


async def close_session(tx: Tx, token: str) -> None:
    await tx.execute("DELETE FROM parapheur_sessions WHERE token_hash = $1", token_hash(token))


# ---- folders and tasks -----------------------------------------------------------------------


async def find_folder(tx: Tx, *, idem_key: str, document_id: str, step_id: str) -> Folder | None:
    """The folder a step run already created: same idempotency key, else a pending one of the same step."""
    row = await tx.fetchrow("SELECT * FROM parapheur_folders WHERE idem_key = $1", idem_key)
    if row is None:
        row = await tx.fetchrow("SELECT * FROM parapheur_folders WHERE document_id = $1 AND step_id = $2 "
                                "AND status = 'pending' ORDER BY created_at DESC", document_id, step_id)
    return _folder(row) if row else None


async def create_folder(tx: Tx, *, entity_id: str, document_id: str, step_id: str, instance_id: str,
                        idem_key: str, title: str, circuit: Circuit, filename: str, media_type: str, blob: Any,
                        annexes: list[dict[str, Any]], now: datetime) -> Folder:
    fid = _id()
    at = isoformat(now)
    await tx.execute(
        "INSERT INTO parapheur_folders (id, entity_id, document_id, step_id, instance_id, idem_key, title, circuit, "
        "status, position, filename, media_type, source_blob, current_blob, current_size, current_sha256, annexes, "
        "detached, comment, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10, "
        "$11, $11, $12, $13, $14, '[]', NULL, $15, $15)",
        fid, entity_id, document_id, step_id, instance_id, idem_key, title, circuit.name, filename, media_type,
        blob.key, blob.size, blob.sha256, json.dumps(annexes), at)
    for pos, step in enumerate(circuit.steps):
        await tx.execute(
            "INSERT INTO parapheur_tasks (id, folder_id, position, kind, desk_id, label, external_name, "
            "external_email, status, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            _id(), fid, pos, step.kind, step.desk_id, step.label, step.external_name, step.external_email,
            "active" if pos == 0 else "waiting", at if pos == 0 else None)
    return await get_folder(tx, fid)


async def get_folder(tx: Tx, folder_id: str) -> Folder:
    row = await tx.fetchrow("SELECT * FROM parapheur_folders WHERE id = $1", folder_id)
    if row is None:
        raise NotFound(f"parapheur folder {folder_id!r} does not exist", field="folder")
    return _folder(row)


async def tasks_of(tx: Tx, folder_id: str) -> list[Task]:
    return [_task(r) for r in await tx.fetch("SELECT * FROM parapheur_tasks WHERE folder_id = $1 ORDER BY position",
                                             folder_id)]


async def get_task(tx: Tx, task_id: str) -> Task:
    row = await tx.fetchrow("SELECT * FROM parapheur_tasks WHERE id = $1", task_id)
    if row is None:
        raise NotFound(f"task {task_id!r} does not exist", field="task")
    return _task(row)


async def decisions_of(tx: Tx, folder_id: str) -> list[Decision]:
    rows = await tx.fetch("SELECT * FROM parapheur_decisions WHERE folder_id = $1 ORDER BY at, id", folder_id)
    return [Decision(r["id"], r["folder_id"], r["task_id"], r["decision"], r["actor"], r["actor_name"], r["desk_id"],
                     r["on_behalf_of"], parse_iso(r["at"]), r["comment"]) for r in rows]


async def desks_of(tx: Tx, signer: Signer, now: datetime) -> dict[str, tuple[Desk, bool]]:
    """Desks the signer acts for now: own desks, plus desks delegating to them (flag True)."""
    own = await tx.fetch("SELECT d.* FROM parapheur_desks d JOIN parapheur_desk_members m ON m.desk_id = d.id "
                         "WHERE m.signer_id = $1", signer.id)
    out = {r["id"]: (_desk(r), False) for r in own}
    at = isoformat(now)
    for desk_id in list(out):
        rows = await tx.fetch("SELECT d.* FROM parapheur_delegations g JOIN parapheur_desks d ON d.id = g.from_desk "
                              "WHERE g.to_desk = $1 AND g.starts_at <= $2 AND g.ends_at > $2", desk_id, at)
        for r in rows:
            out.setdefault(r["id"], (_desk(r), True))
    return out


async def inbox(tx: Tx, signer: Signer, now: datetime) -> list[InboxItem]:
    desks = await desks_of(tx, signer, now)
    items = []
    for desk_id, (desk, delegated) in desks.items():
        rows = await tx.fetch("SELECT * FROM parapheur_tasks WHERE desk_id = $1 AND status = 'active' "
                              "ORDER BY activated_at", desk_id)
        for r in rows:
            items.append(InboxItem(_task(r), await get_folder(tx, r["folder_id"]), desk, delegated))
    items.sort(key=lambda i: (i.task.activated_at or i.folder.created_at))
    return items


async def task_for_signer(tx: Tx, task_id: str, signer: Signer, now: datetime) -> InboxItem:
    """The task if the signer may see it (member of its desk or of a desk it delegates to)."""
    task = await get_task(tx, task_id)
    desks = await desks_of(tx, signer, now)
    if task.desk_id is None or task.desk_id not in desks:
        raise Forbidden("ce dossier n'est pas dans votre parapheur", field="task")
    desk, delegated = desks[task.desk_id]
    return InboxItem(task, await get_folder(tx, task.folder_id), desk, delegated)


async def task_for_link(tx: Tx, token: str) -> tuple[Task, Folder]:
    row = await tx.fetchrow("SELECT * FROM parapheur_tasks WHERE link_hash = $1", token_hash(token))
    if row is None:
        raise NotFound("ce lien de signature est inconnu ou a été remplacé", field="token")
    task = _task(row)
    return task, await get_folder(tx, task.folder_id)


async def new_link(tx: Tx, task_id: str) -> str:
    """A fresh personal link token for an external task (replaces the previous one)."""
    token = secrets.token_urlsafe(32)
    await tx.execute("UPDATE parapheur_tasks SET link_hash = $2 WHERE id = $1", task_id, token_hash(token))
    return token


async def external_pending(tx: Tx, signer: Signer, now: datetime) -> list[InboxItem]:
    """Outside signatures waiting after a step of one of the signer's desks (they may hand the link over again)."""
    desks = await desks_of(tx, signer, now)
    rows = await tx.fetch("SELECT * FROM parapheur_tasks WHERE kind = 'external' AND status = 'active' "
                          "ORDER BY activated_at")
    out = []
    for r in rows:
        before = await tx.fetchrow("SELECT desk_id FROM parapheur_tasks WHERE folder_id = $1 AND position < $2 "
                                   "AND desk_id IS NOT NULL ORDER BY position DESC", r["folder_id"], r["position"])
        if before and before["desk_id"] in desks:
            desk, delegated = desks[before["desk_id"]]
            out.append(InboxItem(_task(r), await get_folder(tx, r["folder_id"]), desk, delegated))
    return out


# ---- a signer's own certificate ------------------------------------------------------------------

@dataclass(frozen=True)
class SignerKey:
    """A signer's PKCS#12, kept locked by its code (never stored): who it names and until when."""

    signer_id: str
    p12: bytes = field(repr=False)
    subject: str
    not_after: datetime


async def set_signer_key(tx: Tx, signer_id: str, p12: bytes, *, subject: str, not_after: datetime,
                         now: datetime, box: Any = None) -> None:
    """Store the signer's PKCS#12 (locked by their code), sealed by ``box`` (flowbus.secretbox) as well."""
    import base64
    stored = base64.b64encode(p12).decode()
    await tx.execute("DELETE FROM parapheur_signer_keys WHERE signer_id = $1", signer_id)
    await tx.execute("INSERT INTO parapheur_signer_keys (signer_id, p12, subject, not_after, created_at) "
                     "VALUES ($1, $2, $3, $4, $5)", signer_id, box.seal(stored) if box else stored, subject,
                     isoformat(not_after), isoformat(now))


async def signer_key(tx: Tx, signer_id: str, box: Any = None) -> SignerKey | None:
    import base64
    row = await tx.fetchrow("SELECT * FROM parapheur_signer_keys WHERE signer_id = $1", signer_id)
    if row is None:
        return None
    stored = box.open(row["p12"]) if box else row["p12"]
    return SignerKey(row["signer_id"], base64.b64decode(stored), row["subject"], parse_iso(row["not_after"]))


async def rotate_signer_keys(tx: Tx, box: Any) -> int:
    """Seal every stored signer PKCS#12 again with the box's first key (``flowbus secrets rotate``)."""
    rows = await tx.fetch("SELECT signer_id, p12 FROM parapheur_signer_keys")
    for row in rows:
        await tx.execute("UPDATE parapheur_signer_keys SET p12 = $2 WHERE signer_id = $1", row["signer_id"],
                         box.rotate(row["p12"]))
    return len(rows)


async def remove_signer_key(tx: Tx, signer_id: str) -> bool:
    return bool(await tx.execute("DELETE FROM parapheur_signer_keys WHERE signer_id = $1", signer_id))
