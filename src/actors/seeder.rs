//! SeederActor: judges whether an instance that comes up may serve, and on the leader copies an
//! empty one from the source (DESIGN 13).
//!
//! # The verdict
//!
//! Every instance starts held (`checking`), and is held again each time it comes up, until the
//! seeder has looked at its data: an instance with a seeding row in the log is `seeding`; one
//! that holds collections in the databases the proxy knows serves; an empty one serves when the
//! source (the primary, else the least-behind other instance that serves) is empty too, and is
//! `seeding` when the source holds collections. Every proxy judges alike, followers included,
//! so that a follower that takes over routes as the leader did.
//!
//! # The copy (leader only)
//!
//! 1. The seeding row is written first, with its floor: the last entry that the source had
//!    applied, with every entry before it, when the copy began ([`WalStore::begin_seeding`]).
//!    From then on the instance serves nothing, whichever proxy leads, until the row is gone.
//! 2. Tenants the proxy knows (those of its mapping, and `default_tenant`), their databases,
//!    each collection with its metadata and configuration, then its records: ids listed under
//!    the collection's write claim (so that no client delete moves the listing's offsets under
//!    it), records read by id and upserted in pages of at most the instance's `max_batch_size`.
//!    Its id there is recorded in the mapping.
//! 3. The entries up to the floor are marked applied there and the row is deleted, in one
//!    transaction; the instance serves again, and replay applies the entries after the floor in
//!    log order, over the copy (replay is idempotent, so a record copied after a later write
//!    converges). Reads reach it only once it has applied their scopes' writes.
//!
//! A copy that stops (the source failed, this proxy stopped leading) leaves the row: it starts
//! again by itself, after a pause, from the source then usable (the floor only goes down), in
//! this proxy or in the next leader. Collections already copied in this process are not copied
//! again.
//!
//! Never writes to any instance but the one it seeds, never writes without leading, and never
//! lets an instance serve before its copy and the floor's entries are accounted for.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::Method;
use actix_web::web;
use log::{info, warn};

use super::health::{CheckData, DataGate, HealthUpdate, SetGate, Subscribe};
use crate::apply::effects::record_changes;
use crate::calls::{Calls, Collection, ID_PAGE, Outcome, Place, ok};
use crate::http::{Cluster, Identities, WritePath};
use crate::identity::{CanonicalId, IdentityChange, InstanceCollectionId, Placement};
use crate::instance::{InstanceId, Role};
use crate::policy::{Claim, Records};
use crate::seed::{CollectionCopy, SeedBoard};
use crate::tls::UpstreamTls;
use crate::verify::{Chunk, Pace, Record};
use crate::wal::models::Seq;
use crate::wal::store::{WalError, WalStore};

/// Records copied per request at most, whatever the instance's `max_batch_size`: bounds the
/// proxy's memory (a page of 384-d records is about 2 MB of JSON, and two are in hand: one
/// written while the next is read).
const RECORD_PAGE: usize = 500;
/// When the instance does not say its `max_batch_size`.
const DEFAULT_MAX_BATCH: usize = 100;
/// How often held instances are looked at again, and stopped copies started again.
const TICK: Duration = Duration::from_secs(1);
/// Pause after a check that could not finish or a copy that stopped.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often a copy under way reports its progress in the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The known tenant every Chroma has.
const DEFAULT_TENANT: &str = "default_tenant";

/// Looks at every instance once; answers when every verdict is in (the composition root waits
/// for it, with a deadline, before it serves).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FirstCheck;

/// What the seeder needs.
pub struct SeederParts {
    pub cluster: web::Data<Cluster>,
    pub ids: web::Data<Identities>,
    pub writes: web::Data<WritePath>,
    pub store: WalStore,
    pub board: Arc<SeedBoard>,
    /// SEED_RATE: records a second read from the source; 0 unpaced.
    pub rate: u32,
    pub tls: UpstreamTls,
}

