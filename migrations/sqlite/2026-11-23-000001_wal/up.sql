-- The write-ahead log: one row per client write, in sequence order.
CREATE TABLE wal_entries (
    seq BIGINT PRIMARY KEY,
    txn_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    collection TEXT,
    state TEXT NOT NULL,
    status INTEGER,
    response BLOB,
    error TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX wal_entries_idempotency_key ON wal_entries (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX wal_entries_state_seq ON wal_entries (state, seq);

-- Per entry and instance: applied, or failed after retries, with attempts and last error.
-- No row means not yet applied there.
CREATE TABLE wal_applied (
    seq BIGINT NOT NULL,
    instance TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (seq, instance)
);
CREATE INDEX wal_applied_instance_seq ON wal_applied (instance, seq);
