-- Leadership of the proxies that share this log: one row. The holder may change the log; every
-- transaction that does checks, inside itself, that the epoch is still its own (fencing). A
-- renewal bumps `renewals`, which is how the others tell a live holder from a dead one without
-- trusting each other's clocks; `expires_ms` (the holder's clock) is for people.
CREATE TABLE proxy_lease (
    id INTEGER PRIMARY KEY,
    holder TEXT,
    epoch BIGINT NOT NULL,
    url TEXT,
    ttl_ms BIGINT NOT NULL,
    renewals BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
INSERT INTO proxy_lease (id, holder, epoch, url, ttl_ms, renewals, expires_ms)
    VALUES (1, NULL, 0, NULL, 0, 0, 0);
-- Every proxy that shares the log, as last heard from: what the leader's /status lists.
CREATE TABLE proxy_members (
    proxy_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    role TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL
);
-- Which leader logged each entry.
ALTER TABLE wal_entries ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
