//! The one reader of the write-ahead log for the service and admin endpoints: status, one
//! transaction, the failed replays. Each read runs on actix's blocking pool, never on a worker
//! thread.
//!
//! Reads only: it never changes the log (the WAL writer, replay and retention actors do).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::web;

use super::error::ApiError;
use crate::actors::replay::ReplayCounters;
use crate::wal::models::{Seq, now_ms};
use crate::wal::store::{
    Backlog, FailedReplay, Member, TransactionView, WalError, WalStatus, WalStore,
};

/// Reads of the log for the endpoints.
pub struct LogReader {
    store: WalStore,
    counters: Arc<ReplayCounters>,
    /// LEASE_TTL: a proxy not heard from for three of them is left out of the roll call.
    lease_ttl: Duration,
}

impl LogReader {
    /// A reader of `store`; `counters` are replay's, for status.
    pub fn new(store: WalStore, counters: Arc<ReplayCounters>, lease_ttl: Duration) -> Self {
        Self { store, counters, lease_ttl }
    }

    /// The proxies sharing the log heard from lately (within three LEASE_TTLs), by id.
    pub async fn members(&self) -> Result<Vec<Member>, ApiError> {
        let since = now_ms() - 3 * self.lease_ttl.as_millis() as i64;
        self.read(move |store| store.members(since)).await
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&WalStore) -> Result<T, WalError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        Ok(web::block(move || read(&store)).await??)
    }

    /// The `write_ahead_log` block of status and every instance's backlog.
    pub async fn status(&self) -> Result<(WalStatus, Vec<Backlog>), ApiError> {
        let replayed = self.counters.total.load(Ordering::Relaxed);
        let active = self.counters.active.load(Ordering::Relaxed) > 0;
        self.read(move |store| store.status(replayed, active)).await
    }

    /// One transaction by its id.
    pub async fn transaction(&self, txn_id: String) -> Result<Option<TransactionView>, ApiError> {
        self.read(move |store| store.transaction(&txn_id)).await
    }

    /// At most `limit` failed replays after `after`, oldest first.
    pub async fn failed(&self, after: Seq, limit: i64) -> Result<Vec<FailedReplay>, ApiError> {
        self.read(move |store| store.failed(after, limit)).await
    }

    /// `postgresql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }
}
