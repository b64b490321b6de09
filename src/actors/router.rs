//! RouterActor: answers "where does this request go?" with an ordered list of candidates, from
//! the health view pushed by the health actors.
//!
//! One router runs on each HTTP worker thread, all fed the same updates: on this 2-vCPU VM an
//! actor round trip to another thread costs about 0.5 ms (waking an idle vCPU), one on the
//! worker's own thread a few microseconds.
//!
//! It never sends a request and never waits: every answer is computed from memory.

use actix::prelude::*;

use std::sync::Arc;

use super::guarded;
use super::health::{HealthUpdate, Subscribe};
use crate::instance::{InstanceId, Role};
use crate::policy::{Access, Scope};
use crate::progress::Progress;

/// Where should a request of this kind go? Answers the instances that may serve it, best
/// first; empty if none.
#[derive(Message, Debug)]
#[rtype(result = "Vec<InstanceId>")]
pub struct RouteRequest {
    /// Read or write.
    pub access: Access,
    /// For a read, the scopes an instance must have applied every logged write of.
    pub scopes: Vec<Scope>,
}

/// How many instances are usable now, for `/health`.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CountUsable;

/// Chooses the instances a request goes to.
pub struct RouterActor {
    roles: Vec<Role>,
    health: Vec<Recipient<Subscribe>>,
    progress: Arc<Progress>,
    usable: Vec<bool>,
    read_replica_ratio: f64,
    /// Error-diffusion accumulator: sends exactly READ_REPLICA_RATIO of reads to replicas first,
    /// with no random number generator on the request path.
    replica_credit: f64,
    /// Round-robin position among replicas.
    next_replica: usize,
}

impl RouterActor {
    /// A router over instances with these roles (index = [`InstanceId`]), which subscribes to
    /// their health actors when it starts.
    pub fn new(
        roles: Vec<Role>,
        health: Vec<Recipient<Subscribe>>,
        progress: Arc<Progress>,
        read_replica_ratio: f64,
    ) -> Self {
        let usable = vec![true; roles.len()];
        Self {
            roles,
            health,
            progress,
            usable,
            read_replica_ratio,
            replica_credit: 0.0,
            next_replica: 0,
        }
    }

    /// Usable instances of `role` that have applied every write of `scopes`.
    fn eligible(&self, role: Role, scopes: &[Scope]) -> Vec<InstanceId> {
        (0..self.roles.len())
            .map(InstanceId)
            .filter(|i| self.roles[i.0] == role && self.usable[i.0])
            .filter(|i| self.progress.is_current(*i, scopes))
            .collect()
    }

    /// Writes: caught-up instances first (the primary before replicas), then those still
    /// catching up, least behind first; a write waits on its target for its own scope.
    fn write_targets(&self) -> Vec<InstanceId> {
        let backlogs = self.progress.backlogs();
        let mut targets: Vec<InstanceId> =
            (0..self.roles.len()).map(InstanceId).filter(|i| self.usable[i.0]).collect();
        targets
            .sort_by_key(|i| (backlogs[i.0] > 0, backlogs[i.0], self.roles[i.0] != Role::Primary));
        targets
    }

    fn route(&mut self, access: Access, scopes: &[Scope]) -> Vec<InstanceId> {
        if access == Access::Write {
            return self.write_targets();
        }
        let primaries = self.eligible(Role::Primary, scopes);
        let mut replicas = self.eligible(Role::Replica, scopes);
        if !replicas.is_empty() {
            let start = self.next_replica % replicas.len();
            replicas.rotate_left(start);
        }
        self.next_replica = self.next_replica.wrapping_add(1);
        self.replica_credit += self.read_replica_ratio;
        let replicas_first = self.replica_credit >= 1.0;
        if replicas_first {
            self.replica_credit -= 1.0;
        }
        let mut candidates: Vec<InstanceId> = if replicas_first {
            replicas.into_iter().chain(primaries).collect()
        } else {
            primaries.into_iter().chain(replicas).collect()
        };
        // Last resort: instances still applying this read's writes, least behind first; the
        // read waits there while replay brings them up to date from the log.
        let behind: Vec<InstanceId> =
            self.write_targets().into_iter().filter(|i| !candidates.contains(i)).collect();
        candidates.extend(behind);
        candidates
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    /// Subscribing (again, after a restart) makes every health actor push its state at once.
    fn started(&mut self, ctx: &mut Context<Self>) {
        for health in &self.health {
            health.do_send(Subscribe(ctx.address().recipient()));
        }
    }
}

impl Supervised for RouterActor {}

impl Handler<RouteRequest> for RouterActor {
    type Result = Vec<InstanceId>;

