-- Failed authentications per door (api, pastell, signin, mailsec-token, mailsec-password, parapheur, forgot)
-- and key ('address:<ip or IPv6 /64>' or 'identity:<login, key id…>'): one row each, a counter over a fixed
-- window and the time the key is refused until. Every API process reads and writes the same rows.
CREATE TABLE auth_limits (
    door TEXT NOT NULL,
    key TEXT NOT NULL,
    window_start TEXT NOT NULL,
    failures INTEGER NOT NULL,
    blocked_until TEXT,
    PRIMARY KEY (door, key)
);
CREATE INDEX auth_limits_window ON auth_limits (window_start);
