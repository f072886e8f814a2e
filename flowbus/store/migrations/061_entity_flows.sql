-- Which flows a collectivité uses: a row enables or disables a flow for an entity and the entities below
-- it (the nearest row up the tree decides; no row anywhere: the flow is used).
CREATE TABLE entity_flows (
    entity_id TEXT NOT NULL REFERENCES entities(id),
    flow_id TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (entity_id, flow_id)
);
