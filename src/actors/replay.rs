//! ReplayActor: brings every instance up to date from the log. For each instance (a lane) it
//! reads the entries that instance has not applied, in log order, and applies them: collection
//! ids translated to the instance's own, creates as get_or_create, deletes of what is gone as
//! done, and consecutive adds, upserts or deletes of one collection coalesced into one request
//! up to the instance's `max_batch_size`. It wakes on new entries, on health changes and once a
//! second, and runs a lane at most once per [`BATCH_INTERVAL`]; a rejected entry is retried
//! with exponential back-off and, after MAX_REPLAY_RETRIES, marked failed for that instance.
//!
//! It never applies an entry whose outcome is still unknown (a write in flight stops the lane
//! until it is resolved), and never applies one entry of a collection before an earlier one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use log::{error, info, warn};
use serde_json::Value;
use serde_json::value::RawValue;

use super::health::{HealthActor, HealthUpdate, ReportFailure, RequestProbe, Subscribe};
use super::mapping::MappingCacheActor;
use crate::apply::effects::{DiscoveryError, discover, locate, record_changes};
use crate::apply::translate::{PresenceCheck, Present, identity_changes, known_by_name, prepare};
use crate::chroma::routes::{Operation, Route, classify};
use crate::identity::{MappingTable, Translation};
use crate::instance::{InstanceId, InstanceName, InstanceSpec};
use crate::leadership::Leadership;
use crate::policy::{self, Claim, Scope};
use crate::progress::Progress;
use crate::tls::UpstreamTls;
use crate::upstream::{self, FencedBody, UpstreamError};
use crate::wal::models::{EntryRow, PendingEntry, Seq};
use crate::wal::store::{WalError, WalStore, Window};
use awc::error::PayloadError;

/// Entries read from the log per round.
const WINDOW: i64 = 2_000;
/// Most bytes of bodies in one window (an entry larger than this is read alone): with writes
/// of up to 40 MB each, a window of entries alone could otherwise take gigabytes. 8 MiB holds
/// about 4,000 records of 384 dimensions, a merged batch of the size Chroma ingests as fast as
/// any larger one (a replica took 500-record batches at 985 records/s and 5,000-record ones at
/// 952); a window's bodies and the merged requests made of them are alive together, and with
/// 32 MiB the proxy peaked at 112 MB while replaying a backlog of 20,000 such records.
const WINDOW_BYTES: i64 = 8 << 20;
/// Batch size when an instance does not say its own.
const DEFAULT_MAX_BATCH: usize = 1_000;
/// First back-off after a rejected entry; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How soon to look again when the next entry is still in flight.
const IN_FLIGHT_PAUSE: Duration = Duration::from_millis(20);
/// Pause before a batch that got no answer in time is sent again: the probe decides meanwhile
/// whether the instance is down, and a slow one gets room to finish.
const SLOW_PAUSE: Duration = Duration::from_secs(1);
/// Least time between the starts of two runs of a lane. Writes logged meanwhile are applied
/// together, merged into one request: a single-record add costs Chroma about as much CPU as a
/// batch of ten, so under steady writes this spares the instances most of replication's work,
/// for at most this much more replication lag. A lone write is still applied at once.
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// New entries were committed or queued: look for work.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Wake;

/// Admin: give failed entries a fresh retry budget and replay them (every one, or one entry,
/// or one instance's); answers how many.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, WalError>")]
pub struct RetryFailed {
    /// Only this entry.
    pub seq: Option<Seq>,
    /// Only on this instance.
    pub instance: Option<InstanceId>,
}

/// Admin: mark entry `seq` resolved on `instance` without applying it; answers whether it was
/// owed there.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, WalError>")]
pub struct Skip {
    /// The entry.
    pub seq: Seq,
    /// The instance that will not apply it.
    pub instance: InstanceId,
    /// Why, for the log.
    pub reason: String,
}

/// Replay figures shown in `/status`.
#[derive(Debug, Default)]
pub struct ReplayCounters {
    /// Entries applied by replay since the proxy started.
    pub total: AtomicU64,
    /// Lanes applying entries right now.
    pub active: AtomicUsize,
}

/// What the replay actor needs from the rest of the proxy.
pub struct ReplayParts {
    pub store: WalStore,
    pub specs: Vec<InstanceSpec>,
    pub table: Arc<MappingTable>,
    pub progress: Arc<Progress>,
    pub mapping: Addr<MappingCacheActor>,
    pub health: Vec<Addr<HealthActor>>,
    pub counters: Arc<ReplayCounters>,
    pub max_retries: i32,
    /// Longest wait for an instance's answer to a replayed batch (WRITE_TIMEOUT).
    pub write_timeout: Duration,
    pub tls: UpstreamTls,
    /// Replay is the leader's: nothing is sent once this proxy may not execute.
    pub leadership: Arc<Leadership>,
}

