-- Text search by index (flowbus.store.textsearch): GIN indexes over to_tsvector('simple', search_text)
-- of documents and archive packages.  The rows written before this migration hold lower-case text
-- with accents and punctuation: folded here as flowbus.store.textsearch folds new ones (accents of
-- French and the usual Latin letters, ligatures; anything but letters and digits becomes a space),
-- so that PostgreSQL's parser splits them into the same words as SQLite's tokenizer.
UPDATE documents SET search_text = btrim(regexp_replace(translate(replace(replace(replace(lower(search_text), 'œ', 'oe'), 'æ', 'ae'), 'ß', 'ss'), 'àáâãäåāçćčèéêëēęěìíîïīñńòóôõöōøùúûüūůýÿžźżšśł', 'aaaaaaaccceeeeeeeiiiiinnooooooouuuuuuyyzzzssl'), '[^a-z0-9]+', ' ', 'g')) WHERE search_text <> '';
UPDATE archive_packages SET search_text = btrim(regexp_replace(translate(replace(replace(replace(lower(search_text), 'œ', 'oe'), 'æ', 'ae'), 'ß', 'ss'), 'àáâãäåāçćčèéêëēęěìíîïīñńòóôõöōøùúûüūůýÿžźżšśł', 'aaaaaaaccceeeeeeeiiiiinnooooooouuuuuuyyzzzssl'), '[^a-z0-9]+', ' ', 'g')) WHERE search_text <> '';
CREATE INDEX documents_search ON documents USING gin (to_tsvector('simple', search_text));
CREATE INDEX archive_packages_search ON archive_packages USING gin (to_tsvector('simple', search_text));
