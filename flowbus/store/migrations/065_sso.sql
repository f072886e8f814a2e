-- Single sign-on: a sign-in started with the identity provider (state, nonce, PKCE verifier), used once.
CREATE TABLE sso_attempts (
    state_hash TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    next_url TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX sso_attempts_created ON sso_attempts (created_at);
