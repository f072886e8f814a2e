-- Secure-mail address book per collectivité: contacts and groups (a group of a collectivité is usable by
-- the collectivités below it), written « groupe:<nom> » where a recipient is expected.
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX contacts_email ON contacts (entity_id, email);
CREATE INDEX contacts_name ON contacts (entity_id, name);
CREATE TABLE contact_groups (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX contact_groups_name ON contact_groups (entity_id, name);
CREATE TABLE contact_group_members (
    group_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX contact_group_members_contact ON contact_group_members (contact_id);