/// One instance as the seeder keeps it.
#[derive(Default)]
struct Slot {
    gate: Option<DataGate>,
    /// Whether it serves now, as its health actor last said.
    usable: bool,
    /// Whether the log held a seeding row for it at the last look.
    had_row: Option<bool>,
    /// Why its last check could not finish, while it cannot.
    unknown: Option<String>,
    /// A check runs (`busy` too).
    in_check: bool,
    /// It came up again while a check ran: that check's verdict is stale.
    stale: bool,
    /// A check or a copy runs.
    busy: bool,
    retry_at: Option<Instant>,
    /// Collections (`tenant/database/name`) copied in this process, from `copied_from`.
    copied: HashSet<String>,
    copied_from: Option<InstanceId>,
}

/// Judges instances' data and seeds the empty ones.
pub struct SeederActor {
    parts: Arc<SeederParts>,
    calls: Rc<Calls>,
    slots: Vec<Slot>,
}

/// What a check found.
enum Verdict {
    Serve,
    Seed(String),
    /// The check could not finish; the instance stays as it was.
    Unknown(String),
}

impl SeederActor {
    pub fn new(parts: SeederParts) -> Self {
        let calls = Rc::new(Calls::new(parts.cluster.clone(), &parts.tls));
        let slots = parts.cluster.instances.iter().map(|_| Slot::default()).collect();
        Self { parts: Arc::new(parts), calls, slots }
    }

    fn name(&self, i: InstanceId) -> String {
        self.calls.name(i)
    }

    /// Where a check compares an empty instance: the primary, then the others by backlog;
    /// never an instance held itself.
    fn candidates(&self, i: InstanceId) -> Vec<InstanceId> {
        let cluster = &self.parts.cluster;
        let backlogs = cluster.progress.backlogs();
        let mut others: Vec<InstanceId> = cluster
            .instances
            .iter()
            .map(|h| h.spec.id)
            .filter(|c| *c != i && self.slots[c.0].gate != Some(DataGate::Seeding))
            .collect();
        others.sort_by_key(|c| (cluster.instances[c.0].spec.role != Role::Primary, backlogs[c.0]));
        others
    }

    fn set_gate(&mut self, i: InstanceId, gate: DataGate) {
        let slot = &mut self.slots[i.0];
        if slot.gate == Some(gate) {
            return;
        }
        slot.gate = Some(gate);
        self.parts.cluster.instances[i.0].health.do_send(SetGate(gate));
    }

    /// Looks at instance `i`'s data, then sets its gate (and starts its copy if it must).
    /// `done` is dropped when the verdict is in, or at once if a check or copy already runs.
    fn check(&mut self, i: InstanceId, ctx: &mut Context<Self>, done: Option<Done>) {
        if self.slots[i.0].busy {
            return;
        }
        self.slots[i.0].busy = true;
        self.slots[i.0].in_check = true;
        let had_row = self.slots[i.0].had_row;
        let judge = judge(self.parts.clone(), self.calls.clone(), (i, had_row), self.candidates(i));
        ctx.spawn(judge.into_actor(self).map(move |(verdict, had_row), act, ctx| {
            act.slots[i.0].busy = false;
            act.slots[i.0].in_check = false;
            if std::mem::take(&mut act.slots[i.0].stale) {
                // It went down and came up during the check: look again.
                act.check(i, ctx, done);
                return;
            }
            act.slots[i.0].had_row = had_row.or(act.slots[i.0].had_row);
            if !matches!(verdict, Verdict::Unknown(_)) {
                act.slots[i.0].unknown = None;
            }
            let name = act.name(i);
            match verdict {
                Verdict::Serve => {
                    if act.slots[i.0].gate != Some(DataGate::Open) {
                        info!("seeding: instance {name} holds its data: it serves");
                    }
                    act.parts.board.drop_running(i.0);
                    act.set_gate(i, DataGate::Open);
                }
                Verdict::Seed(why) => {
                    if act.slots[i.0].gate != Some(DataGate::Seeding) {
                        warn!(
                            "seeding: instance {name} serves nothing until it is seeded: {why} (SEED_EMPTY_INSTANCES)"
                        );
                        act.parts.cluster.events.record("seeding", &name, why);
                    }
                    act.set_gate(i, DataGate::Seeding);
                    act.copy(i, ctx);
                }
                Verdict::Unknown(why) => {
                    let slot = &mut act.slots[i.0];
                    // Retried every RETRY_PAUSE; said once per reason.
                    if slot.unknown.as_ref() != Some(&why) {
                        info!("seeding: instance {name} stays held, its data not checked: {why}");
                        slot.unknown = Some(why);
                    }
                    slot.retry_at = Some(Instant::now() + RETRY_PAUSE);
                }
            }
            drop(done);
        }));
    }

