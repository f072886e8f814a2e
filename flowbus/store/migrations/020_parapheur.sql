-- Built-in parapheur: desks (roles within an entity), signers, circuits, folders and their tasks,
-- decisions (who, when, on behalf of which desk), delegations between desks, signer sessions.
CREATE TABLE parapheur_desks (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES entities(id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX parapheur_desks_name ON parapheur_desks (entity_id, name);

CREATE TABLE parapheur_signers (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES entities(id),
    login TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE parapheur_desk_members (
    desk_id TEXT NOT NULL REFERENCES parapheur_desks(id),
    signer_id TEXT NOT NULL REFERENCES parapheur_signers(id),
    PRIMARY KEY (desk_id, signer_id)
);
CREATE INDEX parapheur_members_signer ON parapheur_desk_members (signer_id);

CREATE TABLE parapheur_circuits (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES entities(id),
    name TEXT NOT NULL,
    steps TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX parapheur_circuits_name ON parapheur_circuits (entity_id, name);

CREATE TABLE parapheur_folders (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    circuit TEXT NOT NULL,
    status TEXT NOT NULL,
    position INTEGER NOT NULL,
    filename TEXT NOT NULL,
    media_type TEXT NOT NULL,
    source_blob TEXT NOT NULL,
    current_blob TEXT NOT NULL,
    current_size BIGINT NOT NULL,
    current_sha256 TEXT NOT NULL,
    annexes TEXT NOT NULL DEFAULT '[]',
    detached TEXT NOT NULL DEFAULT '[]',
    comment TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX parapheur_folders_document ON parapheur_folders (document_id, step_id, created_at);

CREATE TABLE parapheur_tasks (
    id TEXT PRIMARY KEY,
    folder_id TEXT NOT NULL REFERENCES parapheur_folders(id),
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    desk_id TEXT,
    label TEXT NOT NULL,
    external_name TEXT,
    external_email TEXT,
    link_hash TEXT,
    status TEXT NOT NULL,
    activated_at TEXT,
    decided_by TEXT,
    decided_at TEXT,
    comment TEXT
);
CREATE INDEX parapheur_tasks_desk ON parapheur_tasks (desk_id, status);
CREATE INDEX parapheur_tasks_folder ON parapheur_tasks (folder_id, position);
CREATE UNIQUE INDEX parapheur_tasks_link ON parapheur_tasks (link_hash);

CREATE TABLE parapheur_decisions (
    id TEXT PRIMARY KEY,
    folder_id TEXT NOT NULL REFERENCES parapheur_folders(id),
    task_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    desk_id TEXT,
    on_behalf_of TEXT,
    at TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX parapheur_decisions_folder ON parapheur_decisions (folder_id, at);

CREATE TABLE parapheur_delegations (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    from_desk TEXT NOT NULL REFERENCES parapheur_desks(id),
    to_desk TEXT NOT NULL REFERENCES parapheur_desks(id),
    starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX parapheur_delegations_to ON parapheur_delegations (to_desk, starts_at, ends_at);

CREATE TABLE parapheur_sessions (
    token_hash TEXT PRIMARY KEY,
    signer_id TEXT NOT NULL REFERENCES parapheur_signers(id),
    csrf TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);
