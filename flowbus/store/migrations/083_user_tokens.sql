-- Personal API tokens (flowbus.people.tokens; Pastell 4's « jetons d'authentification »): a person's token acts as
-- that person, with their grants of the moment.  Only a SHA-256 of the token is kept (it has 256 bits of entropy);
-- a token may expire and is revoked by its owner or an administrator.
CREATE TABLE user_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX user_tokens_hash ON user_tokens (token_hash);
CREATE INDEX user_tokens_user ON user_tokens (user_id, created_at);
