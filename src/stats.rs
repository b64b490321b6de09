//! Request counters shared by every HTTP worker, read by `/status` and `/metrics`.
//!
//! Lock-free atomics only: this module never blocks the request path and never allocates on it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::instance::InstanceSpec;

/// Proxy-wide counters plus one [`InstanceCounters`] per instance.
#[derive(Debug, Default)]
pub struct Stats {
    /// Proxied requests received.
    pub requests: AtomicU64,
    /// Requests classified as reads.
    pub reads: AtomicU64,
    /// Requests classified as writes.
    pub writes: AtomicU64,
    /// Times a request was re-sent to another instance.
    pub failovers: AtomicU64,
    /// Requests refused by the proxy itself (bad input, unknown route).
    pub refused: AtomicU64,
    /// Requests answered 503 because no instance was usable.
    pub unavailable: AtomicU64,
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceCounters>,
}

/// Counters of one instance.
#[derive(Debug, Default)]
pub struct InstanceCounters {
    /// Reads this instance answered.
    pub reads: AtomicU64,
    /// Writes this instance answered.
    pub writes: AtomicU64,
    /// Upstream calls to it that failed (connection, timeout, 5xx).
    pub failures: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A copy of the counters, for JSON and Prometheus output.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub failovers: u64,
    pub refused: u64,
    pub unavailable: u64,
    pub instances: Vec<InstanceCountersSnapshot>,
}

/// A copy of one instance's counters.
#[derive(Debug, Serialize)]
pub struct InstanceCountersSnapshot {
    pub name: String,
    pub reads: u64,
    pub writes: u64,
    pub failures: u64,
}

impl Stats {
    /// Zeroed counters for these instances.
    pub fn new(instances: usize) -> Self {
        Self {
            instances: (0..instances).map(|_| InstanceCounters::default()).collect(),
            ..Self::default()
        }
    }

    /// Reads every counter once.
    pub fn snapshot(&self, specs: &[InstanceSpec]) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            reads: get(&self.reads),
            writes: get(&self.writes),
            failovers: get(&self.failovers),
            refused: get(&self.refused),
            unavailable: get(&self.unavailable),
            instances: specs
                .iter()
                .zip(&self.instances)
                .map(|(spec, c)| InstanceCountersSnapshot {
                    name: spec.name.to_string(),
                    reads: get(&c.reads),
                    writes: get(&c.writes),
                    failures: get(&c.failures),
                })
                .collect(),
        }
    }
}
