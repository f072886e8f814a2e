-- Archiving (SAE): the built-in archive store's index of sealed SEDA packages, and the transfers
-- sent to an outside SAE (As@lae), keyed so that one document is never transferred twice.
CREATE TABLE archive_packages (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    transfer_id TEXT NOT NULL UNIQUE,
    seda_version TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    keywords TEXT NOT NULL DEFAULT '[]',
    start_date TEXT,
    end_date TEXT,
    archived_at TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    files INTEGER NOT NULL,
    backend TEXT NOT NULL,
    location TEXT NOT NULL,
    version_id TEXT,
    retain_until TEXT,
    seal_subject TEXT,
    timestamped_at TEXT,
    manifest TEXT NOT NULL,
    search_text TEXT NOT NULL DEFAULT ''
);
CREATE INDEX archive_packages_entity ON archive_packages (entity_id, flow_id, archived_at);
CREATE INDEX archive_packages_document ON archive_packages (document_id);

CREATE TABLE archive_transfers (
    instance_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    package_id TEXT,
    status TEXT NOT NULL,
    reply_code TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (instance_id, document_id)
);
