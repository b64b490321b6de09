//! Recent transitions, kept in memory for `GET /events` and the dashboard: instances going down
//! and up, admin overrides set, expired and cleared, requests failed over. At most
//! [`CAPACITY`]; the oldest go first.
//!
//! A record of what the log also says, never a replacement for it. It never blocks for long
//! (one short critical section per event), never touches the network or the store, and keeps
//! nothing across restarts.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many transitions are kept.
pub const CAPACITY: usize = 100;

/// One transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `down`, `up`, `forced`, `override_ended` or `failover`.
    pub kind: &'static str,
    pub instance: String,
    /// What happened, as the log line says it.
    pub detail: String,
}

/// The last [`CAPACITY`] transitions.
#[derive(Debug, Default)]
pub struct Events(Mutex<VecDeque<Event>>);

impl Events {
    /// Keeps one transition of `instance`.
    pub fn record(&self, kind: &'static str, instance: &str, detail: String) {
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(Event { at: Utc::now(), kind, instance: instance.to_string(), detail });
    }

    /// Every transition kept, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_come_first_and_the_oldest_go() {
        let events = Events::default();
        for n in 0..CAPACITY + 5 {
            events.record("down", "replica", format!("#{n}"));
        }
        let recent = events.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].detail, format!("#{}", CAPACITY + 4));
        assert_eq!(recent[CAPACITY - 1].detail, "#5");
    }
}
