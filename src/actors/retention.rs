//! RetentionActor: once a minute, forgets idempotency keys older than IDEMPOTENCY_TTL and
//! deletes log entries older than WAL_RETENTION that every instance has applied (or that were
//! rejected), a bounded number per round.
//!
//! It runs only on the leader. It never deletes an entry some instance still lacks, and never runs on an executor thread
//! (the purge is a blocking call on actix's blocking pool).

use std::time::Duration;

use actix::prelude::*;
use log::{info, warn};

use std::sync::Arc;

use crate::leadership::Leadership;
use crate::wal::models::now_ms;
use crate::wal::store::WalStore;

/// Time between purges.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Most entries deleted in one round, so one purge never holds the store for long.
pub const PURGE_LIMIT: i64 = 10_000;

/// Deletes what the log no longer needs.
pub struct RetentionActor {
    store: WalStore,
    retention: Duration,
    idempotency_ttl: Duration,
    leadership: Arc<Leadership>,
    running: bool,
}

impl RetentionActor {
    /// A purger of `store` keeping entries for `retention` and keys for `idempotency_ttl`,
    /// while this proxy leads.
    pub fn new(
        store: WalStore,
        retention: Duration,
        idempotency_ttl: Duration,
        leadership: Arc<Leadership>,
    ) -> Self {
        Self { store, retention, idempotency_ttl, leadership, running: false }
    }

    fn purge(&mut self, ctx: &mut Context<Self>) {
        // The leader's duty; the store would refuse anyone else anyway.
        if self.running || !self.leadership.may_execute() {
            return;
        }
        self.running = true;
        let store = self.store.clone();
        let now = now_ms();
        let cutoff = now - self.retention.as_millis() as i64;
        let key_cutoff = now - self.idempotency_ttl.as_millis() as i64;
        let purge = actix_web::rt::task::spawn_blocking(move || {
            store.purge(cutoff, key_cutoff, PURGE_LIMIT)
        });
        ctx.spawn(purge.into_actor(self).map(|result, act, _| {
            act.running = false;
            match result {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((entries, keys))) => {
                    info!("retention: deleted {entries} applied log entries, forgot {keys} idempotency keys")
                }
                Ok(Err(e)) => warn!("retention: purge skipped: {e}"),
                Err(e) => warn!("retention: purge task failed: {e}"),
            }
        }));
    }
}

impl Actor for RetentionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PURGE_INTERVAL, |act, ctx| act.purge(ctx));
    }
}

impl Supervised for RetentionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.running = false;
    }
}
