//! LeaseActor: takes, renews and gives up the leader's lease in the WAL store (DESIGN 12), and
//! publishes where this proxy stands in [`Leadership`].
//!
//! - A leader renews every LEASE_TTL / 3; its local deadline is the start of its last successful
//!   renewal + LEASE_TTL − [`margin`]. A renewal that fails makes it lapse at once (it executes
//!   nothing more); one that finds the lease taken makes it a follower.
//! - A follower reads the lease every [`POLL`]. It takes the lease when it is free (released),
//!   when it names this proxy's own PROXY_ID at startup (a restart of this proxy), or when it
//!   has not changed for the holder's TTL + the margin on this proxy's own monotonic clock: no
//!   clock of another machine is ever trusted.
//! - Taking it runs crash recovery under the new epoch and reloads collection ids and what each
//!   instance owes; only then does this proxy lead. Every change to the log is fenced on the
//!   epoch by the store itself, so a proxy that lost the lease can change nothing.
//!
//! It runs alone on its own arbiter thread and blocks it on the store, so that renewals never
//! wait behind requests. It never executes anything against an instance, and never reports
//! leading before recovery under its epoch has committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use log::{error, info, warn};

use super::guarded;
use super::mapping;
use super::replay::{ReplayActor, Wake};
use crate::events::Events;
use crate::identity::MappingTable;
use crate::instance::InstanceName;
use crate::leadership::{Leadership, Peer, Standing, View};
use crate::progress::Progress;
use crate::wal::models::now_ms;
use crate::wal::store::{Lease, Member, WalError, WalStore};

/// How often a proxy that does not lead reads the lease: a released lease is taken within this.
pub const POLL: Duration = Duration::from_millis(100);

/// Time kept between a leader's own deadline and the earliest moment another proxy may take its
/// lease, on each side: a tenth of the TTL, from 100 ms to 1 s.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Give up the lease now, for a graceful handover at shutdown (after the drain); answers once it
/// is released. The actor then only follows: it never takes the lease again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

/// Answers once the first look at the lease is over (it runs when the actor starts), so that a
/// lone proxy leads before it serves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FirstLook;

/// What taking the lease reloads.
pub struct Duties {
    /// Collection ids, reloaded from the log.
    pub table: Arc<MappingTable>,
    /// What every instance owes, reloaded from the log.
    pub progress: Arc<Progress>,
    /// Instance names, by `InstanceId`.
    pub names: Vec<InstanceName>,
    /// Woken once this proxy leads.
    pub replay: Addr<ReplayActor>,
}

/// What a proxy that does not hold the lease has seen of it: the lease as last read, and since
/// when it has not changed, by this proxy's clock.
#[derive(Debug, Clone)]
struct Sighting {
    lease: Lease,
    since: Instant,
}

impl Sighting {
    /// Takes in the lease as read at `now`.
    fn update(seen: Option<Self>, lease: Lease, now: Instant) -> Self {
        match seen {
            Some(s) if same_term(&s.lease, &lease) => Self { lease, since: s.since },
            _ => Self { lease, since: now },
        }
    }

    /// Whether its holder has been silent long enough to be presumed dead: its own TTL (or
    /// ours, if longer) plus the margin.
    fn expired(&self, ttl: Duration, now: Instant) -> bool {
        let theirs = Duration::from_millis(self.lease.ttl_ms.max(0) as u64);
        now.duration_since(self.since) >= theirs.max(ttl) + margin(ttl)
    }
}

/// Whether two reads of the lease show one holder that has not renewed in between.
fn same_term(a: &Lease, b: &Lease) -> bool {
    a.epoch == b.epoch && a.renewals == b.renewals && a.holder == b.holder
}

/// Why the lease may be taken now, if it may.
fn may_take(lease: &Lease, me: &str, first_look: bool, expired: bool) -> Option<&'static str> {
    match lease.holder.as_deref() {
        None => Some("it is free"),
        Some(holder) if holder == me && first_look => {
            Some("it names this proxy's own PROXY_ID: an earlier run of this proxy")
        }
        Some(_) if expired => Some("its holder stopped renewing it"),
        Some(_) => None,
    }
}

/// The lease as this actor holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Not held.
    No,
    /// Taken at this epoch; recovery under it has not committed yet.
    Recovering(i64),
    /// Held at this epoch, recovered.
    Yes(i64),
}

