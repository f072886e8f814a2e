-- The Pastell API v2 layer (flowbus.connectors.inbound.pastell_v2.ids) names entities, people and journal entries
-- with the integers Pastell clients store (id_e, id_u, id_j).  Each number is allocated once from its kind's counter
-- and never given to anything else, even after what it named is deleted: the row stays.  Being rows of the state
-- store, they survive restarts, backups and restores with the rest.
CREATE TABLE pastell_id_counters (
    kind TEXT PRIMARY KEY,
    last_num BIGINT NOT NULL
);
CREATE TABLE pastell_ids (
    kind TEXT NOT NULL,
    num BIGINT NOT NULL,
    ours TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, num)
);
CREATE UNIQUE INDEX pastell_ids_ours ON pastell_ids (kind, ours);
-- What Pastell says of an entity and flowbus does not: its type (collectivite, service, centre_de_gestion), its
-- centre de gestion, and a service's SIREN (a service often shares its collectivité's: not a legal identity of its own).
CREATE TABLE pastell_entities (
    entity_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    centre_de_gestion TEXT,
    siren TEXT
);
