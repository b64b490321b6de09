DROP INDEX wal_applied_instance_state_seq;
CREATE INDEX wal_applied_instance_seq ON wal_applied (instance, seq);