#[derive(Default)]
struct Lane {
    usable: bool,
    running: bool,
    /// A run is scheduled for the end of the batch interval.
    deferred: bool,
    dirty: bool,
    last_start: Option<Instant>,
    retry_at: Option<Instant>,
    max_batch: Option<usize>,
}

/// How a lane's run ended.
enum LaneEnd {
    /// Nothing left to apply.
    Idle,
    /// The next entry is still being executed by the write path.
    InFlight,
    /// The instance stopped answering.
    Down,
    /// An entry was rejected (or the log was unreachable): wait before the next try.
    Backoff(Duration),
}

/// Applies the log to instances that lack entries.
pub struct ReplayActor {
    parts: Arc<ReplayParts>,
    lanes: Vec<Lane>,
    client: awc::Client,
}

impl ReplayActor {
    /// A replayer for every instance of `parts.specs`.
    pub fn new(parts: ReplayParts) -> Self {
        let lanes = parts.specs.iter().map(|_| Lane { usable: true, ..Lane::default() }).collect();
        let client = upstream::client(&parts.tls, parts.write_timeout);
        Self { parts: Arc::new(parts), lanes, client }
    }

    fn kick_all(&mut self, ctx: &mut Context<Self>) {
        for i in 0..self.lanes.len() {
            self.kick(InstanceId(i), ctx);
        }
    }

    fn kick(&mut self, instance: InstanceId, ctx: &mut Context<Self>) {
        let lane = &mut self.lanes[instance.0];
        if lane.running {
            lane.dirty = true;
            return;
        }
        if lane.deferred || !lane.usable || lane.retry_at.is_some_and(|t| t > Instant::now()) {
            return;
        }
        // The lease keeper wakes replay once this proxy leads.
        if !self.parts.leadership.may_execute() {
            return;
        }
        let wait =
            lane.last_start.map_or(Duration::ZERO, |t| BATCH_INTERVAL.saturating_sub(t.elapsed()));
        if !wait.is_zero() {
            lane.deferred = true;
            ctx.run_later(wait, move |act, ctx| {
                act.lanes[instance.0].deferred = false;
                act.kick(instance, ctx);
            });
            return;
        }
        lane.last_start = Some(Instant::now());
        lane.running = true;
        lane.dirty = false;
        lane.retry_at = None;
        let run = LaneRun {
            parts: self.parts.clone(),
            client: self.client.clone(),
            instance,
            max_batch: lane.max_batch,
        };
        ctx.spawn(run.drain().into_actor(self).map(move |(end, max_batch), act, ctx| {
            let lane = &mut act.lanes[instance.0];
            lane.running = false;
            lane.max_batch = Some(max_batch);
            match end {
                LaneEnd::Idle | LaneEnd::Down => {}
                LaneEnd::InFlight => lane.retry_at = Some(Instant::now() + IN_FLIGHT_PAUSE),
                LaneEnd::Backoff(pause) => lane.retry_at = Some(Instant::now() + pause),
            }
            if lane.dirty || matches!(end, LaneEnd::InFlight) {
                let pause = lane
                    .retry_at
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()));
                ctx.run_later(pause, move |act, ctx| act.kick(instance, ctx));
            }
        }));
    }
}

impl Actor for ReplayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for health in &self.parts.health {
            health.do_send(Subscribe(ctx.address().recipient()));
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.kick_all(ctx));
    }
}

impl Supervised for ReplayActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        for lane in &mut self.lanes {
            lane.running = false;
            lane.deferred = false;
        }
    }
}

impl Handler<Wake> for ReplayActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.kick_all(ctx);
    }
}

impl Handler<HealthUpdate> for ReplayActor {
    type Result = ();

    fn handle(&mut self, msg: HealthUpdate, ctx: &mut Context<Self>) {
        let lane = &mut self.lanes[msg.instance.0];
        let returned = msg.usable && !lane.usable;
        lane.usable = msg.usable;
        if returned {
            lane.retry_at = None;
        }
        self.kick(msg.instance, ctx);
    }
}

impl Handler<RetryFailed> for ReplayActor {
    type Result = ResponseActFuture<Self, Result<usize, WalError>>;

    fn handle(&mut self, msg: RetryFailed, _: &mut Context<Self>) -> Self::Result {
        let store = self.parts.store.clone();
        let instance = msg.instance.map(|i| self.parts.specs[i.0].name.clone());
        let what = match (&msg.seq, &instance) {
            (Some(seq), Some(name)) => format!("entry {seq} on {name}"),
            (Some(seq), None) => format!("entry {seq}"),
            (None, Some(name)) => format!("every failed entry of {name}"),
            (None, None) => "every failed entry".to_string(),
        };
        let retry = actix_web::rt::task::spawn_blocking(move || {
            store.retry_failed(msg.seq, instance.as_ref())
        });
        Box::pin(retry.into_actor(self).map(move |result, act, ctx| {
            let count = result.map_err(|e| WalError::Unavailable(e.to_string()))??;
            info!("admin: retry of {what}: {count} failed replays queued again");
            for lane in &mut act.lanes {
                lane.retry_at = None;
            }
            act.kick_all(ctx);
            Ok(count)
        }))
    }
}