/// Keeps this proxy's lease, or watches another's.
pub struct LeaseActor {
    store: WalStore,
    leadership: Arc<Leadership>,
    ttl: Duration,
    duties: Duties,
    events: Arc<Events>,
    held: Held,
    sighting: Option<Sighting>,
    first_look: bool,
    released: bool,
    /// Whether the store failed at the last look, so an outage is logged once.
    store_down: bool,
    reported_at: Option<Instant>,
}

impl LeaseActor {
    /// The lease keeper of `leadership`'s proxy, with leases of `ttl`.
    pub fn new(
        store: WalStore,
        leadership: Arc<Leadership>,
        ttl: Duration,
        duties: Duties,
        events: Arc<Events>,
    ) -> Self {
        Self {
            store,
            leadership,
            ttl,
            duties,
            events,
            held: Held::No,
            sighting: None,
            first_look: true,
            released: false,
            store_down: false,
            reported_at: None,
        }
    }

    fn me(&self) -> &Peer {
        self.leadership.me()
    }

    fn transition(&self, kind: &'static str, detail: String) {
        self.events.record(kind, &self.me().id, detail);
    }

    /// One look at the lease; answers when to look again.
    fn tick(&mut self) -> Duration {
        let outcome = match self.held {
            Held::No => self.watch(),
            Held::Recovering(epoch) => self.recover(epoch),
            Held::Yes(epoch) => self.renew(epoch),
        };
        if let Err(e) = outcome {
            self.store_failed(&e);
        } else if std::mem::take(&mut self.store_down) {
            info!("lease: the write-ahead log store is reachable again");
        }
        self.report();
        match self.held {
            Held::Yes(_) => self.ttl / 3,
            _ => POLL,
        }
    }

    fn store_failed(&mut self, e: &WalError) {
        if let Held::Yes(epoch) = self.held
            && self.leadership.view().standing != Standing::Lapsed
        {
            error!(
                "lease: LAPSED: proxy {} could not renew its lease at epoch {epoch} ({e}); it executes no write and no replay until the store answers again, and answers reads meanwhile",
                self.me().id
            );
            self.transition("lease_lapsed", format!("epoch {epoch}: {e}"));
            self.publish(Standing::Lapsed, epoch);
        } else if !std::mem::replace(&mut self.store_down, true) {
            warn!("lease: cannot read the lease ({e}); the leader known so far stays the leader");
        }
    }

    fn publish(&self, standing: Standing, epoch: i64) {
        let leader = match standing {
            Standing::Following => {
                self.sighting.as_ref().and_then(|s| match (&s.lease.holder, &s.lease.url) {
                    (Some(id), Some(url)) => Some(Peer { id: id.clone(), url: url.clone() }),
                    _ => None,
                })
            }
            _ => Some(self.me().clone()),
        };
        self.leadership.set(View { standing, epoch, leader });
    }

    /// Not holding it: read it, and take it if it may be taken.
    fn watch(&mut self) -> Result<(), WalError> {
        let now = Instant::now();
        let lease = self.store.lease()?;
        let first_look = std::mem::take(&mut self.first_look);
        let sighting = Sighting::update(self.sighting.take(), lease.clone(), now);
        let expired = sighting.expired(self.ttl, now);
        let previous = self.leadership.view();
        self.sighting = Some(sighting);
        // Released at shutdown: it follows, so that the requests it still holds find the next
        // leader, and never takes the lease again.
        let why = may_take(&lease, &self.me().id, first_look, expired).filter(|_| !self.released);
        let Some(why) = why else {
            if previous.epoch != lease.epoch || previous.leader.is_none() {
                info!(
                    "lease: following {} ({}) at epoch {}",
                    lease.holder.as_deref().unwrap_or("?"),
                    lease.url.as_deref().unwrap_or("?"),
                    lease.epoch
                );
            }
            self.publish(Standing::Following, lease.epoch);
            return Ok(());
        };
        let started = Instant::now();
        let me = self.me().clone();
        let Some(epoch) = self.store.take_lease(&me.id, &me.url, &lease, self.ttl)? else {
            return Ok(());
        };
        let from = match &lease.holder {
            Some(holder) => format!("from {holder} (epoch {})", lease.epoch),
            None => format!("after epoch {}", lease.epoch),
        };
        info!("lease: ACQUIRED by proxy {} at epoch {epoch} {from}: {why}; recovering", me.id);
        self.transition("lease_acquired", format!("epoch {epoch} {from}: {why}"));
        self.held = Held::Recovering(epoch);
        self.recover_at(epoch, started)
    }

