//! Rows of the WAL tables and the typed values stored in them. Every value read back is
//! parsed into its type: an unknown state, scope or instance name is a deserialization error,
//! never a default.
//!
//! Plain data: nothing here talks to the database.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use actix_web::web::Bytes;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use serde::Serialize;

use super::schema::{collection_map, wal_applied, wal_entries};
use crate::instance::InstanceName;
use crate::policy::Scope;

/// Maps a type to a TEXT column on both backends, through `$to_text` and `FromStr`.
macro_rules! text_column {
    ($ty:ty, $to_text:expr) => {
        impl ToSql<Text, Pg> for $ty {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                let text: &str = &($to_text)(self);
                out.write_all(text.as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl ToSql<Text, Sqlite> for $ty {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
                out.set_value(($to_text)(self).to_string());
                Ok(IsNull::No)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $ty
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                Ok(String::from_sql(bytes)?.parse::<$ty>()?)
            }
        }
    };
}

/// A value read back from the log that this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` in the write-ahead log")]
pub struct UnknownValue {
    /// What kind of value: `entry state`, `application state`.
    pub what: &'static str,
    /// The text read.
    pub value: String,
}

/// Position of an entry in the log; strictly increasing in append order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = BigInt)]
#[serde(transparent)]
pub struct Seq(pub i64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<DB: Backend> ToSql<BigInt, DB> for Seq
where
    i64: ToSql<BigInt, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.0.to_sql(out)
    }
}

impl<DB: Backend> FromSql<BigInt, DB> for Seq
where
    i64: FromSql<BigInt, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        i64::from_sql(bytes).map(Seq)
    }
}

/// Life of an entry: logged before execution, then one of the outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
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
    pub const TO_REPLICATE: [Self; 2] = [Self::Committed, Self::Queued];
}

impl FromStr for EntryState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        [Self::Logged, Self::Committed, Self::Rejected, Self::Queued, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "entry state", value: s.to_string() })
    }
}

text_column!(EntryState, |s: &EntryState| s.as_str());

/// Where an entry stands on one instance (`wal_applied.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum ApplyState {
    /// Not applied there yet.
    Pending,
    /// Applied there (by the write itself or by replay).
    Applied,
    /// Refused there MAX_REPLAY_RETRIES times; blocks the later entries of its scope there.
    Failed,
    /// Resolved there by an admin without applying it (`POST /admin/wal/skip`).
    Skipped,
}

impl ApplyState {
    /// The text stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Whether the instance still owes the entry.
    pub fn is_owed(self) -> bool {
        matches!(self, Self::Pending | Self::Failed)
    }
}

impl FromStr for ApplyState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        [Self::Pending, Self::Applied, Self::Failed, Self::Skipped]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "application state", value: s.to_string() })
    }
}

text_column!(ApplyState, |s: &ApplyState| s.as_str());
text_column!(Scope, |s: &Scope| s.key());
text_column!(InstanceName, |s: &InstanceName| s.as_str().to_string());

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
    /// Request body (JSON, as every Chroma write).
    pub body: Bytes,
    /// The scope the write changes.
    pub scope: Scope,
}

/// Insertable view of a [`WriteRecord`] with its sequence number.
#[derive(Insertable)]
#[diesel(table_name = wal_entries)]
pub struct NewEntry<'a> {
    pub seq: Seq,
    pub txn_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub kind: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    pub scope: &'a Scope,
    pub state: EntryState,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The leader's epoch that logged it.
    pub epoch: i64,
}

/// One stored entry.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = wal_entries)]
pub struct EntryRow {
    pub seq: Seq,
    pub txn_id: String,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub scope: Scope,
    pub state: EntryState,
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
    pub seq: Seq,
    pub instance: InstanceName,
    pub state: ApplyState,
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
    pub applied_on: Option<InstanceName>,
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
    pub instance: InstanceName,
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
