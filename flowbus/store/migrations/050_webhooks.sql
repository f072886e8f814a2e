-- Webhooks (callbacks): registrations, one event row per (webhook, document, state change) with a
-- per-document sequence, a lease per (webhook, document) stream so events leave in order, and
-- the delivery log (one row per HTTP attempt).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES entities(id),
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    flows TEXT NOT NULL DEFAULT '[]',
    states TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX webhooks_entity ON webhooks (entity_id, deleted_at);

CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    document_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    last_status INTEGER,
    last_error TEXT
);
CREATE UNIQUE INDEX webhook_events_stream ON webhook_events (webhook_id, document_id, seq);
CREATE INDEX webhook_events_pending ON webhook_events (webhook_id, document_id, status, seq);
CREATE INDEX webhook_events_log ON webhook_events (webhook_id, created_at);

CREATE TABLE webhook_streams (
    webhook_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    claim TEXT,
    lease_until TEXT,
    PRIMARY KEY (webhook_id, document_id)
);

CREATE TABLE webhook_attempts (
    event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (event_id, attempt)
);
