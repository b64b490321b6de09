//! The WAL store: an r2d2 pool of diesel connections to PostgreSQL or SQLite, the embedded
//! migrations, and every query the proxy runs against the log. Each query is written once and
//! compiled for both backends by [`with_conn!`].
//!
//! Blocking: call it only from the WAL writer's own thread or from `web::block`, never from an
//! async executor thread. Queries page or aggregate: nothing here loads the whole log.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde::Serialize;

use super::models::{
    AppliedRow, ApplyState, EntryRow, EntryState, MappingRow, NewEntry, PendingEntry, Resolution,
    Seq, WriteRecord, now_ms,
};
use super::schema::{collection_map, proxy_lease, seeding, wal_applied, wal_entries};
use crate::config::DatabaseUrl;
use crate::instance::InstanceName;
use crate::policy::Scope;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// PostgreSQL advisory lock key held while migrating ("chroma-ha" in ASCII).
const MIGRATION_LOCK: i64 = 0x6368_726f_6d61_6861;
/// The lease table's one row.
const LEASE_ROW: i32 = 1;
/// PostgreSQL advisory lock key of the lease ("lease" in ASCII): shared by every fenced
/// transaction, exclusive for a takeover.
const LEASE_LOCK: i64 = 0x006c_6561_7365;

/// Longest wait for a pooled connection: a WAL store that does not answer in this time is down,
/// and the write is refused rather than left hanging.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the WAL could not do what was asked. Each variant leads to a different answer: a store
/// that is down is retried (and writes are refused meanwhile), a conflict is another writer's
/// claim on the same row, a bug is reported and never retried as if the store were down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// The store cannot be reached or did not finish the statement; retry later.
    #[error("write-ahead log store unavailable: {0}")]
    Unavailable(String),
    /// A row is already taken (a duplicate key).
    #[error("write-ahead log conflict: {0}")]
    Conflict(String),
    /// The log holds something this version cannot read, or a statement is wrong: a bug or a
    /// damaged log, not an outage.
    #[error("write-ahead log error (not an outage): {0}")]
    Bug(String),
    /// The schema could not be brought up to date.
    #[error("write-ahead log migration failed: {0}")]
    Migration(String),
    /// This proxy does not hold the leader's lease (any more): nothing was changed, and the
    /// proxy steps down.
    #[error("this proxy is not the leader: {0}")]
    Fenced(String),
}