    /// Starts the copy to instance `i`, if this proxy leads and a source serves.
    fn copy(&mut self, i: InstanceId, ctx: &mut Context<Self>) {
        let cluster = &self.parts.cluster;
        if self.slots[i.0].busy || !cluster.leadership.may_execute() {
            return;
        }
        let Some(source) = self.source(i) else {
            self.parts.board.stopped(i.0, "no instance serves to copy from");
            self.slots[i.0].retry_at = Some(Instant::now() + RETRY_PAUSE);
            return;
        };
        let slot = &mut self.slots[i.0];
        if slot.copied_from != Some(source) {
            slot.copied.clear();
            slot.copied_from = Some(source);
        }
        slot.busy = true;
        // Its row is the copy's first write: from here on, count it as there.
        slot.had_row = Some(true);
        let copied = std::mem::take(&mut slot.copied);
        let run = Seeding {
            parts: self.parts.clone(),
            calls: self.calls.clone(),
            target: i,
            source,
            copied,
            pace: RefCell::new((self.parts.rate > 0).then(|| Pace::new(self.parts.rate))),
        };
        ctx.spawn(run.go().into_actor(self).map(move |(result, copied), act, _| {
            let slot = &mut act.slots[i.0];
            slot.busy = false;
            slot.copied = copied;
            match result {
                Ok(()) => {
                    slot.had_row = Some(false);
                    slot.copied.clear();
                    slot.copied_from = None;
                    act.set_gate(i, DataGate::Open);
                }
                Err(e) => {
                    let name = act.name(i);
                    warn!("seeding: {name}: the copy stopped, it starts again by itself: {e}");
                    act.parts.board.stopped(i.0, &e);
                    act.slots[i.0].retry_at = Some(Instant::now() + RETRY_PAUSE);
                }
            }
        }));
    }

    /// The primary if it serves, else the serving instance that owes the fewest writes.
    fn source(&self, i: InstanceId) -> Option<InstanceId> {
        self.candidates(i).into_iter().find(|c| {
            let slot = &self.slots[c.0];
            slot.usable && slot.gate == Some(DataGate::Open)
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for n in 0..self.slots.len() {
            let i = InstanceId(n);
            let slot = &self.slots[n];
            if slot.busy || slot.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            match slot.gate {
                Some(DataGate::Open) => {}
                Some(DataGate::Seeding) if self.parts.cluster.leadership.may_execute() => {
                    self.copy(i, ctx)
                }
                _ => self.check(i, ctx, None),
            }
        }
    }

    fn report(&self) {
        for n in 0..self.slots.len() {
            let Some(copy) = self.parts.board.get(n).running else { continue };
            let eta = copy.eta_seconds.map_or_else(|| "unknown".into(), |s| format!("{s:.0} s"));
            info!(
                "seeding: {}: {} from {}: {} of {} records copied ({:.0}/s), {} collections, ETA {eta}{}",
                self.name(InstanceId(n)),
                copy.phase,
                copy.source,
                copy.records_copied,
                copy.records_total,
                copy.records_per_second,
                copy.collections.len(),
                copy.last_error.map(|e| format!("; last stop: {e}")).unwrap_or_default()
            );
        }
    }
}

/// Dropped when a check is over: its receiver then wakes.
type Done = tokio::sync::oneshot::Sender<()>;

impl Actor for SeederActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for instance in &self.parts.cluster.instances {
            instance.health.do_send(Subscribe(ctx.address().recipient()));
        }
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        ctx.run_interval(REPORT_EVERY, |act, _| act.report());
    }
}