impl Handler<Skip> for ReplayActor {
    type Result = ResponseActFuture<Self, Result<bool, WalError>>;

    fn handle(&mut self, msg: Skip, _: &mut Context<Self>) -> Self::Result {
        let store = self.parts.store.clone();
        let name = self.parts.specs[msg.instance.0].name.clone();
        let (seq, reason) = (msg.seq, msg.reason.clone());
        let skipped = actix_web::rt::task::spawn_blocking({
            let name = name.clone();
            move || store.skip(seq, &name, &reason)
        });
        Box::pin(skipped.into_actor(self).map(move |result, act, ctx| {
            let scope = result.map_err(|e| WalError::Unavailable(e.to_string()))??;
            let Some(scope) = scope else { return Ok(false) };
            warn!(
                "admin: entry {seq} ({scope}) SKIPPED on {name}, which will not apply it: {}",
                msg.reason
            );
            act.parts.progress.settle(msg.instance, &scope, 1);
            act.lanes[msg.instance.0].retry_at = None;
            act.kick(msg.instance, ctx);
            Ok(true)
        }))
    }
}

/// One run of one lane: applies entries until none is left or something stops it.
struct LaneRun {
    parts: Arc<ReplayParts>,
    client: awc::Client,
    instance: InstanceId,
    max_batch: Option<usize>,
}

/// Consecutive entries applied in one request.
struct Batch<'a> {
    entries: Vec<&'a PendingEntry>,
    route: Option<Route>,
    body: Bytes,
}

/// Why a batch was not applied.
enum Refusal {
    /// The instance could not be reached.
    Down(String),
    /// The instance did not answer in time: it may be only slow (probed, not marked down), and
    /// may still apply the batch, which is sent again after a pause (replay is at least once).
    Slow(String),
    /// The instance (or the proxy) refused it.
    Rejected(String),
    /// The instance applied it, but the log could not record what that implies (a mapping):
    /// not the entry's fault, so not counted as an attempt.
    Store(WalError),
    /// This proxy may not execute any more (it lost or could not renew the lease): nothing was
    /// sent.
    NotLeader,
}

/// What a lane does after one batch.
enum Step {
    /// Go on with the next batch.
    Next,
    /// An entry failed for good: read the window again, with the entries it blocks left out.
    Reload,
    /// End the run.
    Stop(LaneEnd),
}

/// An entry this instance refused for good, and what it holds back.
struct Blocker {
    seq: Seq,
    claim: Option<Claim>,
}

impl Blocker {
    fn of(row: &EntryRow) -> Self {
        Self { seq: row.seq, claim: entry_claim(row) }
    }

    /// Whether the entry `seq` with `claim` must wait: it comes later and its claim conflicts
    /// with this one's (an entry whose route is unknown conflicts with everything).
    fn blocks(&self, seq: Seq, claim: Option<&Claim>) -> bool {
        seq > self.seq
            && match (&self.claim, claim) {
                (Some(a), Some(b)) => a.conflicts(b),
                _ => true,
            }
    }
}

/// Whether any of `blockers` holds `p` back; `p`'s claim is worked out once, and only when
/// something failed on this instance.
fn held_back(blockers: &[Blocker], p: &PendingEntry) -> bool {
    if blockers.is_empty() {
        return false;
    }
    let claim = entry_claim(&p.entry);
    blockers.iter().any(|b| b.blocks(p.entry.seq, claim.as_ref()))
}

/// The claim of a logged entry, widened to whole collections: a refused write of some records
/// holds back every later write of its collection.
fn entry_claim(row: &EntryRow) -> Option<Claim> {
    let method = Method::from_bytes(row.method.as_bytes()).ok()?;
    let route = classify(&method, row.path.split('?').next().unwrap_or_default()).ok()?;
    Some(match Claim::of(&route, &row.body) {
        Claim::Collection { database, collection, .. } => {
            Claim::Collection { database, collection, records: policy::Records::All }
        }
        other => other,
    })
}

impl LaneRun {
    fn name(&self) -> &InstanceName {
        &self.parts.specs[self.instance.0].name
    }

    async fn drain(self) -> (LaneEnd, usize) {
        let max_batch = match self.max_batch {
            Some(n) => n,
            None => self.max_batch_size().await,
        };
        self.parts.counters.active.fetch_add(1, Ordering::Relaxed);
        let end = self.apply_all(max_batch).await;
        self.parts.counters.active.fetch_sub(1, Ordering::Relaxed);
        (end, max_batch)
    }

