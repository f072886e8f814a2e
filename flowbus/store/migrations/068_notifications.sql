-- Notifications: what each person follows (collectivité and the ones below it, flow or every flow '*',
-- event, immediately or in the daily digest), what happened for them, and the mails waiting to leave.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    event TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX subscriptions_unique ON subscriptions (user_id, entity_id, flow_id, event);
CREATE INDEX subscriptions_entity ON subscriptions (entity_id, event);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    event TEXT NOT NULL,
    state_label TEXT NOT NULL,
    detail TEXT,
    mode TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX notifications_digest ON notifications (user_id, created_at) WHERE mode = 'digest' AND sent_at IS NULL;
CREATE INDEX notifications_digest_due ON notifications (created_at) WHERE mode = 'digest' AND sent_at IS NULL;
CREATE TABLE outbox_mails (
    id TEXT PRIMARY KEY,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbox_mails_unsent ON outbox_mails (created_at) WHERE sent_at IS NULL;
