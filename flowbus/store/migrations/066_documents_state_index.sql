-- The document list counts documents by state (bounded counts, flowbus.store.repo.count_documents_by_state)
-- and lists a state across collectivités: one index range per state, within the collectivités in scope.
CREATE INDEX documents_state_entity ON documents (state, entity_id, created_at);