    async fn max_batch_size(&self) -> usize {
        let url = format!("{}/api/v2/pre-flight-checks", self.parts.specs[self.instance.0].url);
        let answer = match self.client.get(url).send().await {
            Ok(mut response) => response.json::<Value>().await.ok(),
            Err(_) => None,
        };
        answer
            .and_then(|v| v.get("max_batch_size").and_then(Value::as_u64))
            .map_or(DEFAULT_MAX_BATCH, |n| n.max(1) as usize)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WalStore) -> Result<T, WalError> + Send + 'static,
    ) -> Result<T, WalError> {
        let store = self.parts.store.clone();
        actix_web::rt::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| WalError::Unavailable(e.to_string()))?
    }

    async fn apply_all(&self, max_batch: usize) -> LaneEnd {
        let name = self.name().clone();
        'reload: loop {
            // Entries this instance refused for good block the later entries they conflict
            // with (their scope, nested), so a retry can never apply an old write over newer
            // ones; the others go on.
            let lane = name.clone();
            let blockers = match self.blocking(move |s| s.failed_on(&lane)).await {
                Ok(rows) => rows.iter().map(Blocker::of).collect::<Vec<_>>(),
                Err(e) => return self.store_trouble("replay paused", &e),
            };
            let mut after = Seq(0);
            loop {
                let lane = name.clone();
                let read = self.blocking(move |s| s.pending(&lane, after, WINDOW, WINDOW_BYTES));
                let Window { entries, more: full, in_flight } = match read.await {
                    Ok(window) => window,
                    Err(e) => return self.store_trouble("replay paused", &e),
                };
                let Some(last) = entries.last().map(|p| p.entry.seq) else {
                    return if in_flight { LaneEnd::InFlight } else { LaneEnd::Idle };
                };
                after = last;
                let runnable: Vec<PendingEntry> =
                    entries.into_iter().filter(|p| !held_back(&blockers, p)).collect();
                for batch in plan(&runnable, max_batch) {
                    match self.apply_batch(batch).await {
                        Step::Next => {}
                        Step::Reload => continue 'reload,
                        Step::Stop(end) => return end,
                    }
                }
                // Only a backlog is read again at once; new writes wait for the lane's next run,
                // one batch interval after this one started, so that they are applied together.
                match (in_flight, full) {
                    (true, _) => return LaneEnd::InFlight,
                    (false, false) => return LaneEnd::Idle,
                    (false, true) => {}
                }
            }
        }
    }

    /// The log could not be read or written: back off as for an outage, or, for a bug, longer.
    fn store_trouble(&self, what: &str, e: &WalError) -> LaneEnd {
        if let WalError::Fenced(_) = e {
            info!("{what} for {}: {e}", self.name());
            return LaneEnd::Idle;
        }
        warn!("{what} for {}: {e}", self.name());
        match e {
            WalError::Bug(_) => LaneEnd::Backoff(BACKOFF_MAX),
            _ => LaneEnd::Backoff(BACKOFF_BASE * 5),
        }
    }

    /// Applies one batch; a refused merged batch is applied entry by entry to find the culprit.
    async fn apply_batch(&self, batch: Batch<'_>) -> Step {
        match self.send(&batch).await {
            Ok(()) => self.applied(&batch.entries).await,
            Err(Refusal::Down(reason)) => {
                let health = &self.parts.health[self.instance.0];
                health.do_send(ReportFailure { reason: format!("replay: {reason}") });
                warn!("replay to {} stopped: {reason}", self.name());
                Step::Stop(LaneEnd::Down)
            }
            Err(Refusal::Slow(reason)) => {
                let health = &self.parts.health[self.instance.0];
                health.do_send(RequestProbe { reason: format!("replay: {reason}") });
                warn!(
                    "replay to {}: {reason}; probing it, sent again in {SLOW_PAUSE:?}",
                    self.name()
                );
                Step::Stop(LaneEnd::Backoff(SLOW_PAUSE))
            }
            Err(Refusal::NotLeader) => {
                info!("replay to {} stopped: this proxy does not lead", self.name());
                Step::Stop(LaneEnd::Idle)
            }
            Err(Refusal::Store(e)) => {
                Step::Stop(self.store_trouble(
                    "replay applied an entry but could not record what it implies",
                    &e,
                ))
            }
            Err(Refusal::Rejected(_)) if batch.entries.len() > 1 => {
                for entry in batch.entries {
                    match Box::pin(self.apply_batch(single(entry))).await {
                        Step::Next => {}
                        other => return other,
                    }
                }
                Step::Next
            }
            Err(Refusal::Rejected(reason)) => self.rejected(batch.entries[0], &reason).await,
        }
    }

    async fn applied(&self, entries: &[&PendingEntry]) -> Step {
        let seqs: Vec<Seq> = entries.iter().map(|p| p.entry.seq).collect();
        let name = self.name().clone();
        let moved = match self.blocking(move |s| s.mark_applied(&name, &seqs)).await {
            Ok(moved) => moved.into_iter().collect::<std::collections::HashSet<Seq>>(),
            Err(e) => {
                return Step::Stop(self.store_trouble("replay could not record progress", &e));
            }
        };
        let mut by_scope: BTreeMap<&Scope, i64> = BTreeMap::new();
        for p in entries.iter().filter(|p| moved.contains(&p.entry.seq)) {
            *by_scope.entry(&p.entry.scope).or_insert(0) += 1;
        }
        for (scope, n) in by_scope {
            self.parts.progress.settle(self.instance, scope, n);
        }
        self.parts.counters.total.fetch_add(entries.len() as u64, Ordering::Relaxed);
        Step::Next
    }

    async fn rejected(&self, pending: &PendingEntry, reason: &str) -> Step {
        let (name, seq, error) = (self.name().clone(), pending.entry.seq, reason.to_string());
        let max = self.parts.max_retries;
        let failed = match self.blocking(move |s| s.record_attempt(&name, seq, &error, max)).await {
            Ok(failed) => failed,
            Err(e) => {
                return Step::Stop(self.store_trouble("replay could not record an attempt", &e));
            }
        };
        let entry = &pending.entry;
        if failed {
            error!(
                "replay to {}: entry {} ({} {}) FAILED after {} attempts: {reason}; later writes of {} wait on this instance until an admin retries or skips it (GET /admin/wal/failed)",
                self.name(),
                entry.seq,
                entry.kind,
                entry.path,
                pending.attempts + 1,
                entry.scope,
            );
            // Later entries of its scope now wait; the rest go on.
            return Step::Reload;
        }
        let pause =
            BACKOFF_BASE.saturating_mul(1 << pending.attempts.clamp(0, 16)).min(BACKOFF_MAX);
        warn!(
            "replay to {}: entry {} ({}) refused (attempt {}): {reason}; retrying in {pause:?}",
            self.name(),
            entry.seq,
            entry.kind,
            pending.attempts + 1
        );
        Step::Stop(LaneEnd::Backoff(pause))
    }

    /// One request to this lane's instance: its status and whole answer.
    async fn call(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Refusal> {
        // Right before sending: a proxy whose lease lapsed sends nothing more.
        if !self.parts.leadership.may_execute() {
            return Err(Refusal::NotLeader);
        }
        let sent = self
            .client
            .request(method, format!("{base}{path}"))
            .insert_header(("content-type", "application/json"))
            .send_body(FencedBody::new(body, &self.parts.leadership))
            .await;
        let timeout = self.parts.write_timeout;
        let leadership = &self.parts.leadership;
        let failed = |e: UpstreamError| match e {
            // The body was held back: nothing reached the instance.
            _ if !leadership.may_execute() => Refusal::NotLeader,
            UpstreamError::Timeout(_) => Refusal::Slow(e.to_string()),
            e => Refusal::Down(e.to_string()),
        };
        let mut response = sent.map_err(|e| failed(upstream::send_error(e, timeout)))?;
        let status = response.status();
        let answer = response.body().limit(upstream::MAX_RESPONSE_BYTES).await.map_err(|e| {
            failed(match e {
                PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    UpstreamError::Timeout(timeout)
                }
                e => UpstreamError::Broken(format!("reading the answer: {e}")),
            })
        })?;
        Ok((status, answer))
    }

    async fn send(&self, batch: &Batch<'_>) -> Result<(), Refusal> {
        let first = &batch.entries[0].entry;
        let Some(route) = &batch.route else {
            return Err(Refusal::Rejected(format!(
                "entry {}: `{} {}` is not a route this version knows",
                first.seq, first.method, first.path
            )));
        };
        let table = &self.parts.table;
        if let Some(id) = route.collection_id()
            && table.to_instance(id, self.instance) == Translation::Unknown
        {
            let parts = &self.parts;
            let handles = (&parts.mapping, &*parts.progress);
            match discover(&self.client, &parts.specs, route, id, handles).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Refusal::Rejected(format!("no instance has collection {id}")));
                }
                // An instance could not be asked: not this entry's fault.
                Err(DiscoveryError::Instance(e)) => {
                    return Err(Refusal::Down(format!("mapping collection {id}: {e}")));
                }
                Err(DiscoveryError::Store(e)) => return Err(Refusal::Store(e)),
            }
        }
        if let Some(id) = route.collection_id()
            && table.to_instance(id, self.instance) == Translation::Missing
        {
            let (parts, spec) = (&self.parts, &self.parts.specs[self.instance.0]);
            match locate(&self.client, spec, table, id, &parts.mapping).await {
                Ok(true) => {
                    info!("{}: collection {id} found by its name; its id is mapped", self.name())
                }
                // Not there: the entry is refused below, as before.
                Ok(false) => {}
                Err(DiscoveryError::Instance(e)) => {
                    return Err(Refusal::Down(format!("looking up collection {id}: {e}")));
                }
                Err(DiscoveryError::Store(e)) => return Err(Refusal::Store(e)),
            }
        }
        let prepared = prepare(route, &first.path, &batch.body, self.instance, table, true)
            .map_err(|e| Refusal::Rejected(e.to_string()))?;
        let method = Method::from_bytes(first.method.as_bytes()).map_err(|_| {
            Refusal::Rejected(format!("entry {}: unknown method `{}`", first.seq, first.method))
        })?;
        let base = &self.parts.specs[self.instance.0].url;
        let mut body = prepared.body.clone();
        if let Some(check) = &prepared.presence {
            let (status, answer) =
                self.call(Method::POST, base, &check.get_path, check.get_body.clone()).await?;
            if !status.is_success() {
                return Err(rejected(status, &answer));
            }
            match PresenceCheck::keep_present(&body, &answer) {
                Ok(Present::Send(kept)) => body = kept,
                Ok(Present::Refused(message)) => return Err(Refusal::Rejected(message)),
                // None of its ids is there: the update changes nothing on this instance, unless
                // its embeddings do not fit the collection.
                Ok(Present::Absent { embedding_length }) => {
                    let Some(length) = embedding_length else { return Ok(()) };
                    let (status, collection) =
                        self.call(Method::GET, base, &check.collection_path, Bytes::new()).await?;
                    if !status.is_success() {
                        return Err(rejected(status, &collection));
                    }
                    return match PresenceCheck::dimension_refusal(&collection, length) {
                        Some(message) => Err(Refusal::Rejected(message)),
                        None => Ok(()),
                    };
                }
                Err(e) => return Err(Refusal::Rejected(format!("checking the update's ids: {e}"))),
            }
        }
        let (status, answer) = self.call(method, base, &prepared.path, body).await?;
        // Replay is at least once: a delete of what is gone, or a create of a tenant or
        // database that exists, is done already.
        let already_done = matches!(
            (status.as_u16(), route.op),
            (
                404,
                Operation::DeleteRecords | Operation::DeleteCollection | Operation::DeleteDatabase
            ) | (409, Operation::CreateTenant | Operation::CreateDatabase)
        );
        if !status.is_success() && !already_done {
            return Err(rejected(status, &answer));
        }
        let recorded = first
            .response
            .as_deref()
            .and_then(|r| serde_json::from_slice::<Value>(r).ok())
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
        let canonical = match recorded {
            Some(id) => Some(id),
            None if route.op == Operation::CreateCollection => {
                let seq = first.seq;
                let names =
                    self.blocking(move |s| s.applied_on(seq)).await.map_err(Refusal::Store)?;
                let specs = &self.parts.specs;
                let created_on: Vec<InstanceId> = specs
                    .iter()
                    .filter(|spec| names.contains(&spec.name))
                    .map(|spec| spec.id)
                    .collect();
                known_by_name(route, &prepared.body, (self.instance, &created_on), table)
            }
            None => None,
        };
        let changes = identity_changes(
            route,
            &prepared.body,
            &answer,
            self.instance,
            table,
            canonical.as_deref(),
        );
        record_changes(changes, &self.parts.mapping).await.map_err(Refusal::Store)
    }
}