impl From<diesel::result::Error> for WalError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match &e {
            Error::DatabaseError(Kind::UniqueViolation, _) => Self::Conflict(e.to_string()),
            Error::DatabaseError(
                Kind::ForeignKeyViolation | Kind::NotNullViolation | Kind::CheckViolation,
                _,
            )
            | Error::DeserializationError(_)
            | Error::SerializationError(_)
            | Error::QueryBuilderError(_)
            | Error::InvalidCString(_)
            | Error::NotFound => Self::Bug(e.to_string()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for WalError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

enum AnyPool {
    Postgres(Pool<ConnectionManager<PgConnection>>),
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend is configured.
///
/// Chosen over diesel's `MultiConnection` derive: the body is compiled and type-checked against
/// each backend's own connection, so backend-specific SQL (`ON CONFLICT` upserts, each
/// backend's durability settings, the lease transactions to come) stays available and checked,
/// where a multi-backend connection offers only what every backend shares; and each backend
/// keeps its own pool and connection customizer.
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match &*$pool {
            AnyPool::Postgres(pool) => {
                let mut pooled = pool.get()?;
                let $conn: &mut PgConnection = &mut pooled;
                $body
            }
            AnyPool::Sqlite(pool) => {
                let mut pooled = pool.get()?;
                let $conn: &mut SqliteConnection = &mut pooled;
                $body
            }
        }
    };
}

mod lease;
pub use lease::{Lease, Member};

/// Durability settings applied to every SQLite connection.
#[derive(Debug)]
struct SqliteDurability;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteDurability {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // busy_timeout first: the pool opens its connections at once, and each one's switch
        // to the WAL journal takes a lock the others then wait for instead of failing
        // ("database is locked" at every start). WAL journal + synchronous FULL: a commit is on
        // disk when it returns; readers never block the writer; retention and the writer take
        // turns; a 1 MB page cache per connection bounds what a large log can cost in memory.
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA cache_size = -1024;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// How each backend chooses whether a commit waits for the disk.
trait Durability {
    /// Called before the transaction begins.
    fn before_transaction(&mut self, _durable: bool) -> QueryResult<()> {
        Ok(())
    }
}

impl Durability for SqliteConnection {
    fn before_transaction(&mut self, durable: bool) -> QueryResult<()> {
        // A per-connection setting, so it is set on every commit. In WAL journal mode NORMAL
        // skips the fsync but never corrupts the file.
        self.batch_execute(if durable {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        })
    }
}

/// Every commit waits for the disk (see [`WalStore::commit`]), set by [`PgDurability`].
impl Durability for PgConnection {}

/// Sets up every pooled PostgreSQL connection.
#[derive(Debug)]
struct PgDurability;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PgDurability {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        // Whatever the server, database or role default: a commit is on disk when it returns.
        // A transaction of this proxy never waits between its statements, so one that idles
        // is a frozen process's (SIGSTOP, a paused VM): the server ends it, and with it the
        // lease lock it shares (see [`Fencing`]), which would otherwise hold off a takeover for
        // as long as the freeze lasts.
        conn.batch_execute(
            "SET synchronous_commit TO on; SET idle_in_transaction_session_timeout TO '2s'",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Transactions that change the log, fenced: each checks, inside itself, that the lease's
/// epoch is still the one this proxy holds, and aborts otherwise (DESIGN 12). On PostgreSQL
/// each holds a shared transaction-level advisory lock, which a takeover takes exclusively
/// before it moves the epoch: the takeover waits for the transactions in flight, and one that
/// starts after it sees the new epoch. (An advisory lock lives in the server's memory: unlike a
/// `FOR SHARE` lock on the lease row it writes nothing, and overlapping transactions make no
/// multixact.) SQLite's immediate transactions take the file's write lock at their start, which
/// a takeover needs too.
trait Fencing: Sized {
    /// Runs `f` in a transaction that holds the lease at `epoch` for its whole length.
    fn fenced<T>(
        &mut self,
        epoch: i64,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError>;

    /// Runs `f`, which moves the lease to a new epoch, once no fenced transaction is in flight.
    fn taking_over<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError>;
}

/// The error for a lease now at `(epoch, holder)`, when this proxy held `mine`.
fn fenced_out(mine: i64, (epoch, holder): (i64, Option<String>)) -> Result<(), WalError> {
    if epoch == mine && mine > 0 {
        return Ok(());
    }
    let holder = holder.as_deref().unwrap_or("nobody");
    Err(WalError::Fenced(format!(
        "the lease is at epoch {epoch}, held by {holder}; this proxy held epoch {mine}"
    )))
}

impl Fencing for PgConnection {
    fn fenced<T>(
        &mut self,
        epoch: i64,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.transaction(|c| {
            c.batch_execute(&format!("SELECT pg_advisory_xact_lock_shared({LEASE_LOCK})"))?;
            let lease = proxy_lease::table
                .find(LEASE_ROW)
                .select((proxy_lease::epoch, proxy_lease::holder))
                .first(c)?;
            fenced_out(epoch, lease)?;
            f(c)
        })
    }

    fn taking_over<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.transaction(|c| {
            c.batch_execute(&format!("SELECT pg_advisory_xact_lock({LEASE_LOCK})"))?;
            f(c)
        })
    }
}

impl Fencing for SqliteConnection {
    fn fenced<T>(
        &mut self,
        epoch: i64,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.immediate_transaction(|c| {
            let lease = proxy_lease::table
                .find(LEASE_ROW)
                .select((proxy_lease::epoch, proxy_lease::holder))
                .first(c)?;
            fenced_out(epoch, lease)?;
            f(c)
        })
    }

    fn taking_over<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.immediate_transaction(f)
    }
}

/// What became of one append in a group commit.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Durable under this sequence number.
    Logged(Seq),
    /// The idempotency key was already used by this earlier entry; nothing was logged.
    Duplicate(Box<EntryRow>),
    /// The idempotency key is used by another append of the same batch, still in flight.
    InFlight,
}

/// Entries an instance owes, read in one go by replay.
#[derive(Debug, Default)]
pub struct Window {
    /// In log order.
    pub entries: Vec<PendingEntry>,
    /// Whether more are owed after them, ready to be read at once.
    pub more: bool,
    /// Whether the window stops before an entry still executing (`logged`), whose outcome
    /// decides what follows it.
    pub in_flight: bool,
}

diesel::define_sql_function! {
    /// Bytes of a binary value; both backends call it `length`.
    fn length(x: diesel::sql_types::Binary) -> diesel::sql_types::Integer;
}

/// The `write_ahead_log` block of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    /// `postgresql` or `sqlite`.
    pub backend: &'static str,
    /// Entries some instance has not applied yet.
    pub pending_writes: i64,
    /// Whether replay is applying entries right now.
    pub is_replaying: bool,
    /// Entry/instance pairs given up on after the retry limit.
    pub failed_replays: i64,
    /// Age in seconds of the oldest pending entry, or null.
    pub oldest_pending: Option<f64>,
    /// Entries applied by replay since the proxy started.
    pub total_replayed: u64,
    /// Highest sequence number in the log (0 when empty).
    pub head_seq: Seq,
}

/// Entries one instance still lacks.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// The instance.
    pub instance: InstanceName,
    /// How many entries it lacks.
    pub entries: i64,
    /// Age in seconds of the oldest one, or null.
    pub oldest_seconds: Option<f64>,
    /// Every entry up to this sequence number is applied there.
    pub applied_seq: Seq,
}

