//! Replication progress: for every instance and scope, how many logged writes it still owes
//! (committed or queued, not yet applied there). Routers read it to send a read only where every
//! write of its scopes has been applied (read-your-writes) and to pick a caught-up write target;
//! the write path and the replay actor update it.
//!
//! Shared memory, not messages, on purpose: a client's next request must see its own write, so
//! the update has to be visible before the answer leaves, on every worker thread at once. It
//! never touches the network or the database; every call is a short critical section.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::instance::InstanceId;
use crate::policy::Scope;

/// What an instance must have applied before a request is sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every logged write of these scopes.
    Scopes(Vec<Scope>),
    /// Every logged write: a reset or tenant write may not overtake anything the instance still
    /// owes (a reset run before an owed add would strand that add for good).
    Everything,
}

/// What every instance owes, per scope.
pub struct Progress {
    owed: Mutex<Vec<HashMap<Scope, i64>>>,
    settled: Notify,
}

impl Progress {
    /// Nothing owed by any of `instances` instances.
    pub fn new(instances: usize) -> Self {
        Self { owed: Mutex::new(vec![HashMap::new(); instances]), settled: Notify::new() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<HashMap<Scope, i64>>) -> R) -> R {
        let mut owed = self.owed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut owed)
    }

    /// Forgets what every instance owes, before it is loaded again from the log (a new leader).
    pub fn clear(&self) {
        self.with(|owed| owed.iter_mut().for_each(HashMap::clear));
        self.settled.notify_waiters();
    }

    /// `n` more writes of `scope` owed by `instance` (startup load, or a new entry).
    pub fn owe(&self, instance: InstanceId, scope: &Scope, n: i64) {
        self.with(|owed| *owed[instance.0].entry(scope.clone()).or_insert(0) += n);
    }

    /// A committed write of `scope`, applied on `applied_on` (if any): every other instance owes it.
    pub fn owe_all_but(&self, scope: &Scope, applied_on: Option<InstanceId>) {
        self.with(|owed| {
            for (i, map) in owed.iter_mut().enumerate() {
                if Some(InstanceId(i)) != applied_on {
                    *map.entry(scope.clone()).or_insert(0) += 1;
                }
            }
        });
    }

    /// `n` writes of `scope` applied on `instance` by replay. A settle may arrive before its owe
    /// (replay can be faster than the write path's bookkeeping): the count goes below zero and
    /// the owe brings it back.
    pub fn settle(&self, instance: InstanceId, scope: &Scope, n: i64) {
        self.with(|owed| {
            let map = &mut owed[instance.0];
            let left = map.entry(scope.clone()).or_insert(0);
            *left -= n;
            if *left == 0 {
                map.remove(scope);
            }
        });
        self.settled.notify_waiters();
    }

    /// Whether `instance` has applied every logged write of these scopes.
    pub fn is_current(&self, instance: InstanceId, scopes: &[Scope]) -> bool {
        self.with(|owed| scopes.iter().all(|s| owed[instance.0].get(s).is_none_or(|n| *n <= 0)))
    }

    /// Every instance's backlog, in order.
    pub fn backlogs(&self) -> Vec<i64> {
        self.with(|owed| owed.iter().map(|m| m.values().filter(|n| **n > 0).sum()).collect())
    }

    /// Whether `instance` has applied what `needed` names.
    pub fn has_applied(&self, instance: InstanceId, needed: &Applied) -> bool {
        match needed {
            Applied::Scopes(scopes) => self.is_current(instance, scopes),
            Applied::Everything => self.with(|owed| owed[instance.0].values().all(|n| *n <= 0)),
        }
    }

    /// Waits until `instance` has applied what `needed` names, at most `timeout`; answers
    /// whether it has.
    pub async fn wait_current(
        &self,
        instance: InstanceId,
        needed: &Applied,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let settled = self.settled.notified();
            if self.has_applied(instance, needed) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A settle may race the check above; the short cap re-checks anyway.
            let _ =
                actix_web::rt::time::timeout(left.min(Duration::from_millis(50)), settled).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_writes_block_their_scopes_only() {
        let p = Progress::new(2);
        let c = Scope::Collection("c1".into());
        let d = Scope::Database("t/d".into());
        p.owe_all_but(&c, Some(InstanceId(0)));
        assert!(p.is_current(InstanceId(0), &[c.clone(), d.clone()]));
        assert!(!p.is_current(InstanceId(1), &[c.clone(), d.clone()]));
        assert!(p.is_current(InstanceId(1), &[Scope::Collection("c2".into()), d.clone()]));
        assert_eq!(p.backlogs(), vec![0, 1]);
        p.settle(InstanceId(1), &c, 1);
        assert!(p.is_current(InstanceId(1), &[c]));
        assert_eq!(p.backlogs()[1], 0);
    }

    #[test]
    fn a_settle_before_its_owe_balances() {
        let p = Progress::new(2);
        let c = Scope::Collection("c1".into());
        p.settle(InstanceId(1), &c, 1);
        p.owe(InstanceId(1), &c, 1);
        assert!(p.is_current(InstanceId(1), &[c]));
        assert_eq!(p.backlogs()[1], 0);
    }

    #[actix::test]
    async fn waiting_ends_when_replay_settles() {
        let p = std::sync::Arc::new(Progress::new(1));
        let c = Scope::Collection("c".into());
        p.owe(InstanceId(0), &c, 1);
        let needed = Applied::Scopes(vec![c.clone()]);
        assert!(!p.wait_current(InstanceId(0), &needed, Duration::from_millis(60)).await);
        assert!(!p.has_applied(InstanceId(0), &Applied::Everything));
        let settler = p.clone();
        let scope = c.clone();
        actix::spawn(async move {
            actix::clock::sleep(Duration::from_millis(30)).await;
            settler.settle(InstanceId(0), &scope, 1);
        });
        assert!(p.wait_current(InstanceId(0), &needed, Duration::from_secs(5)).await);
        assert!(p.has_applied(InstanceId(0), &Applied::Everything));
    }
}
