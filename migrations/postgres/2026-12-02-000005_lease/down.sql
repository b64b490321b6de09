ALTER TABLE wal_entries DROP COLUMN epoch;
DROP TABLE proxy_members;
DROP TABLE proxy_lease;
