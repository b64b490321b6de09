//! WalWriterActor: the only writer of the log. `Append` answers once the entry is durable;
//! appends and outcome records that arrive while a commit is on disk are committed together in
//! the next transaction, with one fsync (group commit, self-clocking: the slower the disk, the
//! larger the batch).
//!
//! It runs alone on its own arbiter thread and blocks that thread in each commit, which is what
//! lets messages pile up into the next batch. It never executes a write against an instance,
//! and never answers an append before its commit returned.

use std::time::Duration;

use actix::prelude::*;
use log::{error, info, warn};
use tokio::sync::oneshot;

use super::guarded;
use crate::wal::models::{EntryState, Resolution, Seq, WriteRecord, now_ms};
use crate::wal::store::{Appended, WalError, WalStore};

/// Most appends in one transaction; bounds the size of one commit.
pub const MAX_BATCH: usize = 512;
/// Pause before retrying outcome records after a failed commit, so a down store is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Log this write durably; answers once it is on disk (or why it could not be).
#[derive(Message)]
#[rtype(result = "Result<Appended, WalError>")]
pub struct Append(pub WriteRecord);

/// Record the outcome of a logged write; answers once it is committed (see
/// [`WalStore::commit`] for how durable that is).
#[derive(Message)]
#[rtype(result = "Result<(), WalError>")]
pub struct Resolve(pub Resolution);

/// Commit everything accumulated now and answer when done (at shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), WalError>")]
pub struct Drain;

/// Commit what has accumulated.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

type Waiter<T> = oneshot::Sender<Result<T, WalError>>;

/// Appends and records outcomes, in group commits.
pub struct WalWriterActor {
    store: WalStore,
    idempotency_ttl: Duration,
    /// The lease epoch `next_seq` was worked out under: a new term starts from the log's head.
    term: i64,
    next_seq: i64,
    appends: Vec<(WriteRecord, Waiter<Appended>)>,
    /// Outcomes to record; the waiter is gone once answered (a failed commit is retried
    /// without keeping the client waiting).
    resolutions: Vec<(Resolution, Option<Waiter<()>>)>,
    flush_scheduled: bool,
    /// Whether the last commit failed, so the outage is logged once, and its end.
    store_down: bool,
}

impl WalWriterActor {
    /// A writer that numbers new entries after the log's head as it is when this proxy leads.
    pub fn new(store: WalStore, idempotency_ttl: Duration) -> Self {
        Self {
            store,
            idempotency_ttl,
            term: 0,
            next_seq: 0,
            appends: Vec::new(),
            resolutions: Vec::new(),
            flush_scheduled: false,
            store_down: false,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // Runs after the mailbox is drained, so everything queued so far joins this batch.
            ctx.notify(Flush);
        }
    }