/// An instance's refusal, with the start of its answer.
fn rejected(status: StatusCode, answer: &[u8]) -> Refusal {
    let text = String::from_utf8_lossy(answer);
    Refusal::Rejected(format!("answered {status}: {}", text.chars().take(300).collect::<String>()))
}

/// The route of a logged entry; `None` for one this version does not know.
fn route_of(p: &PendingEntry) -> Option<Route> {
    Method::from_bytes(p.entry.method.as_bytes())
        .ok()
        .and_then(|m| classify(&m, p.entry.path.split('?').next().unwrap_or_default()).ok())
}

/// A batch of one entry. An entry whose route this version does not know keeps no route, and
/// is refused when sent.
fn single(p: &PendingEntry) -> Batch<'_> {
    Batch { entries: vec![p], route: route_of(p), body: Bytes::from(p.entry.body.clone()) }
}

/// Entries being merged into one request: the first one's route, and their records.
struct Merging<'a> {
    entries: Vec<&'a PendingEntry>,
    route: Route,
    records: Records<'a>,
}

impl<'a> Merging<'a> {
    fn into_batch(self) -> Batch<'a> {
        match self.entries.as_slice() {
            [one] => single(one),
            _ => {
                Batch { body: self.records.body(), entries: self.entries, route: Some(self.route) }
            }
        }
    }
}

