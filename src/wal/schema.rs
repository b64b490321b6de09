//! The WAL tables, shared by the PostgreSQL and SQLite backends (portable types only: times are
//! milliseconds since the epoch, flags are text states).

diesel::table! {
    /// One row per client write, in sequence order.
    wal_entries (seq) {
        seq -> BigInt,
        txn_id -> Text,
        idempotency_key -> Nullable<Text>,
        kind -> Text,
        method -> Text,
        path -> Text,
        body -> Binary,
        scope -> Text,
        state -> Text,
        status -> Nullable<Integer>,
        response -> Nullable<Binary>,
        error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
        epoch -> BigInt,
    }
}

diesel::table! {
    /// Per entry and instance: applied or failed; no row means not yet applied there.
    wal_applied (seq, instance) {
        seq -> BigInt,
        instance -> Text,
        state -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// Per collection and instance: the id that instance gives the canonical collection.
    collection_map (canonical_id, instance) {
        canonical_id -> Text,
        instance -> Text,
        instance_id -> Text,
        tenant -> Text,
        database_name -> Text,
        name -> Text,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// Leadership of the proxies sharing the log: one row, id 1.
    proxy_lease (id) {
        id -> Integer,
        holder -> Nullable<Text>,
        epoch -> BigInt,
        url -> Nullable<Text>,
        ttl_ms -> BigInt,
        renewals -> BigInt,
        expires_ms -> BigInt,
    }
}

diesel::table! {
    /// Every proxy sharing the log, as last heard from.
    proxy_members (proxy_id) {
        proxy_id -> Text,
        url -> Text,
        role -> Text,
        epoch -> BigInt,
        seen_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(wal_entries, wal_applied, collection_map);

diesel::allow_columns_to_appear_in_same_group_by_clause!(wal_applied::instance, wal_entries::scope);

diesel::table! {
    /// Instances being seeded, with the entry up to which the copy holds the log.
    seeding (instance) {
        instance -> Text,
        source -> Text,
        floor -> BigInt,
        started_ms -> BigInt,
    }
}
