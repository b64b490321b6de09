DROP TABLE wal_applied;
DROP TABLE wal_entries;