    /// Holding it, not yet recovered: renew, then recover.
    fn recover(&mut self, epoch: i64) -> Result<(), WalError> {
        let started = Instant::now();
        if !self.store.renew_lease(&self.me().id, epoch, self.ttl)? {
            return self.lost(epoch);
        }
        self.recover_at(epoch, started)
    }

    /// Crash recovery under `epoch`, then this proxy leads, with its deadline counted from
    /// `renewed` (when the last successful take or renewal started).
    fn recover_at(&mut self, epoch: i64, renewed: Instant) -> Result<(), WalError> {
        self.store.hold(epoch);
        let (queued, dropped) = match self.store.recover() {
            Err(WalError::Fenced(why)) => {
                warn!("lease: lost at epoch {epoch} before recovery: {why}");
                return self.lost(epoch);
            }
            other => other?,
        };
        if queued > 0 {
            warn!(
                "recovery: {queued} writes had no recorded outcome (a proxy stopped mid-write); they are queued for replay to every instance"
            );
        }
        if dropped > 0 {
            warn!("recovery: dropped {dropped} backlog rows of instances no longer configured");
        }
        let Duties { table, progress, names, replay } = &self.duties;
        table.clear();
        let mappings = mapping::load(&self.store, table, names)?;
        progress.clear();
        let mut owed = 0;
        for (instance, scope, count) in self.store.owed()? {
            if let Some(i) = names.iter().position(|n| *n == instance) {
                progress.owe(crate::instance::InstanceId(i), &scope, count);
                owed += count;
            }
        }
        let head = self.store.head_seq()?;
        info!(
            "lease: proxy {} LEADS at epoch {epoch}: log head at seq {head}, {mappings} collection ids, {owed} entries owed by instances",
            self.me().id
        );
        self.held = Held::Yes(epoch);
        self.publish(Standing::Leading { deadline: renewed + self.ttl - margin(self.ttl) }, epoch);
        replay.do_send(Wake);
        Ok(())
    }

    /// Holding it: renew it.
    fn renew(&mut self, epoch: i64) -> Result<(), WalError> {
        let started = Instant::now();
        let was = self.leadership.view().standing;
        if !self.store.renew_lease(&self.me().id, epoch, self.ttl)? {
            return self.lost(epoch);
        }
        let late = match was {
            Standing::Leading { deadline } => started >= deadline,
            _ => true,
        };
        if late {
            warn!(
                "lease: renewed LATE by proxy {} at epoch {epoch}: it executed nothing meanwhile, and leads again",
                self.me().id
            );
            self.transition("lease_renewed_late", format!("epoch {epoch}"));
        }
        self.publish(Standing::Leading { deadline: started + self.ttl - margin(self.ttl) }, epoch);
        if late {
            self.duties.replay.do_send(Wake);
        }
        Ok(())
    }

    /// The lease is no longer this proxy's: follow whoever has it.
    fn lost(&mut self, epoch: i64) -> Result<(), WalError> {
        self.store.hold(0);
        self.held = Held::No;
        let lease = self.store.lease();
        let now = Instant::now();
        let other = match &lease {
            Ok(lease) => format!(
                "now held by {} at epoch {}",
                lease.holder.as_deref().unwrap_or("nobody"),
                lease.epoch
            ),
            Err(e) => format!("the lease could not be read: {e}"),
        };
        error!("lease: LOST by proxy {} at epoch {epoch}, {other}; following", self.me().id);
        self.transition("lease_lost", format!("epoch {epoch}, {other}"));
        let epoch = match lease {
            Ok(lease) => {
                let epoch = lease.epoch;
                self.sighting = Some(Sighting::update(None, lease, now));
                epoch
            }
            Err(_) => epoch,
        };
        self.publish(Standing::Following, epoch);
        Ok(())
    }