/// One write as `GET /transactions/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TransactionView {
    pub transaction_id: String,
    pub seq: Seq,
    pub state: EntryState,
    pub kind: String,
    pub method: String,
    pub path: String,
    pub scope: String,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub instances: Vec<InstanceApplication>,
}

/// One entry on one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceApplication {
    pub instance: InstanceName,
    /// `applied`, `pending` or `failed`; `not_applicable` for rejected and failed writes.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Handle on the WAL database; cheap to clone (the pool, and the epoch this proxy holds, are
/// shared).
#[derive(Clone)]
pub struct WalStore {
    pool: Arc<AnyPool>,
    instances: Arc<Vec<InstanceName>>,
    /// The lease epoch this proxy holds, 0 for none: every change to the log is fenced on it.
    epoch: Arc<AtomicI64>,
}

impl WalStore {
    /// Connects, applies pending migrations, and returns the store for these instances.
    pub fn open(url: &DatabaseUrl, instances: Vec<InstanceName>) -> Result<Self, WalError> {
        let pool = match url {
            DatabaseUrl::Postgres(url) => {
                let pool = Pool::builder()
                    .max_size(8)
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .connection_customizer(Box::new(PgDurability))
                    .build(ConnectionManager::<PgConnection>::new(url))
                    .map_err(|e| WalError::Unavailable(e.to_string()))?;
                let mut conn = pool.get()?;
                // Several proxies may start at once on one database: one migrates at a time.
                conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
                let migrated = conn
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(drop)
                    .map_err(|e| WalError::Migration(e.to_string()));
                conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
                migrated?;
                AnyPool::Postgres(pool)
            }
            DatabaseUrl::Sqlite(path) => {
                let pool = Pool::builder()
                    .max_size(4)
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .connection_customizer(Box::new(SqliteDurability))
                    .build(ConnectionManager::<SqliteConnection>::new(path.to_string_lossy()))
                    .map_err(|e| WalError::Unavailable(e.to_string()))?;
                let mut conn = pool.get()?;
                // Several processes may start at once on one file: one migrates at a time.
                conn.immediate_transaction(|c| {
                    c.run_pending_migrations(SQLITE_MIGRATIONS)
                        .map(drop)
                        .map_err(|e| WalError::Migration(e.to_string()))
                })?;
                AnyPool::Sqlite(pool)
            }
        };
        Ok(Self {
            pool: Arc::new(pool),
            instances: Arc::new(instances),
            epoch: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The lease epoch this proxy holds, 0 for none.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Changes to the log are made under `epoch` from now on (0: none are). The lease keeper
    /// calls it once it took the lease at that epoch; the store fences on it either way.
    pub fn hold(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// `postgresql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match *self.pool {
            AnyPool::Postgres(_) => "postgresql",
            AnyPool::Sqlite(_) => "sqlite",
        }
    }

    /// Startup recovery: entries left `logged` by a crash have an unknown outcome and become
    /// `queued`, so replay applies them everywhere; backlog rows of instances no longer
    /// configured are dropped. Returns (entries queued, rows dropped).
    pub fn recover(&self) -> Result<(usize, usize), WalError> {
        let known = self.instances.as_slice();
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let queued = diesel::update(
                    wal_entries::table.filter(wal_entries::state.eq(EntryState::Logged)),
                )
                .set((
                    wal_entries::state.eq(EntryState::Queued),
                    wal_entries::error.eq("outcome unknown: the proxy stopped while executing it"),
                    wal_entries::updated_ms.eq(now_ms()),
                ))
                .execute(c)?;
                let dropped = diesel::delete(
                    wal_applied::table
                        .filter(wal_applied::state.eq(ApplyState::Pending))
                        .filter(wal_applied::instance.ne_all(known)),
                )
                .execute(c)?;
                Ok((queued, dropped))
            })
        })
    }

    /// Highest sequence number in the log, 0 when empty.
    pub fn head_seq(&self) -> Result<Seq, WalError> {
        with_conn!(self.pool, |conn| {
            let head: Option<Seq> =
                wal_entries::table.select(diesel::dsl::max(wal_entries::seq)).first(conn)?;
            Ok(head.unwrap_or(Seq(0)))
        })
    }

    /// One group commit: logs `appends` (numbered from `first_seq`, keys checked against
    /// entries newer than `key_cutoff_ms`) and records `resolutions`, in one transaction.
    /// With appends the commit waits for the disk (fsync). On SQLite, outcomes alone are
    /// committed without waiting for it: they survive a crash of the proxy, and only a power
    /// loss, which restarts the proxy too, can take one; recovery then queues its entry, which
    /// is safe. PostgreSQL always waits: its server can crash while the proxy runs on, and an
    /// outcome it lost would leave its entry `logged`, holding replay behind it.
    pub fn commit(
        &self,
        first_seq: Seq,
        appends: &[&WriteRecord],
        resolutions: &[Resolution],
        key_cutoff_ms: i64,
    ) -> Result<Vec<Appended>, WalError> {
        let instances = self.instances.as_slice();
        let durable = !appends.is_empty();
        let epoch = self.epoch();
        with_conn!(self.pool, |conn| {
            conn.before_transaction(durable)?;
            conn.fenced(epoch, |c| {
                let now = now_ms();
                let mut outcomes = Vec::with_capacity(appends.len());
                let mut rows = Vec::with_capacity(appends.len());
                let mut keys_in_batch = HashSet::new();
                let mut next = first_seq.0;
                for record in appends {
                    if let Some(key) = record.idempotency_key.as_deref() {
                        if !keys_in_batch.insert(key) {
                            outcomes.push(Appended::InFlight);
                            continue;
                        }
                        diesel::update(
                            wal_entries::table
                                .filter(wal_entries::idempotency_key.eq(key))
                                .filter(wal_entries::created_ms.lt(key_cutoff_ms)),
                        )
                        .set(wal_entries::idempotency_key.eq(None::<String>))
                        .execute(c)?;
                        let earlier = wal_entries::table
                            .filter(wal_entries::idempotency_key.eq(key))
                            .select(EntryRow::as_select())
                            .first(c)
                            .optional()?;
                        match earlier {
                            // A failed write is one the client was told failed: a retry under
                            // its key must run, not replay the failure.
                            Some(earlier) if earlier.state == EntryState::Failed => {
                                diesel::update(wal_entries::table.find(earlier.seq))
                                    .set(wal_entries::idempotency_key.eq(None::<String>))
                                    .execute(c)?;
                            }
                            Some(earlier) => {
                                outcomes.push(Appended::Duplicate(Box::new(earlier)));
                                continue;
                            }
                            None => {}
                        }
                    }
                    rows.push(NewEntry {
                        seq: Seq(next),
                        txn_id: &record.txn_id,
                        idempotency_key: record.idempotency_key.as_deref(),
                        kind: record.kind,
                        method: &record.method,
                        path: &record.path,
                        body: &record.body,
                        scope: &record.scope,
                        state: EntryState::Logged,
                        created_ms: now,
                        updated_ms: now,
                        epoch,
                    });
                    outcomes.push(Appended::Logged(Seq(next)));
                    next += 1;
                }
                if !rows.is_empty() {
                    diesel::insert_into(wal_entries::table).values(&rows).execute(c)?;
                    let pending: Vec<AppliedRow> = rows
                        .iter()
                        .flat_map(|row| {
                            instances.iter().map(move |instance| AppliedRow {
                                seq: row.seq,
                                instance: instance.clone(),
                                state: ApplyState::Pending,
                                attempts: 0,
                                last_error: None,
                                updated_ms: now,
                            })
                        })
                        .collect();
                    diesel::insert_into(wal_applied::table).values(&pending).execute(c)?;
                }
                for r in resolutions {
                    diesel::update(wal_entries::table.find(r.seq))
                        .set((
                            wal_entries::state.eq(r.state),
                            wal_entries::status.eq(r.status.map(i32::from)),
                            wal_entries::response.eq(r.response.as_deref()),
                            wal_entries::error.eq(r.error.as_deref()),
                            wal_entries::updated_ms.eq(now),
                        ))
                        .execute(c)?;
                    let rows_of_entry = wal_applied::table.filter(wal_applied::seq.eq(r.seq));
                    match r.state {
                        EntryState::Rejected | EntryState::Failed => {
                            diesel::delete(rows_of_entry).execute(c)?;
                        }
                        _ => {
                            if let Some(instance) = &r.applied_on {
                                diesel::update(
                                    rows_of_entry.filter(wal_applied::instance.eq(instance)),
                                )
                                .set((
                                    wal_applied::state.eq(ApplyState::Applied),
                                    wal_applied::attempts.eq(wal_applied::attempts + 1),
                                    wal_applied::updated_ms.eq(now),
                                ))
                                .execute(c)?;
                            }
                        }
                    }
                }
                Ok(outcomes)
            })
        })
    }

    /// One write by its transaction id, with its application on every instance.
    pub fn transaction(&self, txn_id: &str) -> Result<Option<TransactionView>, WalError> {
        with_conn!(self.pool, |conn| {
            let Some(entry) = wal_entries::table
                .filter(wal_entries::txn_id.eq(txn_id))
                .select(EntryRow::as_select())
                .first(conn)
                .optional()?
            else {
                return Ok(None);
            };
            let applied: Vec<AppliedRow> = wal_applied::table
                .filter(wal_applied::seq.eq(entry.seq))
                .select(AppliedRow::as_select())
                .load(conn)?;
            Ok(Some(transaction_view(entry, &applied, &self.instances)))
        })
    }

    /// Counts for the `write_ahead_log` status block and each instance's backlog.
    pub fn status(
        &self,
        total_replayed: u64,
        is_replaying: bool,
    ) -> Result<(WalStatus, Vec<Backlog>), WalError> {
        let backend = self.backend();
        with_conn!(self.pool, |conn| {
            let pending = wal_applied::table.filter(wal_applied::state.eq(ApplyState::Pending));
            let pending_writes: i64 = pending
                .select(diesel::dsl::count(wal_applied::seq).aggregate_distinct())
                .first(conn)?;
            let failed_replays: i64 = wal_applied::table
                .filter(wal_applied::state.eq(ApplyState::Failed))
                .count()
                .get_result(conn)?;
            let oldest_seq: Option<Seq> =
                pending.select(diesel::dsl::min(wal_applied::seq)).first(conn)?;
            let head: Option<Seq> =
                wal_entries::table.select(diesel::dsl::max(wal_entries::seq)).first(conn)?;
            let age = |seq: Option<Seq>, conn: &mut _| -> Result<Option<f64>, WalError> {
                let Some(seq) = seq else { return Ok(None) };
                let created: i64 =
                    wal_entries::table.find(seq).select(wal_entries::created_ms).first(conn)?;
                Ok(Some((now_ms() - created).max(0) as f64 / 1000.0))
            };
            let oldest_pending = age(oldest_seq, conn)?;
            let mut backlogs = Vec::with_capacity(self.instances.len());
            for instance in self.instances.iter() {
                let mine = pending.filter(wal_applied::instance.eq(instance));
                let entries: i64 = mine.count().get_result(conn)?;
                let oldest: Option<Seq> =
                    mine.select(diesel::dsl::min(wal_applied::seq)).first(conn)?;
                backlogs.push(Backlog {
                    instance: instance.clone(),
                    entries,
                    oldest_seconds: age(oldest, conn)?,
                    applied_seq: oldest.map_or(head.unwrap_or(Seq(0)), |first| Seq(first.0 - 1)),
                });
            }
            let status = WalStatus {
                backend,
                pending_writes,
                is_replaying,
                failed_replays,
                oldest_pending,
                total_replayed,
                head_seq: head.unwrap_or(Seq(0)),
            };
            Ok((status, backlogs))
        })
    }

    /// Retention: forgets idempotency keys older than `key_cutoff_ms`, and deletes up to `limit`
    /// entries older than `cutoff_ms` that precede every entry still pending or failed on some
    /// instance (applied everywhere, or rejected). Returns (entries deleted, keys forgotten).
    pub fn purge(
        &self,
        cutoff_ms: i64,
        key_cutoff_ms: i64,
        limit: i64,
    ) -> Result<(usize, usize), WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let keys = diesel::update(
                    wal_entries::table
                        .filter(wal_entries::idempotency_key.is_not_null())
                        .filter(wal_entries::created_ms.lt(key_cutoff_ms)),
                )
                .set(wal_entries::idempotency_key.eq(None::<String>))
                .execute(c)?;
                let unfinished: Option<Seq> = wal_applied::table
                    .filter(wal_applied::state.eq_any([ApplyState::Pending, ApplyState::Failed]))
                    .select(diesel::dsl::min(wal_applied::seq))
                    .first(c)?;
                let mut old = wal_entries::table
                    .filter(wal_entries::created_ms.lt(cutoff_ms))
                    .filter(wal_entries::state.ne(EntryState::Logged))
                    .select(wal_entries::seq)
                    .order(wal_entries::seq)
                    .limit(limit)
                    .into_boxed();
                if let Some(first) = unfinished {
                    old = old.filter(wal_entries::seq.lt(first));
                }
                let seqs: Vec<Seq> = old.load(c)?;
                if seqs.is_empty() {
                    return Ok((0, keys));
                }
                diesel::delete(wal_applied::table.filter(wal_applied::seq.eq_any(&seqs)))
                    .execute(c)?;
                let deleted =
                    diesel::delete(wal_entries::table.filter(wal_entries::seq.eq_any(&seqs)))
                        .execute(c)?;
                Ok((deleted, keys))
            })
        })
    }
}

