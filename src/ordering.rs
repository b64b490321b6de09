//! Per-scope write serialization: writes to one collection (or one database's collection set)
//! pass through the proxy one at a time, so their order in the log is their order on every
//! instance; writes to different scopes run in parallel.
//!
//! Holds only locks: it never logs, routes or executes anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::progress::Scope;

/// One async lock per scope with a writer in flight.
#[derive(Default)]
pub struct ScopeLocks {
    locks: Mutex<HashMap<Scope, Arc<AsyncMutex<()>>>>,
}

/// Held while one write of its scope is logged, executed and recorded.
pub struct ScopeGuard<'a> {
    owner: &'a ScopeLocks,
    scope: Scope,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl ScopeLocks {
    /// Waits for the scope's turn.
    pub async fn lock(&self, scope: &Scope) -> ScopeGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(scope.clone()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        ScopeGuard { owner: self, scope: scope.clone(), lock, guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this guard hold it: nobody waits, so the entry goes.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[actix::test]
    async fn one_writer_per_scope_and_no_leftovers() {
        let locks = Arc::new(ScopeLocks::default());
        let a = Scope::Collection("a".into());
        let first = locks.lock(&a).await;
        let _other_scope = locks.lock(&Scope::Collection("b".into())).await;
        let waiting = {
            let locks = locks.clone();
            let a = a.clone();
            actix::spawn(async move {
                let _second = locks.lock(&a).await;
            })
        };
        actix::clock::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second writer of a scope waits");
        drop(first);
        waiting.await.unwrap();
        drop(_other_scope);
        assert_eq!(locks.len(), 0);
    }
}
