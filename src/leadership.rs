//! Who leads the proxies that share one WAL, as this proxy knows it (DESIGN 12): its own
//! standing, the epoch, the leader's id and URL, and the local deadline after which a leader
//! executes nothing more.
//!
//! Shared memory read on every request and before every write or replayed entry is sent to an
//! instance, so it must answer without a message; only the lease actor changes it. It never
//! touches the network or the database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

/// A proxy as the others reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Its PROXY_ID.
    pub id: String,
    /// Its ADVERTISE_URL.
    pub url: String,
}

/// Where this proxy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It holds the lease, renewed in time: it may execute writes and replay until `deadline`.
    Leading { deadline: Instant },
    /// It held the lease but its last renewal failed (the store is unreachable, or slow): it
    /// executes nothing, and answers reads from its own state until the store tells it whether
    /// it still leads (DESIGN 9: reads succeed while the WAL store is down).
    Lapsed,
    /// Another proxy leads, or none is known yet: requests go to the leader.
    Following,
}

/// What this proxy knows of the leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// This proxy's standing.
    pub standing: Standing,
    /// The lease's epoch as last seen (0: never taken).
    pub epoch: i64,
    /// The leader, when one is known (this proxy itself when it leads).
    pub leader: Option<Peer>,
}

/// Where a request that needs the leader goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This proxy serves it.
    Here,
    /// The leader at this URL serves it.
    Leader(String),
    /// No leader is known: wait for one.
    Unknown,
}

/// This proxy's view of the leadership, and who is told when it changes.
pub struct Leadership {
    me: Peer,
    view: watch::Sender<View>,
    /// Set at shutdown: no new request is served here, and writes already started finish.
    draining: AtomicBool,
}

impl Leadership {
    /// A proxy that follows nobody yet.
    pub fn new(me: Peer) -> Self {
        let view = View { standing: Standing::Following, epoch: 0, leader: None };
        Self { me, view: watch::Sender::new(view), draining: AtomicBool::new(false) }
    }

    /// This proxy.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// The view now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Whether this proxy may send a write or a replayed entry to an instance now: it holds the
    /// lease and its local deadline has not passed.
    pub fn may_execute(&self) -> bool {
        matches!(self.view.borrow().standing, Standing::Leading { deadline } if Instant::now() < deadline)
    }

    /// Whether this proxy may start a new write: it may execute, and is not draining.
    pub fn takes_writes(&self) -> bool {
        self.may_execute() && !self.draining.load(Ordering::SeqCst)
    }

    /// Shutdown: from now on requests wait for the next leader instead of being served here;
    /// writes already started may finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.view.send_modify(|_| {});
    }

    /// Where a request that needs the leader goes now. A lapsed leader serves it itself: no
    /// other proxy can lead while the store is unreachable for this one, and its writes are
    /// refused by the log meanwhile. A draining proxy sends it to the next leader.
    pub fn target(&self) -> Target {
        if self.draining.load(Ordering::SeqCst) {
            return match &self.view.borrow().leader {
                Some(leader) if leader.id != self.me.id => Target::Leader(leader.url.clone()),
                _ => Target::Unknown,
            };
        }
        let view = self.view.borrow();
        match (&view.standing, &view.leader) {
            (Standing::Leading { .. } | Standing::Lapsed, _) => Target::Here,
            (Standing::Following, Some(leader)) if leader.id == self.me.id => Target::Here,
            (Standing::Following, Some(leader)) => Target::Leader(leader.url.clone()),
            (Standing::Following, None) => Target::Unknown,
        }
    }

    /// A receiver woken by every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Sets the view; receivers are woken only when it changed (a renewal moves the deadline
    /// alone, which nobody waits on).
    pub(crate) fn set(&self, next: View) {
        self.view.send_if_modified(|view| {
            let woken = view.epoch != next.epoch
                || view.leader != next.leader
                || std::mem::discriminant(&view.standing) != std::mem::discriminant(&next.standing);
            *view = next;
            woken
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer(id: &str) -> Peer {
        Peer { id: id.into(), url: format!("http://{id}") }
    }

    #[test]
    fn requests_go_where_the_leader_is() {
        let me = Leadership::new(peer("a"));
        assert_eq!(me.target(), Target::Unknown);
        assert!(!me.may_execute());
        me.set(View { standing: Standing::Following, epoch: 3, leader: Some(peer("b")) });
        assert_eq!(me.target(), Target::Leader("http://b".into()));
        let deadline = Instant::now() + Duration::from_secs(5);
        me.set(View {
            standing: Standing::Leading { deadline },
            epoch: 4,
            leader: Some(peer("a")),
        });
        assert_eq!(me.target(), Target::Here);
        assert!(me.may_execute());
        me.set(View { standing: Standing::Lapsed, epoch: 4, leader: Some(peer("a")) });
        assert_eq!(me.target(), Target::Here, "a lapsed leader still answers reads");
        assert!(!me.may_execute(), "but executes nothing");
    }

    #[test]
    fn a_passed_deadline_stops_execution_without_a_message() {
        let me = Leadership::new(peer("a"));
        let deadline = Instant::now();
        me.set(View {
            standing: Standing::Leading { deadline },
            epoch: 1,
            leader: Some(peer("a")),
        });
        assert!(!me.may_execute());
    }

    #[test]
    fn only_transitions_wake_waiters() {
        let me = Leadership::new(peer("a"));
        let mut waiter = me.subscribe();
        let leading = |after| View {
            standing: Standing::Leading { deadline: Instant::now() + after },
            epoch: 1,
            leader: Some(peer("a")),
        };
        me.set(leading(Duration::from_secs(1)));
        assert!(waiter.has_changed().unwrap());
        waiter.mark_unchanged();
        me.set(leading(Duration::from_secs(2)));
        assert!(!waiter.has_changed().unwrap(), "a renewal is not a transition");
        assert!(me.may_execute());
    }
}