/// Splits ready entries into batches: consecutive adds, upserts or id-only deletes of one
/// collection merge into one request of at most `max_batch` records; anything else goes alone.
fn plan(ready: &[PendingEntry], max_batch: usize) -> Vec<Batch<'_>> {
    let mut batches: Vec<Batch<'_>> = Vec::new();
    let mut merging: Option<Merging<'_>> = None;
    for p in ready {
        let route = route_of(p);
        let Some((route, records)) =
            route.and_then(|r| Records::parse(r.op, &p.entry.body).map(|records| (r, records)))
        else {
            batches.extend(merging.take().map(Merging::into_batch));
            batches.push(single(p));
            continue;
        };
        if let Some(open) = merging.as_mut()
            && open.entries[0].entry.path == p.entry.path
            && open.route.op == route.op
            && open.records.fits(&records, max_batch)
        {
            open.records.absorb(records, route.op);
            open.entries.push(p);
            continue;
        }
        batches.extend(merging.take().map(Merging::into_batch));
        merging = Some(Merging { entries: vec![p], route, records });
    }
    batches.extend(merging.take().map(Merging::into_batch));
    batches
}

/// The records of an add, upsert or id-only delete, column by column, as the JSON text of each
/// value in the entries' bodies: merging copies no value, and parses none but the ids.
#[derive(Debug)]
struct Records<'a> {
    columns: BTreeMap<&'static str, Vec<&'a RawValue>>,
    len: usize,
    /// Position of each id in the columns (its first occurrence).
    positions: HashMap<String, usize>,
}

