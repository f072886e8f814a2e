-- Inbound connectors: glaneur units already picked up, RH batches and their entries.
CREATE TABLE glaneur_files (
    glaneur TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    documents TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (glaneur, name, sha256)
);

CREATE TABLE inbound_batches (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE inbound_batch_entries (
    batch_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    document_id TEXT,
    error TEXT,
    field TEXT,
    PRIMARY KEY (batch_id, position)
);

-- inbound.common.submit finds an interrupted submission by its journal actor
CREATE INDEX journal_actor_kind ON journal (actor, kind);
