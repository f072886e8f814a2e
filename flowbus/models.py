"""Domain records shared by every layer (frozen dataclasses, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowbus.clock import isoformat


@dataclass(frozen=True)
class Entity:
    """A collectivité (commune, département, syndicat…), possibly under a parent entity."""

    id: str
    name: str
    siren: str | None
    parent_id: str | None
    created_at: datetime
    active: bool = True  # a deactivated entity keeps its documents but takes no new one

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "siren": self.siren, "parent": self.parent_id,
                "created_at": isoformat(self.created_at), "active": self.active}


@dataclass(frozen=True)
class BlobRef:
    """Where a file's bytes live in the BlobStore: content-addressed by SHA-256."""

    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class FileRef:
    """A file attached to a document field (a ``files`` field holds several, by ``index``)."""

    document_id: str
    field: str
    index: int
    filename: str
    media_type: str
    size: int
    sha256: str
    blob_key: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "index": self.index, "filename": self.filename,
                "media_type": self.media_type, "size": self.size, "sha256": self.sha256,
                "created_at": isoformat(self.created_at)}


@dataclass(frozen=True)
class Document:
    id: str
    entity_id: str
    flow_id: str
    state: str
    fields: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    step: str | None = None  # the step the engine is on (None before start / after end)
    last_error: str | None = None
    files: tuple[FileRef, ...] = field(default_factory=tuple)
    flow_version: int | None = None  # the flow version it was started with (None: a draft follows the current one)

    def files_of(self, field_name: str) -> list[FileRef]:
        return sorted((f for f in self.files if f.field == field_name), key=lambda f: f.index)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "entity": self.entity_id, "flow": self.flow_id, "state": self.state,
            "step": self.step, "last_error": self.last_error, "fields": self.fields,
            "version": self.version, "flow_version": self.flow_version, "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: (f.field, f.index))],
        }


@dataclass(frozen=True)
class JournalEntry:
    """One link of an entity's hash chain."""

    entity_id: str
    seq: int
    at: datetime
    actor: str
    kind: str  # document.created, fields.changed, file.added, state.changed, error, admin.action, ...
    document_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"entity": self.entity_id, "seq": self.seq, "at": isoformat(self.at), "actor": self.actor,
                "kind": self.kind, "document": self.document_id, "data": self.data,
                "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    roles: dict[str, str]  # entity id → role (admin, editor, reader); "*" = every entity
    created_at: datetime
    revoked_at: datetime | None = None

    def role_for(self, entity_ids: list[str]) -> str | None:
        """Best role over an entity and its ancestors (roles are inherited downwards)."""
        order = {"reader": 1, "editor": 2, "admin": 3}
        best: str | None = self.roles.get("*")
        for eid in entity_ids:
            role = self.roles.get(eid)
            if role and (best is None or order[role] > order[best]):
                best = role
        return best
