-- The column holds a scope key (global, database:T/D, collection:ID), not a collection.
ALTER TABLE wal_entries RENAME COLUMN collection TO scope;
-- Replay sends every entry as JSON, as every Chroma write is; the stored headers were unread.
ALTER TABLE wal_entries DROP COLUMN headers;