/// One entry given up on for one instance, as `GET /admin/wal/failed` lists it (its fields in
/// the order [`WalStore::failed`] selects them).
#[derive(Debug, Clone, Serialize, Queryable)]
pub struct FailedReplay {
    pub seq: Seq,
    pub transaction_id: String,
    pub kind: String,
    pub path: String,
    pub instance: InstanceName,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl WalStore {
    /// Every persisted collection mapping.
    pub fn mappings(&self) -> Result<Vec<MappingRow>, WalError> {
        with_conn!(self.pool, |conn| Ok(collection_map::table
            .select(MappingRow::as_select())
            .load(conn)?))
    }

    /// Inserts or replaces one instance's id for a canonical collection.
    pub fn save_mapping(&self, row: &MappingRow) -> Result<(), WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                diesel::insert_into(collection_map::table)
                    .values(row)
                    .on_conflict((collection_map::canonical_id, collection_map::instance))
                    .do_update()
                    .set(row)
                    .execute(c)?;
                Ok(())
            })
        })
    }

    /// Forgets one instance's id for a canonical collection, or (with `None`) all of its ids.
    pub fn delete_mappings(
        &self,
        instance: &InstanceName,
        canonical: Option<&str>,
    ) -> Result<(), WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let rows = collection_map::table.filter(collection_map::instance.eq(instance));
                match canonical {
                    Some(id) => diesel::delete(rows.filter(collection_map::canonical_id.eq(id)))
                        .execute(c)?,
                    None => diesel::delete(rows).execute(c)?,
                };
                Ok(())
            })
        })
    }

    /// The next entries after `after` that `instance` has not applied, in log order: at most
    /// `limit`, and at most `max_bytes` of bodies (always one at least, however large), so that
    /// replay's memory is bounded whatever the writes' sizes.
    pub fn pending(
        &self,
        instance: &InstanceName,
        after: Seq,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Window, WalError> {
        with_conn!(self.pool, |conn| {
            let owed = wal_applied::table
                .inner_join(wal_entries::table.on(wal_entries::seq.eq(wal_applied::seq)))
                .filter(wal_applied::instance.eq(instance))
                .filter(wal_applied::state.eq(ApplyState::Pending))
                .filter(wal_applied::seq.gt(after));
            // Sizes and states first; then bodies only of the entries that fit, and none from
            // the first entry still executing on (replay looks again every 20 ms while a write
            // runs, and would read its body each time).
            let sizes: Vec<(Seq, i32, EntryState)> = owed
                .order(wal_applied::seq)
                .limit(limit + 1)
                .select((wal_applied::seq, length(wal_entries::body), wal_entries::state))
                .load(conn)?;
            let (mut total, mut fit) = (0i64, 0usize);
            let mut in_flight = false;
            for (_, size, state) in sizes.iter().take(limit as usize) {
                in_flight = *state == EntryState::Logged;
                if in_flight || (fit > 0 && total + i64::from(*size) > max_bytes) {
                    break;
                }
                total += i64::from(*size);
                fit += 1;
            }
            let Some((last, ..)) = fit.checked_sub(1).map(|n| sizes[n]) else {
                return Ok(Window { in_flight, ..Window::default() });
            };
            let rows: Vec<(EntryRow, i32)> = owed
                .filter(wal_applied::seq.le(last))
                .order(wal_applied::seq)
                .select((EntryRow::as_select(), wal_applied::attempts))
                .load(conn)?;
            let entries = rows
                .into_iter()
                .map(|(entry, attempts)| PendingEntry { entry, attempts })
                .collect();
            Ok(Window { entries, more: !in_flight && sizes.len() > fit, in_flight })
        })
    }

    /// Marks entries applied on `instance`; answers those it still owed (an entry the seeding
    /// copy already accounted for is not owed twice).
    pub fn mark_applied(
        &self,
        instance: &InstanceName,
        seqs: &[Seq],
    ) -> Result<Vec<Seq>, WalError> {
        with_conn!(self.pool, |conn| {
            conn.before_transaction(false)?;
            conn.fenced(self.epoch(), |c| {
                let mine = wal_applied::table.filter(wal_applied::instance.eq(instance));
                let moved: Vec<Seq> = mine
                    .filter(wal_applied::seq.eq_any(seqs))
                    .filter(wal_applied::state.eq_any([ApplyState::Pending, ApplyState::Failed]))
                    .select(wal_applied::seq)
                    .load(c)?;
                diesel::update(mine.filter(wal_applied::seq.eq_any(&moved)))
                    .set((
                        wal_applied::state.eq(ApplyState::Applied),
                        wal_applied::attempts.eq(wal_applied::attempts + 1),
                        wal_applied::updated_ms.eq(now_ms()),
                    ))
                    .execute(c)?;
                Ok(moved)
            })
        })
    }

    /// The instances that have applied entry `seq`.
    pub fn applied_on(&self, seq: Seq) -> Result<Vec<InstanceName>, WalError> {
        with_conn!(self.pool, |conn| {
            Ok(wal_applied::table
                .filter(wal_applied::seq.eq(seq))
                .filter(wal_applied::state.eq(ApplyState::Applied))
                .select(wal_applied::instance)
                .load(conn)?)
        })
    }

    /// Records a failed attempt of `seq` on `instance`; after `max_attempts` the entry is
    /// failed there. Answers whether it is failed now.
    pub fn record_attempt(
        &self,
        instance: &InstanceName,
        seq: Seq,
        error: &str,
        max_attempts: i32,
    ) -> Result<bool, WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let row = wal_applied::table
                    .filter(wal_applied::instance.eq(instance))
                    .filter(wal_applied::seq.eq(seq));
                let attempts: i32 = row.select(wal_applied::attempts).first(c)?;
                let failed = attempts + 1 >= max_attempts;
                let state = if failed { ApplyState::Failed } else { ApplyState::Pending };
                diesel::update(row)
                    .set((
                        wal_applied::attempts.eq(attempts + 1),
                        wal_applied::last_error.eq(error),
                        wal_applied::state.eq(state),
                        wal_applied::updated_ms.eq(now_ms()),
                    ))
                    .execute(c)?;
                Ok(failed)
            })
        })
    }

    /// Per instance and scope key, how many replicated entries are still pending or failed there.
    pub fn owed(&self) -> Result<Vec<(InstanceName, Scope, i64)>, WalError> {
        with_conn!(self.pool, |conn| {
            Ok(wal_applied::table
                .inner_join(wal_entries::table.on(wal_entries::seq.eq(wal_applied::seq)))
                .filter(wal_applied::state.eq_any([ApplyState::Pending, ApplyState::Failed]))
                .filter(wal_entries::state.eq_any(EntryState::TO_REPLICATE))
                .group_by((wal_applied::instance, wal_entries::scope))
                .select((wal_applied::instance, wal_entries::scope, diesel::dsl::count_star()))
                .load(conn)?)
        })
    }

    /// The entries `instance` refused for good, in log order: they hold back later entries of
    /// their scope there. Few by nature: each is an incident for an admin.
    pub fn failed_on(&self, instance: &InstanceName) -> Result<Vec<EntryRow>, WalError> {
        with_conn!(self.pool, |conn| {
            Ok(wal_applied::table
                .inner_join(wal_entries::table.on(wal_entries::seq.eq(wal_applied::seq)))
                .filter(wal_applied::instance.eq(instance))
                .filter(wal_applied::state.eq(ApplyState::Failed))
                .order(wal_applied::seq)
                .select(EntryRow::as_select())
                .load(conn)?)
        })
    }

    /// Entries given up on after `after`, oldest first, at most `limit`.
    pub fn failed(&self, after: Seq, limit: i64) -> Result<Vec<FailedReplay>, WalError> {
        with_conn!(self.pool, |conn| {
            Ok(wal_applied::table
                .inner_join(wal_entries::table.on(wal_entries::seq.eq(wal_applied::seq)))
                .filter(wal_applied::state.eq(ApplyState::Failed))
                .filter(wal_applied::seq.gt(after))
                .order((wal_applied::seq, wal_applied::instance))
                .limit(limit)
                .select((
                    wal_applied::seq,
                    wal_entries::txn_id,
                    wal_entries::kind,
                    wal_entries::path,
                    wal_applied::instance,
                    wal_applied::attempts,
                    wal_applied::last_error,
                ))
                .load::<FailedReplay>(conn)?)
        })
    }

    /// Puts failed entries back in the queue with a fresh retry budget: every one, or only
    /// entry `seq`, or only those of `instance`; answers how many.
    pub fn retry_failed(
        &self,
        seq: Option<Seq>,
        instance: Option<&InstanceName>,
    ) -> Result<usize, WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let mut rows = wal_applied::table
                    .filter(wal_applied::state.eq(ApplyState::Failed))
                    .into_boxed();
                if let Some(seq) = seq {
                    rows = rows.filter(wal_applied::seq.eq(seq));
                }
                if let Some(instance) = instance {
                    rows = rows.filter(wal_applied::instance.eq(instance));
                }
                let keys: Vec<(Seq, InstanceName)> =
                    rows.select((wal_applied::seq, wal_applied::instance)).load(c)?;
                let mut count = 0;
                for (seq, instance) in keys {
                    count += diesel::update(wal_applied::table.find((seq, instance)))
                        .set((
                            wal_applied::state.eq(ApplyState::Pending),
                            wal_applied::attempts.eq(0),
                            wal_applied::updated_ms.eq(now_ms()),
                        ))
                        .execute(c)?;
                }
                Ok(count)
            })
        })
    }

    /// Marks entry `seq` resolved on `instance` without applying it (an admin's decision,
    /// recorded with the reason). Answers the entry's scope, or `None` when the entry is not
    /// owed there.
    pub fn skip(
        &self,
        seq: Seq,
        instance: &InstanceName,
        reason: &str,
    ) -> Result<Option<Scope>, WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let owed = wal_applied::table
                    .find((seq, instance))
                    .filter(wal_applied::state.eq_any([ApplyState::Pending, ApplyState::Failed]));
                let skipped = diesel::update(owed)
                    .set((
                        wal_applied::state.eq(ApplyState::Skipped),
                        wal_applied::last_error.eq(format!("skipped by an admin: {reason}")),
                        wal_applied::updated_ms.eq(now_ms()),
                    ))
                    .execute(c)?;
                if skipped == 0 {
                    return Ok(None);
                }
                let scope = wal_entries::table.find(seq).select(wal_entries::scope).first(c)?;
                Ok(Some(scope))
            })
        })
    }
    /// Every instance being seeded: its name, source and floor.
    pub fn seedings(&self) -> Result<Vec<(InstanceName, InstanceName, Seq)>, WalError> {
        with_conn!(self.pool, |conn| {
            Ok(seeding::table
                .select((seeding::instance, seeding::source, seeding::floor))
                .load(conn)?)
        })
    }

    /// Starts or resumes the seeding of `instance` from `source`. Its floor is the lowest of
    /// the log's head, the entry before the first one `source` has not applied, and the floor
    /// of a seeding already under way (another source may lack what the first one held).
    /// Answers the floor: the entries up to it are those the copy holds.
    pub fn begin_seeding(
        &self,
        instance: &InstanceName,
        source: &InstanceName,
    ) -> Result<Seq, WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let head: Option<i64> =
                    wal_entries::table.select(diesel::dsl::max(wal_entries::seq)).first(c)?;
                let first_owed: Option<i64> = wal_applied::table
                    .filter(wal_applied::instance.eq(source))
                    .filter(wal_applied::state.eq_any([ApplyState::Pending, ApplyState::Failed]))
                    .select(diesel::dsl::min(wal_applied::seq))
                    .first(c)?;
                let before: Option<(i64, i64)> = seeding::table
                    .find(instance)
                    .select((seeding::floor, seeding::started_ms))
                    .first(c)
                    .optional()?;
                let floor = [head, first_owed.map(|s| s - 1), before.map(|b| b.0)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(0)
                    .max(0);
                let started_ms = before.map_or_else(now_ms, |b| b.1);
                diesel::delete(seeding::table.find(instance)).execute(c)?;
                diesel::insert_into(seeding::table)
                    .values((
                        seeding::instance.eq(instance),
                        seeding::source.eq(source),
                        seeding::floor.eq(floor),
                        seeding::started_ms.eq(started_ms),
                    ))
                    .execute(c)?;
                Ok(Seq(floor))
            })
        })
    }

    /// Ends the seeding of `instance`: every entry up to `floor` that it still owes is marked
    /// applied (the copy holds it) and its seeding row goes, in one transaction. Answers what
    /// it owed of those entries per scope, to settle its progress with.
    pub fn finish_seeding(
        &self,
        instance: &InstanceName,
        floor: Seq,
    ) -> Result<Vec<(Scope, i64)>, WalError> {
        with_conn!(self.pool, |conn| {
            conn.fenced(self.epoch(), |c| {
                let unapplied = [ApplyState::Pending, ApplyState::Failed];
                let owed: Vec<(Scope, i64)> = wal_applied::table
                    .inner_join(wal_entries::table.on(wal_entries::seq.eq(wal_applied::seq)))
                    .filter(wal_applied::instance.eq(instance))
                    .filter(wal_applied::state.eq_any(unapplied))
                    .filter(wal_applied::seq.le(floor))
                    .filter(wal_entries::state.eq_any(EntryState::TO_REPLICATE))
                    .group_by(wal_entries::scope)
                    .select((wal_entries::scope, diesel::dsl::count_star()))
                    .load(c)?;
                diesel::update(
                    wal_applied::table
                        .filter(wal_applied::instance.eq(instance))
                        .filter(wal_applied::state.eq_any(unapplied))
                        .filter(wal_applied::seq.le(floor)),
                )
                .set((
                    wal_applied::state.eq(ApplyState::Applied),
                    wal_applied::last_error.eq("held by the seeding copy"),
                    wal_applied::updated_ms.eq(now_ms()),
                ))
                .execute(c)?;
                diesel::delete(seeding::table.find(instance)).execute(c)?;
                Ok(owed)
            })
        })
    }
}

fn transaction_view(
    entry: EntryRow,
    applied: &[AppliedRow],
    instances: &[InstanceName],
) -> TransactionView {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.to_rfc3339())
    };
    let instances = instances
        .iter()
        .map(|name| match applied.iter().find(|a| &a.instance == name) {
            Some(a) => InstanceApplication {
                instance: name.clone(),
                state: a.state.as_str().to_string(),
                attempts: a.attempts,
                last_error: a.last_error.clone(),
            },
            None => InstanceApplication {
                instance: name.clone(),
                state: "not_applicable".to_string(),
                attempts: 0,
                last_error: None,
            },
        })
        .collect();
    TransactionView {
        transaction_id: entry.txn_id,
        seq: entry.seq,
        state: entry.state,
        kind: entry.kind,
        method: entry.method,
        path: entry.path,
        scope: entry.scope.key(),
        status: entry.status,
        error: entry.error,
        created_at: time(entry.created_ms),
        updated_at: time(entry.updated_ms),
        instances,
    }
}
