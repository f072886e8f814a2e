-- The console searches administrative and sign-in entries across every entity by date: index those
-- entries only (a small part of the journal), so that the engine's entries update no extra index.
CREATE INDEX journal_admin_at ON journal (at) WHERE kind LIKE 'admin.%' OR kind LIKE 'user.%';