    /// Says, every LEASE_TTL / 3, that this proxy is alive and what it is.
    fn report(&mut self) {
        if self.reported_at.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return;
        }
        self.reported_at = Some(Instant::now());
        let view = self.leadership.view();
        let member = Member {
            proxy_id: self.me().id.clone(),
            url: self.me().url.clone(),
            role: role(&view).to_string(),
            epoch: view.epoch,
            seen_ms: now_ms(),
        };
        // Best effort: the roll call is for people, and the lease is what counts.
        let _ = self.store.report_member(&member);
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        let next = guarded("lease", ctx, || self.tick()).unwrap_or(POLL);
        ctx.run_later(next, |act, ctx| act.look(ctx));
    }
}

/// `leader` or `follower`, as `/status` names this proxy's role.
pub fn role(view: &View) -> &'static str {
    match view.standing {
        Standing::Leading { .. } | Standing::Lapsed => "leader",
        Standing::Following => "follower",
    }
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.look(ctx);
    }
}

impl Supervised for LeaseActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // What the store says is the truth: look again as after a restart, keeping the epoch
        // held (the store fences on it either way).
        self.sighting = None;
    }
}

impl Handler<FirstLook> for LeaseActor {
    type Result = ();

    fn handle(&mut self, _: FirstLook, _: &mut Context<Self>) {}
}

impl Handler<Release> for LeaseActor {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Context<Self>) {
        self.released = true;
        let (Held::Yes(epoch) | Held::Recovering(epoch)) = self.held else { return };
        self.store.hold(0);
        self.held = Held::No;
        self.leadership.set(View { standing: Standing::Following, epoch, leader: None });
        match self.store.release_lease(&self.me().id, epoch) {
            Ok(true) => {
                info!(
                    "lease: RELEASED by proxy {} at epoch {epoch}: another proxy may lead at once",
                    self.me().id
                );
                self.transition("lease_released", format!("epoch {epoch}"));
            }
            Ok(false) => warn!("lease: not released at epoch {epoch}: it was no longer held"),
            Err(e) => warn!(
                "lease: not released at epoch {epoch} ({e}); another proxy takes it once it expires"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, epoch: i64, renewals: i64) -> Lease {
        Lease {
            holder: holder.map(str::to_string),
            epoch,
            url: holder.map(|h| format!("http://{h}")),
            ttl_ms: 5_000,
            renewals,
            expires_ms: 0,
        }
    }

    #[test]
    fn a_free_lease_is_taken_at_once_and_a_live_one_never() {
        assert!(may_take(&lease(None, 4, 9), "a", false, false).is_some());
        assert!(may_take(&lease(Some("b"), 4, 9), "a", true, false).is_none());
        assert!(may_take(&lease(Some("b"), 4, 9), "a", false, true).is_some());
    }

    #[test]
    fn this_proxys_own_id_is_taken_over_only_at_startup() {
        assert!(may_take(&lease(Some("a"), 4, 9), "a", true, false).is_some());
        assert!(may_take(&lease(Some("a"), 4, 9), "a", false, false).is_none());
    }

    #[test]
    fn a_holder_is_dead_after_its_ttl_and_the_margin_without_a_renewal() {
        let ttl = Duration::from_secs(5);
        let t0 = Instant::now();
        let seen = Sighting::update(None, lease(Some("b"), 4, 9), t0);
        assert!(!seen.expired(ttl, t0 + Duration::from_millis(5_400)));
        assert!(seen.expired(ttl, t0 + Duration::from_millis(5_500)));
        // A renewal starts the wait again.
        let renewed = Sighting::update(
            Some(seen.clone()),
            lease(Some("b"), 4, 10),
            t0 + Duration::from_secs(5),
        );
        assert!(!renewed.expired(ttl, t0 + Duration::from_secs(6)));
        // The same read again does not.
        let same =
            Sighting::update(Some(seen), lease(Some("b"), 4, 9), t0 + Duration::from_secs(3));
        assert!(same.expired(ttl, t0 + Duration::from_millis(5_500)));
    }

    #[test]
    fn a_holder_with_a_longer_ttl_is_waited_for_longer() {
        let mut long = lease(Some("b"), 1, 0);
        long.ttl_ms = 20_000;
        let t0 = Instant::now();
        let seen = Sighting::update(None, long, t0);
        assert!(!seen.expired(Duration::from_secs(5), t0 + Duration::from_secs(10)));
        assert!(seen.expired(Duration::from_secs(5), t0 + Duration::from_millis(20_500)));
    }

    #[test]
    fn the_margin_is_a_tenth_of_the_ttl_within_bounds() {
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_millis(500)), Duration::from_millis(100));
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