impl Supervised for SeederActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Checks and copies died with the old context; the tick starts them again.
        for slot in &mut self.slots {
            (slot.busy, slot.in_check, slot.stale) = (false, false, false);
        }
    }
}

impl Handler<CheckData> for SeederActor {
    type Result = ();

    fn handle(&mut self, msg: CheckData, ctx: &mut Context<Self>) {
        // The health actor holds it from now on; the verdict releases it.
        let slot = &mut self.slots[msg.0.0];
        slot.gate = Some(DataGate::Checking);
        // A check under way looked before it came back: its verdict is not for this data.
        slot.stale = slot.in_check;
        self.slots[msg.0.0].retry_at = None;
        self.check(msg.0, ctx, None);
    }
}

impl Handler<HealthUpdate> for SeederActor {
    type Result = ();

    fn handle(&mut self, msg: HealthUpdate, _: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(msg.instance.0) {
            slot.usable = msg.usable;
        }
    }
}

impl Handler<FirstCheck> for SeederActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FirstCheck, ctx: &mut Context<Self>) -> Self::Result {
        let mut over = Vec::new();
        for n in 0..self.slots.len() {
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            self.check(InstanceId(n), ctx, Some(done));
            over.push(wait);
        }
        Box::pin(async move {
            futures_util::future::join_all(over).await;
        })
    }
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &WalStore,
    f: impl FnOnce(&WalStore) -> Result<T, WalError> + Send + 'static,
) -> Outcome<T> {
    let store = store.clone();
    match web::block(move || f(&store)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The tenants the proxy knows: those of its mapping, and `default_tenant`.
fn tenants(ids: &Identities) -> BTreeSet<String> {
    let mut tenants: BTreeSet<String> =
        ids.table.snapshot().into_iter().map(|c| c.tenant).collect();
    tenants.insert(DEFAULT_TENANT.to_string());
    tenants
}

/// How many collections `instance` holds in the databases of `tenants`.
async fn held(calls: &Calls, instance: InstanceId, tenants: &BTreeSet<String>) -> Outcome<u64> {
    let mut total = 0;
    for tenant in tenants {
        let Some(databases) = calls.databases(instance, tenant).await? else { continue };
        for database in databases {
            let place = Place { tenant: tenant.clone(), database };
            let path = format!("{}/collections_count", place.path());
            let (status, answer) = calls.call(instance, Method::GET, &path, None).await?;
            ok(status, &answer, &path)?;
            total += answer.as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// The verdict on instance `i`'s data, compared with the first of `candidates` that answers.
async fn judge(
    parts: Arc<SeederParts>,
    calls: Rc<Calls>,
    (i, had_row): (InstanceId, Option<bool>),
    candidates: Vec<InstanceId>,
) -> (Verdict, Option<bool>) {
    let name = calls.name(i);
    // The log says whether a seeding of it is under way; while the log cannot be read, what it
    // said last time stands (only a leader changes it, and the leader is this proxy's judge).
    let row = match blocking(&parts.store, |s| s.seedings()).await {
        Ok(rows) => rows.iter().find(|r| r.0.as_str() == name).map(|r| r.1.to_string()),
        Err(e) if had_row == Some(false) => {
            info!("seeding: {name}: the log cannot be read ({e}); no seeding of it was under way");
            None
        }
        Err(_) if had_row == Some(true) => Some("its source".to_string()),
        Err(e) => return (Verdict::Unknown(format!("the log cannot be read: {e}")), None),
    };
    if let Some(source) = row {
        return (Verdict::Seed(format!("its seeding from {source} is not finished")), Some(true));
    }
    (judge_data(&calls, i, &parts.ids, candidates).await, Some(false))
}

/// The verdict on an instance that no seeding is under way for, from its data and the source's.
async fn judge_data(
    calls: &Calls,
    i: InstanceId,
    ids: &Identities,
    candidates: Vec<InstanceId>,
) -> Verdict {
    let tenants = tenants(ids);
    match held(calls, i, &tenants).await {
        Ok(0) => {}
        Ok(_) => return Verdict::Serve,
        Err(e) => return Verdict::Unknown(e),
    }
    for candidate in candidates {
        match held(calls, candidate, &tenants).await {
            Ok(0) => return Verdict::Serve,
            Ok(n) => {
                return Verdict::Seed(format!(
                    "it holds no collection while {} holds {n}",
                    calls.name(candidate)
                ));
            }
            Err(_) => continue,
        }
    }
    if ids.table.snapshot().is_empty() {
        Verdict::Serve
    } else {
        Verdict::Unknown("no other instance answers to compare it with".into())
    }
}

/// One attempt at seeding `target` from `source`.
struct Seeding {
    parts: Arc<SeederParts>,
    calls: Rc<Calls>,
    target: InstanceId,
    source: InstanceId,
    /// Collections already copied from this source in this process.
    copied: HashSet<String>,
    pace: RefCell<Option<Pace>>,
}

impl Seeding {
    async fn go(mut self) -> (Outcome<()>, HashSet<String>) {
        let result = self.all().await;
        (result, self.copied)
    }

    fn cluster(&self) -> &Cluster {
        self.calls.cluster()
    }

    async fn all(&mut self) -> Outcome<()> {
        let (target, source) = (self.calls.name(self.target), self.calls.name(self.source));
        let (t, s) = (self.cluster().instances[self.target.0].spec.name.clone(), {
            self.cluster().instances[self.source.0].spec.name.clone()
        });
        let floor: Seq =
            blocking(&self.parts.store, move |store| store.begin_seeding(&t, &s)).await?;
        self.parts.board.attempt(self.target.0, &source);
        info!(
            "seeding: {target}: copying from {source}; the log's entries up to {floor} are in the copy, later ones are replayed after it"
        );
        let places = self.places().await?;
        let mut plan = Vec::new();
        for place in &places {
            for c in self.calls.collections(self.source, place).await? {
                let total = self.calls.count(self.source, place, &c).await?;
                plan.push((place.clone(), c, total));
            }
        }
        self.parts.board.plan(
            self.target.0,
            plan.iter()
                .map(|(place, c, total)| CollectionCopy {
                    tenant: place.tenant.clone(),
                    database: place.database.clone(),
                    collection: c.name.clone(),
                    copied: 0,
                    total: *total,
                })
                .collect(),
        );
        let page = self.page().await;
        for (index, (place, c, total)) in plan.iter().enumerate() {
            let key = format!("{}/{}", place.key(), c.name);
            if self.copied.contains(&key) {
                self.parts.board.copied(self.target.0, index, *total);
                continue;
            }
            self.collection(place, c, index, page).await?;
            self.copied.insert(key);
        }
        let name = self.cluster().instances[self.target.0].spec.name.clone();
        let owed = blocking(&self.parts.store, move |s| s.finish_seeding(&name, floor)).await?;
        for (scope, n) in owed {
            self.cluster().progress.settle(self.target, &scope, n);
        }
        if let Some(done) = self.parts.board.finished(self.target.0) {
            let detail = format!(
                "{} records of {} collections copied from {source} in {:.1} s ({:.0} records/s); the writes logged since are replayed",
                done.records, done.collections, done.seconds, done.records_per_second
            );
            info!("seeding: {target}: done: {detail}");
            self.cluster().events.record("seeded", &target, detail);
        }
        Ok(())
    }

    /// The tenants and databases of the source, each made on the target if it lacks it.
    async fn places(&self) -> Outcome<Vec<Place>> {
        let mut places = Vec::new();
        for tenant in tenants(&self.parts.ids) {
            let Some(databases) = self.calls.databases(self.source, &tenant).await? else {
                continue;
            };
            let mut theirs = self.calls.databases(self.target, &tenant).await?;
            for database in databases {
                let place = Place { tenant: tenant.clone(), database };
                self.calls.ensure_place(self.target, &place, &mut theirs).await?;
                places.push(place);
            }
        }
        Ok(places)
    }

    /// Records per page: the target's `max_batch_size`, at most [`RECORD_PAGE`].
    async fn page(&self) -> usize {
        let answer = self.calls.call(self.target, Method::GET, "/api/v2/pre-flight-checks", None);
        let max = match answer.await {
            Ok((status, v)) if status.is_success() => v["max_batch_size"].as_u64(),
            _ => None,
        };
        max.map_or(DEFAULT_MAX_BATCH, |n| n.max(1) as usize).min(RECORD_PAGE)
    }

    /// Copies one collection: made on the target (its mapping recorded), then its records.
    async fn collection(
        &mut self,
        place: &Place,
        ours: &Collection,
        index: usize,
        page: usize,
    ) -> Outcome<()> {
        let table = &self.parts.ids.table;
        let known = table.to_canonical(self.source, &ours.id);
        // A collection the proxy never saw created is known to clients by the source's id.
        let canonical = known.clone().unwrap_or_else(|| CanonicalId(ours.id.clone()));
        let theirs = self.calls.create(self.target, place, ours, true).await?;
        let placed = |instance: InstanceId, local: &str| {
            IdentityChange::Placed(Placement {
                canonical: canonical.clone(),
                tenant: place.tenant.clone(),
                database: place.database.clone(),
                name: ours.name.clone(),
                instance,
                local: InstanceCollectionId(local.to_string()),
            })
        };
        let mut changes = vec![placed(self.target, &theirs.id)];
        if known.is_none() {
            changes.insert(0, placed(self.source, &ours.id));
        }
        record_changes(changes, &self.parts.ids.mapping).await.map_err(|e| e.to_string())?;
        let ids = self.ids(place, ours, &canonical).await?;
        // The next page is read from the source while this one is written to the target.
        let mut pages = ids.chunks(page);
        let Some(first) = pages.next() else { return Ok(()) };
        let mut current = self.read(place, ours, first).await?;
        loop {
            let write = async {
                let pairs: Vec<(&String, &Record)> = current.iter().collect();
                self.calls.put(self.target, (place, &theirs), "upsert", &pairs).await?;
                self.parts.board.copied(self.target.0, index, pairs.len() as u64);
                Ok::<(), String>(())
            };
            let Some(chunk) = pages.next() else { return write.await };
            let (written, next) =
                futures_util::future::join(write, self.read(place, ours, chunk)).await;
            written?;
            current = next?;
        }
    }

    /// The records of `ids` on the source, paced to SEED_RATE.
    async fn read(&self, place: &Place, ours: &Collection, ids: &[String]) -> Outcome<Chunk> {
        let wait = self.pace.borrow_mut().as_mut().map(|p| p.book(ids.len(), Instant::now()));
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            actix_web::rt::time::sleep(wait).await;
        }
        self.calls.read(self.source, place, ours, ids).await
    }

    /// Every id of the collection on the source, listed under its write claim: no client
    /// write of it runs meanwhile, and the source has applied every one logged.
    async fn ids(
        &self,
        place: &Place,
        ours: &Collection,
        canonical: &CanonicalId,
    ) -> Outcome<Vec<String>> {
        let claim = Claim::Collection {
            database: place.key(),
            collection: canonical.0.clone(),
            records: Records::All,
        };
        let held = (self.parts.writes.get_ref(), self.parts.ids.table.as_ref());
        let _turn = self.calls.claimed(held, &claim, &[self.source]).await?;
        let mut all = Vec::new();
        loop {
            let page = self.calls.id_page(self.source, place, ours, all.len()).await?;
            let last = page.len() < ID_PAGE;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }
}
