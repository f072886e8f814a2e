-- Engine bookkeeping: one row per (document, step) with the current attempt and its claim.
CREATE TABLE step_states (
    document_id TEXT NOT NULL REFERENCES documents(id),
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    claim TEXT,
    lease_until TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    checks INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (document_id, step)
);

-- Connector instances configured through the API (YAML files under config/connectors/ are the other source).
CREATE TABLE connector_instances (
    id TEXT NOT NULL,
    entity_id TEXT NOT NULL DEFAULT '',
    family TEXT NOT NULL,
    kind TEXT NOT NULL,
    settings TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (id, entity_id)
);
