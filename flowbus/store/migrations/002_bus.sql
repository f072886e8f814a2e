-- Embedded bus: messages waiting or being handled (a claim is a lease: due_at pushed to the lease's
-- end, so a message whose consumer died becomes due again by itself), and the dead-letter store.
CREATE TABLE bus_messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    body TEXT NOT NULL,
    due_at TEXT NOT NULL,
    seq BIGINT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_owner TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX bus_messages_due ON bus_messages (queue, due_at, seq);

CREATE TABLE bus_dead_letters (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    body TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX bus_dead_letters_queue ON bus_dead_letters (queue, failed_at);
