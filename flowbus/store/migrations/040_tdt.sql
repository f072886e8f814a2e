-- Télétransmission (ACTES, PES): the préfecture's classification per connector instance and entity,
-- and the transactions posted to the TdT, keyed so that one act or PES is never posted twice.
CREATE TABLE tdt_classifications (
    instance_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    classification_date TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (instance_id, entity_id)
);

CREATE TABLE tdt_transmissions (
    instance_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    document_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (instance_id, idem_key)
);
