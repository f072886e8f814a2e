-- Operations: processes say they are alive (one row per process, refreshed every few seconds), and the
-- documents waiting the longest per flow are found by index.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    role TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX workers_seen ON workers (last_seen_at);
CREATE INDEX documents_flow_state_updated ON documents (flow_id, state, updated_at);
