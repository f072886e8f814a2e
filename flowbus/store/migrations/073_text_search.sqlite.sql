-- Text search by index (flowbus.store.textsearch): FTS5 tables over documents.search_text and
-- archive_packages.search_text (external content: the text is not stored twice), kept by triggers
-- that run only when the text changes (the engine rewrites search_text on each step, most often
-- unchanged).  unicode61 remove_diacritics 2 folds the rows written before this migration as
-- flowbus.store.textsearch folds new ones.  Positions are kept (detail=full): a query term is a phrase.
-- The FTS rows follow the tables' rowids: after a manual VACUUM (which may renumber them), run
-- INSERT INTO documents_fts (documents_fts) VALUES ('rebuild') and the same for archive_packages_fts.
CREATE VIRTUAL TABLE documents_fts USING fts5(search_text, content='documents', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN INSERT INTO documents_fts (rowid, search_text) VALUES (new.rowid, new.search_text); END;
CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN INSERT INTO documents_fts (documents_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END;
CREATE TRIGGER documents_fts_update AFTER UPDATE OF search_text ON documents WHEN old.search_text IS NOT new.search_text BEGIN INSERT INTO documents_fts (documents_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); INSERT INTO documents_fts (rowid, search_text) VALUES (new.rowid, new.search_text); END;
INSERT INTO documents_fts (documents_fts) VALUES ('rebuild');
CREATE VIRTUAL TABLE archive_packages_fts USING fts5(search_text, content='archive_packages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER archive_packages_fts_insert AFTER INSERT ON archive_packages BEGIN INSERT INTO archive_packages_fts (rowid, search_text) VALUES (new.rowid, new.search_text); END;
CREATE TRIGGER archive_packages_fts_delete AFTER DELETE ON archive_packages BEGIN INSERT INTO archive_packages_fts (archive_packages_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END;
CREATE TRIGGER archive_packages_fts_update AFTER UPDATE OF search_text ON archive_packages WHEN old.search_text IS NOT new.search_text BEGIN INSERT INTO archive_packages_fts (archive_packages_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); INSERT INTO archive_packages_fts (rowid, search_text) VALUES (new.rowid, new.search_text); END;
INSERT INTO archive_packages_fts (archive_packages_fts) VALUES ('rebuild');
