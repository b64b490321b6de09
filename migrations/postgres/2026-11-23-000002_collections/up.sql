-- Collection identity: the canonical id clients see, and the id on each instance.
CREATE TABLE collection_map (
    canonical_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    database_name TEXT NOT NULL,
    name TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (canonical_id, instance)
);
