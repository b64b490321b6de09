//! The one reader of the write-ahead log for the service and admin endpoints: status, one
//! transaction, the failed replays. Each read runs on actix's blocking pool, never on a worker
//! thread.
//!
//! Reads only: it never changes the log (the WAL writer, replay and retention actors do).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::web;

use super::error::ApiError;
use crate::actors::replay::ReplayCounters;
use crate::wal::models::Seq;
use crate::wal::store::{Backlog, FailedReplay, TransactionView, WalError, WalStatus, WalStore};

/// Reads of the log for the endpoints.
pub struct LogReader {
    store: WalStore,
    counters: Arc<ReplayCounters>,
}

impl LogReader {
    /// A reader of `store`; `counters` are replay's, for status.
    pub fn new(store: WalStore, counters: Arc<ReplayCounters>) -> Self {
        Self { store, counters }
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
