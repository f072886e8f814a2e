-- Per-entity checkpoint of `flowbus journal verify` (flowbus.journal_verify): the last entry (seq, hash) of each chain
-- that a verification found intact, and when.  `journal verify --since` starts from it instead of the genesis.
CREATE TABLE journal_checkpoints (
    entity_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    verified_at TEXT NOT NULL
);
