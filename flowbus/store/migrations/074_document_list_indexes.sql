-- Every document list the API v1, the Pastell layer and the pages offer reads one index range in the
-- order it shows, a page at a time (keyset on (created_at, id), or Pastell's (updated_at, id)), never a
-- scan of the table nor a sort of what it matched (tests/core/test_document_list_plans.py checks the
-- plans on both backends).  Each index ends with id so that the order is total and a cursor
-- (created_at, id) > (…) is one range.  Columns that never change after the insert (entity, flow,
-- created_at) lead where they can: those indexes cost nothing on the engine's updates.
DROP INDEX documents_created;
CREATE INDEX documents_created ON documents (created_at, id);
DROP INDEX documents_entity_flow_state;
CREATE INDEX documents_entity_flow_state ON documents (entity_id, flow_id, state, created_at, id);
CREATE INDEX documents_entity_flow_created ON documents (entity_id, flow_id, created_at, id);
DROP INDEX documents_state_entity;
CREATE INDEX documents_state_entity ON documents (state, entity_id, created_at, id);
CREATE INDEX documents_entity_created ON documents (entity_id, created_at, id);
CREATE INDEX documents_flow_created ON documents (flow_id, created_at, id);
CREATE INDEX documents_flow_state_created ON documents (flow_id, state, created_at, id);
CREATE INDEX documents_state_created ON documents (state, created_at, id);
-- the Pastell layer lists an entity's documents by last change, newest first (optionally of one flux)
CREATE INDEX documents_entity_updated ON documents (entity_id, updated_at, id);
CREATE INDEX documents_entity_flow_updated ON documents (entity_id, flow_id, updated_at, id);