/// Record columns Chroma accepts as parallel lists.
const COLUMNS: [&str; 5] = ["ids", "embeddings", "documents", "metadatas", "uris"];

impl<'a> Records<'a> {
    fn parse(op: Operation, body: &'a [u8]) -> Option<Self> {
        if !matches!(op, Operation::Add | Operation::Upsert | Operation::DeleteRecords) {
            return None;
        }
        let object: BTreeMap<String, &'a RawValue> = serde_json::from_slice(body).ok()?;
        let ids: Vec<&'a RawValue> = serde_json::from_str(object.get("ids")?.get()).ok()?;
        let len = ids.len();
        let mut positions = HashMap::with_capacity(len);
        for (n, id) in ids.iter().enumerate() {
            positions.entry(serde_json::from_str::<String>(id.get()).ok()?).or_insert(n);
        }
        let mut columns = BTreeMap::new();
        for (key, value) in object {
            if value.get() == "null" {
                continue;
            }
            // A where filter, base64 embeddings, or anything unusual: not merged.
            let column = COLUMNS.iter().find(|c| **c == key)?;
            let values: Vec<&'a RawValue> = serde_json::from_str(value.get()).ok()?;
            if values.len() != len {
                return None;
            }
            columns.insert(*column, values);
        }
        (op != Operation::DeleteRecords || columns.len() == 1).then_some(Self {
            columns,
            len,
            positions,
        })
    }

    fn fits(&self, next: &Records<'_>, max_batch: usize) -> bool {
        self.len + next.len <= max_batch && self.columns.keys().eq(next.columns.keys())
    }

    /// Appends `next` in place, in time linear in `next`: for add (and delete) the first record
    /// of an id wins, for upsert the last one replaces it where it stands.
    fn absorb(&mut self, mut next: Records<'a>, op: Operation) {
        // Each record of `next` by its index, with where its id already stands, if anywhere.
        let mut order: Vec<(usize, String, Option<usize>)> = std::mem::take(&mut next.positions)
            .into_iter()
            .map(|(id, n)| {
                let existing = self.positions.get(&id).copied();
                (n, id, existing)
            })
            .collect();
        order.sort_unstable_by_key(|(n, ..)| *n);
        for (key, new) in &next.columns {
            let Some(old) = self.columns.get_mut(key) else { continue };
            for (n, _, existing) in &order {
                match existing {
                    Some(at) if op == Operation::Upsert => old[*at] = new[*n],
                    Some(_) => {}
                    None => old.push(new[*n]),
                }
            }
        }
        for (_, id, existing) in order {
            if existing.is_none() {
                self.positions.insert(id, self.len);
                self.len += 1;
            }
        }
    }

    /// The merged request's body: each value's text as it was logged.
    fn body(&self) -> Bytes {
        let size: usize =
            self.columns.values().flatten().map(|v| v.get().len() + 1).sum::<usize>() + 64;
        let mut out = String::with_capacity(size);
        out.push('{');
        for (n, (key, values)) in self.columns.iter().enumerate() {
            out.push_str(if n == 0 { "\"" } else { ",\"" });
            out.push_str(key);
            out.push_str("\":[");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(value.get());
            }
            out.push(']');
        }
        out.push('}');
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wal::models::{EntryRow, EntryState};

