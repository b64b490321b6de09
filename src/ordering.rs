//! Write ordering: two writes that do not commute never run at once, so for them the order in
//! the log is the order on every instance. Writes to one collection that name disjoint record
//! ids commute (Chroma's add, upsert, update and delete by id touch only those records) and run
//! in parallel; every other write claims its whole scope. Waiters are served first come, first
//! served: a write never overtakes an earlier one it conflicts with, and a whole-scope claim is
//! never starved.
//!
//! Holds only claims: it never logs, routes or executes anything.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::oneshot;

use crate::chroma::routes::{Operation, Route};
use crate::progress::Scope;

/// What of its scope a write changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Everything in the scope.
    Whole,
    /// Only the records with these ids.
    Records(HashSet<String>),
}

impl Claim {
    /// The claim of a write: its record ids for add, upsert, update and delete by id, the whole
    /// scope for anything else (a delete with a filter, an unreadable body, other operations).
    pub fn of(route: &Route, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct ById {
            ids: Option<Vec<String>>,
            #[serde(rename = "where")]
            filter: Option<IgnoredAny>,
            where_document: Option<IgnoredAny>,
        }
        let by_id = matches!(
            route.op,
            Operation::Add | Operation::Upsert | Operation::Update | Operation::DeleteRecords
        );
        if !by_id {
            return Self::Whole;
        }
        match serde_json::from_slice::<ById>(body) {
            Ok(ById { ids: Some(ids), filter: None, where_document: None }) if !ids.is_empty() => {
                Self::Records(ids.into_iter().collect())
            }
            _ => Self::Whole,
        }
    }

    fn conflicts(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Records(a), Self::Records(b)) => !a.is_disjoint(b),
            _ => true,
        }
    }
}

struct Waiter {
    ticket: u64,
    claim: Claim,
    wake: oneshot::Sender<()>,
}

/// The claims running and waiting in one scope.
#[derive(Default)]
struct Queue {
    running: Vec<(u64, Claim)>,
    waiting: VecDeque<Waiter>,
}

impl Queue {
    /// Whether `claim` may run now: no running claim and no earlier waiter conflicts with it.
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

/// The claims of every scope with a write in flight.
#[derive(Default)]
pub struct WriteOrder {
    scopes: Mutex<(u64, HashMap<Scope, Queue>)>,
}

/// Held while one write is logged, executed and recorded; dropping it lets conflicting writes
/// go on, also when the write's future is dropped while it waits.
pub struct Turn<'a> {
    order: &'a WriteOrder,
    scope: Scope,
    ticket: u64,
}

impl WriteOrder {
    /// Waits until `claim` conflicts with no running or earlier write in `scope`.
    pub async fn turn(&self, scope: &Scope, claim: Claim) -> Turn<'_> {
        let (ticket, wait) = {
            let mut guard = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            let (next, scopes) = &mut *guard;
            *next += 1;
            let ticket = *next;
            let queue = scopes.entry(scope.clone()).or_default();
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
        let turn = Turn { order: self, scope: scope.clone(), ticket };
        if let Some(wait) = wait {
            // The sender lives in the queue until it wakes us: an error cannot happen.
            let _ = wait.await;
        }
        turn
    }

    fn release(&self, scope: &Scope, ticket: u64) {
        let mut guard = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = guard.1.get_mut(scope) else { return };
        queue.running.retain(|(t, _)| *t != ticket);
        queue.waiting.retain(|w| w.ticket != ticket);
        queue.grant();
        if queue.running.is_empty() && queue.waiting.is_empty() {
            guard.1.remove(scope);
        }
    }

    #[cfg(test)]
    fn scopes(&self) -> usize {
        self.scopes.lock().unwrap().1.len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.order.release(&self.scope, self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::http::Method;

    use super::*;
    use crate::chroma::routes::classify;

    fn records(ids: &[&str]) -> Claim {
        Claim::Records(ids.iter().map(|s| s.to_string()).collect())
    }

    fn spawn_turn(
        order: &Arc<WriteOrder>,
        claim: Claim,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (done, hold) = oneshot::channel::<()>();
        let order = order.clone();
        let task = actix::spawn(async move {
            let _turn = order.turn(&Scope::Collection("c".into()), claim).await;
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
        let (a, release_a) = spawn_turn(&order, records(&["1", "2"]));
        let (b, release_b) = spawn_turn(&order, records(&["3"]));
        settle().await;
        // 1 and 3 are running; a write of 2 waits for the first; a whole-scope write waits for
        // all, and a later write of 4 does not overtake it.
        let (c, release_c) = spawn_turn(&order, records(&["2"]));
        settle().await;
        let (whole, release_whole) = spawn_turn(&order, Claim::Whole);
        settle().await;
        let (d, release_d) = spawn_turn(&order, records(&["4"]));
        settle().await;
        let running =
            || order.scopes.lock().unwrap().1.values().map(|q| q.running.len()).sum::<usize>();
        assert_eq!(running(), 2, "only the two disjoint writes run");
        release_a.send(()).unwrap();
        a.await.unwrap();
        settle().await;
        assert_eq!(running(), 2, "the write of 2 runs once the first is done");
        release_b.send(()).unwrap();
        release_c.send(()).unwrap();
        b.await.unwrap();
        c.await.unwrap();
        settle().await;
        assert_eq!(running(), 1, "the whole-scope write runs alone");
        assert!(!d.is_finished());
        release_whole.send(()).unwrap();
        whole.await.unwrap();
        release_d.send(()).unwrap();
        d.await.unwrap();
        assert_eq!(order.scopes(), 0, "nothing left behind");
    }

    #[actix::test]
    async fn a_waiter_dropped_before_its_turn_blocks_nobody() {
        let order = Arc::new(WriteOrder::default());
        let (a, release_a) = spawn_turn(&order, Claim::Whole);
        settle().await;
        let (b, _keep_b) = spawn_turn(&order, Claim::Whole);
        settle().await;
        b.abort();
        let _ = b.await;
        release_a.send(()).unwrap();
        a.await.unwrap();
        let (c, release_c) = spawn_turn(&order, Claim::Whole);
        release_c.send(()).unwrap();
        c.await.unwrap();
        assert_eq!(order.scopes(), 0);
    }

    #[test]
    fn claims_follow_the_operation_and_the_body() {
        let path = "/api/v2/tenants/t/databases/d/collections/11111111-2222-3333-4444-555555555555";
        let route = |op: &str| classify(&Method::POST, &format!("{path}/{op}")).unwrap();
        assert_eq!(
            Claim::of(&route("add"), br#"{"ids":["a","b"],"embeddings":[[1],[2]]}"#),
            records(&["a", "b"])
        );
        assert_eq!(Claim::of(&route("delete"), br#"{"ids":["a"]}"#), records(&["a"]));
        assert_eq!(Claim::of(&route("delete"), br#"{"ids":["a"],"where":{"k":1}}"#), Claim::Whole);
        assert_eq!(Claim::of(&route("delete"), br#"{"where":{"k":1}}"#), Claim::Whole);
        assert_eq!(Claim::of(&route("upsert"), b"not json"), Claim::Whole);
        assert_eq!(Claim::of(&route("update"), br#"{"ids":[]}"#), Claim::Whole);
        let create = classify(&Method::POST, "/api/v2/tenants/t/databases/d/collections").unwrap();
        assert_eq!(Claim::of(&create, br#"{"ids":["a"]}"#), Claim::Whole);
    }
}
