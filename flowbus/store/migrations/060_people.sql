-- People: accounts, their grants (role per entity subtree, optionally per flow), server-side web
-- sessions, single-use links (first sign-in, password reset, invitation); entities can be
-- deactivated and are found by parent.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    password_hash TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    failed_sign_ins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    external_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_sign_in_at TEXT
);
CREATE UNIQUE INDEX users_login ON users (login);
CREATE INDEX users_email ON users (email);
CREATE UNIQUE INDEX users_external ON users (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX users_name ON users (name, id);

CREATE TABLE user_grants (
    user_id TEXT NOT NULL REFERENCES users(id),
    entity_id TEXT NOT NULL,
    role TEXT NOT NULL,
    flows TEXT,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (user_id, entity_id)
);
CREATE INDEX user_grants_entity ON user_grants (entity_id, user_id);

CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    method TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ip TEXT NOT NULL DEFAULT ''
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

CREATE TABLE user_links (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    purpose TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX user_links_user ON user_links (user_id, purpose);

ALTER TABLE entities ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
CREATE INDEX entities_parent ON entities (parent_id, name);
