-- inbound.common.find_by_origin looks for the document.created entry of an interrupted submission
-- by its actor: index those entries only, so that writing every other entry (the engine's, most of
-- the journal) updates one index less.
DROP INDEX journal_actor_kind;
CREATE INDEX journal_origin ON journal (actor, at) WHERE kind = 'document.created';