    fn flush(&mut self) -> Result<(), WalError> {
        let take = self.appends.len().min(MAX_BATCH);
        let batch: Vec<(WriteRecord, Waiter<Appended>)> = self.appends.drain(..take).collect();
        let epoch = self.store.epoch();
        if epoch != self.term && epoch > 0 {
            // Another leader may have appended since this proxy last did: number after the head.
            match self.store.head_seq() {
                Ok(head) => (self.next_seq, self.term) = (head.0 + 1, epoch),
                Err(e) => {
                    for (_, waiter) in batch {
                        let _ = waiter.send(Err(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        // Outcomes stay here until their commit succeeds: a failed or panicking commit loses
        // none of them.
        let resolutions: Vec<Resolution> =
            self.resolutions.iter().map(|(r, _)| r.clone()).collect();
        let first = Seq(self.next_seq);
        let records: Vec<&WriteRecord> = batch.iter().map(|(r, _)| r).collect();
        let key_cutoff = now_ms() - self.idempotency_ttl.as_millis() as i64;
        match self.store.commit(first, &records, &resolutions, key_cutoff) {
            Ok(outcomes) => {
                // Only logged entries take a number: a retry under a used key leaves no gap.
                let logged = outcomes.iter().filter(|o| matches!(o, Appended::Logged(_))).count();
                self.next_seq += logged as i64;
                if std::mem::take(&mut self.store_down) {
                    info!("write-ahead log store ({}) is reachable again", self.store.backend());
                }
                for ((_, waiter), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiter.send(Ok(outcome));
                }
                for (_, waiter) in self.resolutions.drain(..resolutions.len()) {
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Ok(())
            }
            Err(e @ WalError::Fenced(_)) => {
                // Nothing was written, and nothing can be under this epoch: the next leader's
                // recovery queues this proxy's unresolved entries for replay everywhere.
                warn!(
                    "write-ahead log: {e}; {} appends refused, {} outcomes left to the next leader's recovery",
                    batch.len(),
                    self.resolutions.len()
                );
                for (_, waiter) in self.resolutions.drain(..) {
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
                for (_, waiter) in batch {
                    let _ = waiter.send(Err(e.clone()));
                }
                Err(e)
            }
            Err(e) => {
                // A commit error can be ambiguous (the data may be on disk): a number handed to
                // the store is never reused.
                self.next_seq += batch.len() as i64;
                if !std::mem::replace(&mut self.store_down, true) {
                    error!(
                        "write-ahead log store ({}) failed: {e}; writes are refused until it is back",
                        self.store.backend()
                    );
                }
                // Outcomes are kept for the next commit (their clients are answered now);
                // appends that may have reached the disk are marked failed there, so recovery
                // never replays a write the client was told was refused.
                for (_, waiter) in &mut self.resolutions {
                    if let Some(waiter) = waiter.take() {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
                let failed = (0..batch.len() as i64).map(|i| Resolution {
                    seq: Seq(first.0 + i),
                    state: EntryState::Failed,
                    status: None,
                    response: None,
                    error: Some(format!("not executed: the write-ahead log commit failed: {e}")),
                    applied_on: None,
                });
                self.resolutions.extend(failed.map(|r| (r, None)));
                for (_, waiter) in batch {
                    let _ = waiter.send(Err(e.clone()));
                }
                Err(e)
            }
        }
    }
}

impl Actor for WalWriterActor {
    type Context = Context<Self>;
}

impl Supervised for WalWriterActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.flush_scheduled = false;
    }
}

/// The answer of the commit a message joined; a writer that restarted meanwhile dropped it.
fn after_commit<T: 'static>(
    answer: oneshot::Receiver<Result<T, WalError>>,
) -> ResponseFuture<Result<T, WalError>> {
    Box::pin(async move {
        answer
            .await
            .unwrap_or_else(|_| Err(WalError::Unavailable("the WAL writer restarted".into())))
    })
}

impl Handler<Append> for WalWriterActor {
    type Result = ResponseFuture<Result<Appended, WalError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) -> Self::Result {
        let (waiter, answer) = oneshot::channel();
        self.appends.push((msg.0, waiter));
        self.schedule(ctx);
        after_commit(answer)
    }
}

impl Handler<Resolve> for WalWriterActor {
    type Result = ResponseFuture<Result<(), WalError>>;

    fn handle(&mut self, msg: Resolve, ctx: &mut Context<Self>) -> Self::Result {
        let (waiter, answer) = oneshot::channel();
        self.resolutions.push((msg.0, Some(waiter)));
        self.schedule(ctx);
        after_commit(answer)
    }
}

impl Handler<Flush> for WalWriterActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let committed = guarded("wal writer", ctx, || self.flush());
        if !self.appends.is_empty() {
            self.schedule(ctx);
        } else if !self.resolutions.is_empty() {
            if matches!(committed, Some(Ok(()))) {
                self.schedule(ctx);
            } else {
                self.flush_scheduled = true;
                ctx.run_later(RETRY_PAUSE, |act, ctx| {
                    act.flush_scheduled = false;
                    act.schedule(ctx);
                });
            }
        }
    }
}

impl Handler<Drain> for WalWriterActor {
    type Result = Result<(), WalError>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Result<(), WalError> {
        while !self.appends.is_empty() || !self.resolutions.is_empty() {
            self.flush()?;
        }
        Ok(())
    }
}
