-- Batch actions of the document list: one row per batch (who, what, when finished), one per document
-- with its result in French.  A batch not finished when its process stopped is taken up again at start.
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX batches_unfinished ON batches (created_at) WHERE finished_at IS NULL;
CREATE INDEX batches_actor ON batches (actor, created_at);
CREATE TABLE batch_items (
    batch_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    document_id TEXT NOT NULL,
    title TEXT NOT NULL,
    outcome TEXT,
    message TEXT,
    PRIMARY KEY (batch_id, position)
);
