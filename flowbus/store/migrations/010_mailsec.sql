-- Secure mail: one mailing per step run (idempotency key), one row per recipient, extra links, replies.
CREATE TABLE mailsec_mailings (
    id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    step TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    files TEXT NOT NULL,
    allow_reply INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX mailsec_mailings_document ON mailsec_mailings (document_id, created_at);

CREATE TABLE mailsec_recipients (
    id TEXT PRIMARY KEY,
    mailing_id TEXT NOT NULL REFERENCES mailsec_mailings(id),
    document_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    session_hash TEXT,
    expires_at TEXT NOT NULL,
    status TEXT NOT NULL,
    sent_at TEXT,
    read_at TEXT,
    read_ip TEXT,
    read_user_agent TEXT,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    reminders_sent INTEGER NOT NULL DEFAULT 0,
    last_reminder_at TEXT,
    resent INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX mailsec_recipients_mailing ON mailsec_recipients (mailing_id, position);
CREATE INDEX mailsec_recipients_document ON mailsec_recipients (document_id);

-- links sent after the first one (reminders, resends): each has its own token, same recipient
CREATE TABLE mailsec_tokens (
    token_hash TEXT PRIMARY KEY,
    recipient_id TEXT NOT NULL REFERENCES mailsec_recipients(id),
    created_at TEXT NOT NULL
);

CREATE TABLE mailsec_replies (
    id TEXT PRIMARY KEY,
    recipient_id TEXT NOT NULL REFERENCES mailsec_recipients(id),
    mailing_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    files TEXT NOT NULL,
    attached INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX mailsec_replies_mailing ON mailsec_replies (mailing_id, attached);
