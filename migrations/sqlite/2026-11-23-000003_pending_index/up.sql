-- Replay asks, per instance, for its pending entries in order, once per write. With state
-- outside the index it scanned every entry the instance had already applied: a cost growing
-- with the whole log kept for WAL_RETENTION. With it, the cost is the pending entries read.
DROP INDEX wal_applied_instance_seq;
CREATE INDEX wal_applied_instance_state_seq ON wal_applied (instance, state, seq);
