-- Core schema: entities, API keys, documents, their files, the hash-chained journal.
CREATE TABLE entities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    siren TEXT,
    parent_id TEXT REFERENCES entities(id),
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX entities_siren ON entities (siren) WHERE siren IS NOT NULL;

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES entities(id),
    flow_id TEXT NOT NULL,
    state TEXT NOT NULL,
    step TEXT,
    step_seq BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    fields TEXT NOT NULL,
    search_text TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX documents_entity_flow_state ON documents (entity_id, flow_id, state, created_at);
CREATE INDEX documents_created ON documents (created_at);

CREATE TABLE document_files (
    document_id TEXT NOT NULL REFERENCES documents(id),
    field TEXT NOT NULL,
    idx INTEGER NOT NULL,
    filename TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (document_id, field, idx)
);

CREATE TABLE journal (
    entity_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    document_id TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (entity_id, seq)
);
CREATE INDEX journal_document ON journal (document_id, entity_id, seq);

CREATE TABLE journal_heads (
    entity_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