    const PATH: &str =
        "/api/v2/tenants/t/databases/d/collections/11111111-2222-3333-4444-555555555555";

    fn entry(seq: i64, kind: &str, body: Value) -> PendingEntry {
        PendingEntry {
            entry: EntryRow {
                seq: Seq(seq),
                txn_id: format!("t{seq}"),
                idempotency_key: None,
                kind: kind.into(),
                method: "POST".into(),
                path: format!("{PATH}/{kind}"),
                body: body.to_string().into_bytes(),
                scope: Scope::Collection("c".into()),
                state: EntryState::Committed,
                status: Some(200),
                response: None,
                error: None,
                created_ms: 0,
                updated_ms: 0,
            },
            attempts: 0,
        }
    }

    fn body(batch: &Batch<'_>) -> Value {
        serde_json::from_slice(&batch.body).unwrap()
    }

    #[test]
    fn a_full_window_of_adds_is_one_request_in_log_order() {
        let ready: Vec<PendingEntry> = (0..2000)
            .map(|i| entry(i, "add", json!({"ids": [format!("r{i}")], "embeddings": [[i]]})))
            .collect();
        let batches = plan(&ready, 5461);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].entries.len(), 2000);
        let merged = body(&batches[0]);
        let ids: Vec<String> = (0..2000).map(|i| format!("r{i}")).collect();
        let embeddings: Vec<Value> = (0..2000).map(|i| json!([i])).collect();
        assert_eq!(merged, json!({"ids": ids, "embeddings": embeddings}));
    }

    #[test]
    fn consecutive_adds_merge_and_the_first_of_an_id_wins() {
        let ready = vec![
            entry(1, "add", json!({"ids": ["a"], "embeddings": [[1.0]], "documents": ["first"]})),
            entry(
                2,
                "add",
                json!({"ids": ["b", "a"], "embeddings": [[2.0], [3.0]], "documents": ["b", "second"]}),
            ),
        ];
        let batches = plan(&ready, 100);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            body(&batches[0]),
            json!({"ids": ["a", "b"], "embeddings": [[1.0], [2.0]], "documents": ["first", "b"]})
        );
    }

    #[test]
    fn upserts_merge_and_the_last_of_an_id_wins() {
        let ready = vec![
            entry(1, "upsert", json!({"ids": ["a", "b"], "embeddings": [[1.0], [2.0]]})),
            entry(2, "upsert", json!({"ids": ["a"], "embeddings": [[9.0]]})),
        ];
        let batches = plan(&ready, 100);
        assert_eq!(body(&batches[0]), json!({"ids": ["a", "b"], "embeddings": [[9.0], [2.0]]}));
    }

    #[test]
    fn other_kinds_size_limits_and_filters_break_batches() {
        let ready = vec![
            entry(1, "add", json!({"ids": ["a"], "embeddings": [[1.0]]})),
            entry(2, "upsert", json!({"ids": ["a"], "embeddings": [[2.0]]})),
            entry(3, "delete", json!({"ids": ["a"]})),
            entry(4, "delete", json!({"ids": ["b"]})),
            entry(5, "delete", json!({"where": {"k": 1}})),
            entry(6, "add", json!({"ids": ["c"], "embeddings": [[1.0]]})),
            entry(7, "add", json!({"ids": ["d"], "embeddings": [[1.0]]})),
        ];
        let sizes: Vec<usize> = plan(&ready, 1).iter().map(|b| b.entries.len()).collect();
        assert_eq!(sizes, [1, 1, 1, 1, 1, 1, 1], "max_batch 1 merges nothing");
        let sizes: Vec<usize> = plan(&ready, 100).iter().map(|b| b.entries.len()).collect();
        assert_eq!(sizes, [1, 1, 2, 1, 2]);
    }

    #[test]
    fn merged_values_keep_the_text_they_were_logged_with() {
        let raw = |seq: i64, text: &str| {
            let mut p = entry(seq, "add", json!({}));
            p.entry.body = text.as_bytes().to_vec();
            p
        };
        let ready = vec![
            raw(
                1,
                r#"{"ids":["a"],"embeddings":[[1e-7, 0.10000000149011612]],"documents":["caf\u00e9"],"metadatas":null}"#,
            ),
            raw(2, r#"{"documents":["x\"y"],"ids":["b"],"embeddings":[[-0.0,2.50]]}"#),
        ];
        let batches = plan(&ready, 100);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            std::str::from_utf8(&batches[0].body).unwrap(),
            r#"{"documents":["caf\u00e9","x\"y"],"embeddings":[[1e-7, 0.10000000149011612],[-0.0,2.50]],"ids":["a","b"]}"#
        );
        assert_eq!(body(&batches[0])["documents"], json!(["café", "x\"y"]));
    }
}
