//! Write ordering: two writes whose claims conflict never run at once, so for them the order in
//! the log is the order on every instance. Claims nest ([`crate::policy::Claim`]): writes to
//! one collection that name disjoint record ids run in parallel, a collection create or delete
//! waits for every write of its database, a reset for everything. Waiters are served first
//! come, first served: a write never overtakes an earlier one it conflicts with, and a wide
//! claim is never starved.
//!
//! Holds only claims: it never logs, routes or executes anything.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::policy::Claim;

struct Waiter {
    ticket: u64,
    claim: Claim,
    wake: oneshot::Sender<()>,
}

/// The claims running and waiting.
#[derive(Default)]
struct Queue {
    next: u64,
    running: Vec<(u64, Claim)>,
    waiting: VecDeque<Waiter>,
}

impl Queue {
    /// Whether `claim` may run now: no running claim and none of the first `ahead` waiters
    /// conflicts with it.
    fn admits(&self, claim: &Claim, ahead: usize) -> bool {
        self.running.iter().all(|(_, c)| !c.conflicts(claim))
            && self.waiting.iter().take(ahead).all(|w| !w.claim.conflicts(claim))
    }

    /// Starts every waiter that may run now, in order.
    fn grant(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.admits(&self.waiting[i].claim, i) {
                let waiter = self.waiting.remove(i).expect("index in range");
                // A waiter that is gone by now would never release: skip it.
                if waiter.wake.send(()).is_ok() {
                    self.running.push((waiter.ticket, waiter.claim));
                }
            } else {
                i += 1;
            }
        }
    }
}

/// The claims of every write in flight.
#[derive(Default)]
pub struct WriteOrder {
    queue: Mutex<Queue>,
}

/// Held while one write is logged, executed and recorded; dropping it lets conflicting writes
/// go on, also when the write's future is dropped while it waits.
pub struct Turn<'a> {
    order: &'a WriteOrder,
    ticket: u64,
}

impl WriteOrder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `claim` conflicts with no running or earlier write.
    pub async fn turn(&self, claim: Claim) -> Turn<'_> {
        let (ticket, wait) = {
            let mut queue = self.lock();
            queue.next += 1;
            let ticket = queue.next;
            if queue.admits(&claim, queue.waiting.len()) {
                queue.running.push((ticket, claim));
                (ticket, None)
            } else {
                let (wake, wait) = oneshot::channel();
                queue.waiting.push_back(Waiter { ticket, claim, wake });
                (ticket, Some(wait))
            }
        };
        // Built before waiting: if this future is dropped while it waits, the turn is released.
        let turn = Turn { order: self, ticket };
        if let Some(wait) = wait {
            // The sender lives in the queue until it wakes us: an error cannot happen.
            let _ = wait.await;
        }
        turn
    }

    fn release(&self, ticket: u64) {
        let mut queue = self.lock();
        queue.running.retain(|(t, _)| *t != ticket);
        queue.waiting.retain(|w| w.ticket != ticket);
        queue.grant();
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let queue = self.lock();
        (queue.running.len(), queue.waiting.len())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.order.release(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::policy::Records;

    fn records(collection: &str, ids: &[&str]) -> Claim {
        Claim::Collection {
            database: "t/d".into(),
            collection: collection.into(),
            records: Records::Ids(ids.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn spawn_turn(
        order: &Arc<WriteOrder>,
        claim: Claim,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (done, hold) = oneshot::channel::<()>();
        let order = order.clone();
        let task = actix::spawn(async move {
            let _turn = order.turn(claim).await;
            let _ = hold.await;
        });
        (task, done)
    }

    async fn settle() {
        actix::clock::sleep(Duration::from_millis(20)).await;
    }

    #[actix::test]
    async fn disjoint_ids_run_together_and_conflicts_wait_in_order() {
        let order = Arc::new(WriteOrder::default());
        let (a, release_a) = spawn_turn(&order, records("c", &["1", "2"]));
        let (b, release_b) = spawn_turn(&order, records("c", &["3"]));
        settle().await;
        // 1 and 3 are running; a write of 2 waits for the first; a database claim waits for
        // all, and a later write of 4 does not overtake it.
        let (c, release_c) = spawn_turn(&order, records("c", &["2"]));
        settle().await;
        let (whole, release_whole) = spawn_turn(&order, Claim::Database("t/d".into()));
        settle().await;
        let (d, release_d) = spawn_turn(&order, records("c", &["4"]));
        settle().await;
        assert_eq!(order.held(), (2, 3), "only the two disjoint writes run");
        release_a.send(()).unwrap();
        a.await.unwrap();
        settle().await;
        assert_eq!(order.held(), (2, 2), "the write of 2 runs once the first is done");
        release_b.send(()).unwrap();
        release_c.send(()).unwrap();
        b.await.unwrap();
        c.await.unwrap();
        settle().await;
        assert_eq!(order.held(), (1, 1), "the database claim runs alone");
        assert!(!d.is_finished());
        release_whole.send(()).unwrap();
        whole.await.unwrap();
        release_d.send(()).unwrap();
        d.await.unwrap();
        assert_eq!(order.held(), (0, 0), "nothing left behind");
    }

    #[actix::test]
    async fn a_reset_waits_for_every_write_and_holds_back_later_ones() {
        let order = Arc::new(WriteOrder::default());
        let (a, release_a) = spawn_turn(&order, records("c", &["1"]));
        let (b, release_b) = spawn_turn(&order, Claim::Database("t/other".into()));
        settle().await;
        let (reset, release_reset) = spawn_turn(&order, Claim::Global);
        settle().await;
        let (later, release_later) = spawn_turn(&order, records("elsewhere", &["9"]));
        settle().await;
        assert_eq!(order.held(), (2, 2));
        release_a.send(()).unwrap();
        release_b.send(()).unwrap();
        a.await.unwrap();
        b.await.unwrap();
        settle().await;
        assert_eq!(order.held(), (1, 1), "the reset runs alone");
        release_reset.send(()).unwrap();
        reset.await.unwrap();
        release_later.send(()).unwrap();
        later.await.unwrap();
        assert_eq!(order.held(), (0, 0));
    }

    #[actix::test]
    async fn a_waiter_dropped_before_its_turn_blocks_nobody() {
        let order = Arc::new(WriteOrder::default());
        let (a, release_a) = spawn_turn(&order, Claim::Global);
        settle().await;
        let (b, _keep_b) = spawn_turn(&order, Claim::Global);
        settle().await;
        b.abort();
        let _ = b.await;
        release_a.send(()).unwrap();
        a.await.unwrap();
        let (c, release_c) = spawn_turn(&order, Claim::Global);
        release_c.send(()).unwrap();
        c.await.unwrap();
        assert_eq!(order.held(), (0, 0));
    }
}
