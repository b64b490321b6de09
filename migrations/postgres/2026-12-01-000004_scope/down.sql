ALTER TABLE wal_entries ADD COLUMN headers TEXT NOT NULL DEFAULT '{}';
ALTER TABLE wal_entries RENAME COLUMN scope TO collection;
