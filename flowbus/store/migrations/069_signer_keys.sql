-- A signer's own certificate for the built-in parapheur: the PKCS#12 as the signer gave it (it stays locked
-- by its code, which the server never keeps: the signer types it at each signing).
CREATE TABLE parapheur_signer_keys (
    signer_id TEXT PRIMARY KEY,
    p12 TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_after TEXT NOT NULL,
    created_at TEXT NOT NULL
);
