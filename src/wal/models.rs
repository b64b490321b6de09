//! Rows of the WAL tables and the typed values stored in them.
//!
//! Plain data: nothing here talks to the database.

use std::fmt;

use actix_web::web::Bytes;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::{collection_map, wal_applied, wal_entries};

/// Position of an entry in the log; strictly increasing in append order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Seq(pub i64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Life of an entry: logged before execution, then one of the outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Durable, not yet executed (or executing).
    Logged,
    /// An instance accepted it (2xx); to be replicated to the others.
    Committed,
    /// An instance refused it (4xx); never replayed.
    Rejected,
    /// Accepted with no instance to run it, or its outcome was lost in a crash; replayed to all.
    Queued,
    /// Could not be executed and will not be replayed (the client got an error).
    Failed,
}

impl EntryState {
    /// The text stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logged => "logged",
            Self::Committed => "committed",
            Self::Rejected => "rejected",
            Self::Queued => "queued",
            Self::Failed => "failed",
        }
    }

    /// Entries in these states still have to reach every instance.
    pub const TO_REPLICATE: [&'static str; 2] = ["committed", "queued"];
}

/// Per-instance application state stored in `wal_applied.state`.
pub const APPLIED: &str = "applied";
/// Per-instance state of an entry given up on after the retry limit.
pub const FAILED: &str = "failed";

/// A client write to be logged, as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// Transaction id given to the client (`X-Transaction-Id`).
    pub txn_id: String,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// Operation, e.g. `add` or `create_collection`.
    pub kind: &'static str,
    /// HTTP method.
    pub method: String,
    /// Path and query, as replayed to an instance.
    pub path: String,
    /// JSON object of the headers Chroma needs (never credentials).
    pub headers: String,
    /// Request body.
    pub body: Bytes,
    /// Collection the write touches (id or name), if any.
    pub collection: Option<String>,
}

/// Insertable view of a [`WriteRecord`] with its sequence number.
#[derive(Insertable)]
#[diesel(table_name = wal_entries)]
pub struct NewEntry<'a> {
    pub seq: i64,
    pub txn_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub kind: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a str,
    pub body: &'a [u8],
    pub collection: Option<&'a str>,
    pub state: &'a str,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One stored entry.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = wal_entries)]
pub struct EntryRow {
    pub seq: i64,
    pub txn_id: String,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub method: String,
    pub path: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub collection: Option<String>,
    pub state: String,
    pub status: Option<i32>,
    pub response: Option<Vec<u8>>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One entry's application on one instance.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wal_applied)]
pub struct AppliedRow {
    pub seq: i64,
    pub instance: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub updated_ms: i64,
}

/// The outcome of one logged write, recorded after execution.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The entry.
    pub seq: Seq,
    /// Its new state.
    pub state: EntryState,
    /// The status the client got.
    pub status: Option<u16>,
    /// The body the client got.
    pub response: Option<Bytes>,
    /// Why it failed or was queued.
    pub error: Option<String>,
    /// The instance that executed it, which therefore has it applied.
    pub applied_on: Option<String>,
}

/// Milliseconds since the Unix epoch, the WAL's portable time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One collection's id on one instance, as persisted.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = collection_map)]
pub struct MappingRow {
    pub canonical_id: String,
    pub instance: String,
    pub instance_id: String,
    pub tenant: String,
    pub database_name: String,
    pub name: String,
    pub updated_ms: i64,
}

/// An entry waiting to be applied on one instance, with the attempts made so far.
#[derive(Debug, Clone)]
pub struct PendingEntry {
    pub entry: EntryRow,
    pub attempts: i32,
}
