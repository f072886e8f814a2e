-- Flow versions: each distinct content of a flow file, kept so that a document finishes on the version it
-- started with (documents.flow_version; NULL before start: a draft follows the current version), and so the
-- console can show what changed when. Reloads are numbered so every process picks up a reload made by another.
CREATE TABLE flow_versions (
    flow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    source_file TEXT NOT NULL,
    body TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (flow_id, version)
);
CREATE UNIQUE INDEX flow_versions_digest ON flow_versions (flow_id, digest);
CREATE TABLE flow_reloads (
    generation INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    summary TEXT NOT NULL
);
ALTER TABLE documents ADD COLUMN flow_version INTEGER;
