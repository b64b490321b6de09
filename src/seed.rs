//! What seeding has done, per instance (DESIGN 13): the copy under way, with its records copied
//! of the total per collection, its rate and ETA, and the last one finished. `/status`,
//! `/admin/instances` and the seeder's own progress lines read it.
//!
//! Plain shared state: it never copies, never talks to an instance and never decides whether an
//! instance serves (the health actor's gate does, as the seeder sets it).

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One collection's copy.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionCopy {
    pub tenant: String,
    pub database: String,
    pub collection: String,
    /// Records written to the instance so far.
    pub copied: u64,
    /// Records the source held when its copy began.
    pub total: u64,
}

/// A seeding under way.
#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    /// The instance copied from.
    pub source: String,
    /// `listing` (tenants, databases, collections), `copying`, or `waiting` (for a source, after
    /// a failure; it starts again by itself).
    pub phase: &'static str,
    pub started_at: DateTime<Utc>,
    /// Attempts so far in this proxy (a restart or a source failure starts another).
    pub attempt: u32,
    pub records_copied: u64,
    pub records_total: u64,
    pub records_per_second: f64,
    /// Seconds left at the current rate, once the total is known.
    pub eta_seconds: Option<f64>,
    pub collections: Vec<CollectionCopy>,
    /// Why the last attempt stopped.
    pub last_error: Option<String>,
    #[serde(skip)]
    began: Option<Instant>,
}

/// A seeding finished.
#[derive(Debug, Clone, Serialize)]
pub struct Seeded {
    pub source: String,
    pub finished_at: DateTime<Utc>,
    pub collections: usize,
    pub records: u64,
    /// Of the last attempt, the one that finished.
    pub seconds: f64,
    pub records_per_second: f64,
}

/// The seeding state of one instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedState {
    /// The copy under way.
    pub running: Option<Copy>,
    /// The last one finished.
    pub last: Option<Seeded>,
}

/// Every instance's seeding state, indexed by instance.
pub struct SeedBoard {
    states: Mutex<Vec<SeedState>>,
}

impl SeedBoard {
    /// Nothing seeded on any of `instances` instances.
    pub fn new(instances: usize) -> Self {
        Self { states: Mutex::new(vec![SeedState::default(); instances]) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<SeedState>) -> R) -> R {
        f(&mut self.states.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Instance `i`'s state.
    pub fn get(&self, i: usize) -> SeedState {
        self.with(|s| s[i].clone())
    }

    /// A new attempt at seeding instance `i` from `source`: the figures start again.
    pub fn attempt(&self, i: usize, source: &str) {
        self.with(|s| {
            let attempt = s[i].running.as_ref().map_or(1, |c| c.attempt + 1);
            let started_at = s[i].running.as_ref().map_or_else(Utc::now, |c| c.started_at);
            s[i].running = Some(Copy {
                source: source.to_string(),
                phase: "listing",
                started_at,
                attempt,
                records_copied: 0,
                records_total: 0,
                records_per_second: 0.0,
                eta_seconds: None,
                collections: Vec::new(),
                last_error: None,
                began: Some(Instant::now()),
            });
        });
    }

    /// Changes the copy under way on instance `i`, if any.
    pub fn update(&self, i: usize, f: impl FnOnce(&mut Copy)) {
        self.with(|s| {
            if let Some(copy) = s[i].running.as_mut() {
                f(copy);
            }
        });
    }

    /// The collections to copy, with their counts; the copy begins.
    pub fn plan(&self, i: usize, collections: Vec<CollectionCopy>) {
        self.update(i, |c| {
            c.records_total = collections.iter().map(|c| c.total).sum();
            c.collections = collections;
            c.phase = "copying";
        });
    }

    /// `n` more records of collection `index` written to instance `i`.
    pub fn copied(&self, i: usize, index: usize, n: u64) {
        self.update(i, |c| {
            c.records_copied += n;
            if let Some(collection) = c.collections.get_mut(index) {
                collection.copied += n;
            }
            let seconds = c.began.map_or(0.0, |t| t.elapsed().as_secs_f64());
            if seconds > 0.0 {
                c.records_per_second = c.records_copied as f64 / seconds;
            }
            let left = c.records_total.saturating_sub(c.records_copied) as f64;
            c.eta_seconds = (c.records_per_second > 0.0).then(|| left / c.records_per_second);
        });
    }

    /// The attempt on instance `i` stopped: it waits, and starts again by itself.
    pub fn stopped(&self, i: usize, why: &str) {
        self.update(i, |c| {
            c.phase = "waiting";
            c.last_error = Some(why.to_string());
        });
    }

    /// Instance `i` is seeded: its copy becomes the last one.
    pub fn finished(&self, i: usize) -> Option<Seeded> {
        self.with(|s| {
            let copy = s[i].running.take()?;
            let seconds = copy.began.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let seeded = Seeded {
                source: copy.source,
                finished_at: Utc::now(),
                collections: copy.collections.len(),
                records: copy.records_copied,
                seconds,
                records_per_second: if seconds > 0.0 {
                    copy.records_copied as f64 / seconds
                } else {
                    0.0
                },
            };
            s[i].last = Some(seeded.clone());
            Some(seeded)
        })
    }

    /// Forgets the copy under way on instance `i` (another proxy finished it, or seeding was
    /// found not to be needed).
    pub fn drop_running(&self, i: usize) {
        self.with(|s| s[i].running = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection(total: u64) -> CollectionCopy {
        CollectionCopy {
            tenant: "t".into(),
            database: "d".into(),
            collection: "c".into(),
            copied: 0,
            total,
        }
    }

    #[test]
    fn progress_counts_per_collection_and_finishes_once() {
        let board = SeedBoard::new(2);
        board.attempt(1, "primary");
        board.plan(1, vec![collection(10), collection(30)]);
        board.copied(1, 1, 20);
        let copy = board.get(1).running.unwrap();
        assert_eq!((copy.records_copied, copy.records_total), (20, 40));
        assert_eq!(copy.collections[1].copied, 20);
        assert_eq!(copy.phase, "copying");
        board.stopped(1, "source down");
        board.attempt(1, "replica-2");
        let again = board.get(1).running.unwrap();
        assert_eq!((again.attempt, again.records_copied), (2, 0));
        assert_eq!(again.started_at, copy.started_at, "the seeding started with the first");
        assert_eq!(board.finished(1).unwrap().source, "replica-2");
        assert!(board.finished(1).is_none());
        assert!(board.get(1).last.is_some() && board.get(0).last.is_none());
    }
}