    fn handle(&mut self, msg: RouteRequest, ctx: &mut Context<Self>) -> Vec<InstanceId> {
        guarded("router", ctx, || self.route(msg.access, &msg.scopes)).unwrap_or_default()
    }
}

impl Handler<HealthUpdate> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: HealthUpdate, _: &mut Context<Self>) {
        if let Some(slot) = self.usable.get_mut(msg.instance.0) {
            *slot = msg.usable;
        }
    }
}

impl Handler<CountUsable> for RouterActor {
    type Result = usize;

    fn handle(&mut self, _: CountUsable, _: &mut Context<Self>) -> usize {
        self.usable.iter().filter(|u| **u).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(ratio: f64) -> RouterActor {
        let roles = vec![Role::Primary, Role::Replica, Role::Replica];
        RouterActor::new(roles, Vec::new(), Arc::new(Progress::new(3)), ratio)
    }

    const C: &[Scope] = &[Scope::Global];

    fn ids(v: &[usize]) -> Vec<InstanceId> {
        v.iter().map(|i| InstanceId(*i)).collect()
    }

    #[test]
    fn writes_prefer_the_primary_then_replicas() {
        let mut r = router(0.8);
        assert_eq!(r.route(Access::Write, C)[0], InstanceId(0));
        r.usable[0] = false;
        let route = r.route(Access::Write, C);
        assert_eq!(route.len(), 2);
        assert!(!route.contains(&InstanceId(0)));
    }

    #[test]
    fn reads_follow_the_ratio_exactly() {
        let mut r = router(0.8);
        let firsts: Vec<InstanceId> = (0..100).map(|_| r.route(Access::Read, C)[0]).collect();
        let on_primary = firsts.iter().filter(|i| **i == InstanceId(0)).count();
        assert_eq!(on_primary, 20);
        let on_replica_2 = firsts.iter().filter(|i| **i == InstanceId(2)).count();
        assert!((30..=50).contains(&on_replica_2), "replicas share reads: {on_replica_2}");
    }

    #[test]
    fn only_usable_instances_are_candidates() {
        let mut r = router(1.0);
        r.usable = vec![false, false, true];
        assert_eq!(r.route(Access::Read, C), ids(&[2]));
        assert_eq!(r.route(Access::Write, C), ids(&[2]));
        r.usable = vec![false, false, false];
        assert!(r.route(Access::Read, C).is_empty());
    }

    #[test]
    fn reads_go_only_where_their_writes_are_applied() {
        let mut r = router(1.0);
        let scope = Scope::Collection("c".into());
        r.progress.owe_all_but(&scope, Some(InstanceId(0)));
        let scopes = [Scope::Global, scope.clone()];
        assert!((0..10).all(|_| r.route(Access::Read, &scopes) == ids(&[0, 1, 2])));
        r.usable[0] = false;
        assert_eq!(r.route(Access::Read, &scopes), ids(&[1, 2]), "behind, waited on");
        r.usable[0] = true;
        assert_eq!(r.route(Access::Read, &[Scope::Collection("other".into())]).len(), 3);
        // Writes prefer caught-up instances: replicas that owe entries come last.
        assert_eq!(r.route(Access::Write, &[]), ids(&[0, 1, 2]));
        r.usable[0] = false;
        assert_eq!(r.route(Access::Write, &[])[0], InstanceId(1));
        r.progress.settle(InstanceId(2), &scope, 1);
        assert_eq!(r.route(Access::Write, &[])[0], InstanceId(2), "the caught-up replica first");
    }

    #[test]
    fn ratio_zero_keeps_reads_on_the_primary() {
        let mut r = router(0.0);
        assert!((0..50).all(|_| r.route(Access::Read, C)[0] == InstanceId(0)));
    }
}
