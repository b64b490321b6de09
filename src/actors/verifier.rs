//! VerifierActor: checks that every instance holds what the source holds, and repairs one
//! instance on request (DESIGN 13). One job at a time, on the leader only; VERIFY_INTERVAL starts
//! a check by itself.
//!
//! A check compares, per collection of the source (the primary, or else the most caught-up
//! healthy instance) with every other instance: existence, metadata, and the records by chunks
//! of 1,000 sorted ids (hashes of id, document, metadata, embedding: [`crate::verify`]). Reads
//! are paced to VERIFY_RATE records a second per instance.
//!
//! # Ordering with client writes
//!
//! Reading two instances one after the other races the writes of clients and replay, so every
//! difference found is checked again **under the write claims** before it is reported or
//! repaired: the verifier takes the same [`Claim`] a client write of those ids would take
//! (their records, or the collection's database for a collection create, delete or metadata
//! change; the whole database when the collection has no canonical id yet) in the proxy's one
//! [`crate::ordering::WriteOrder`], then waits until the source and the instance have applied
//! every logged write that claim conflicts with ([`crate::progress`]), then reads both again.
//! While it holds the claim no client write of those records is in flight, and none is owed:
//! what still differs is a real divergence, not a write in flight or a replay backlog.
//!
//! A repair writes the target under that same claim, from the values it has just read on the
//! source: the source's records for missing or different ids (the different ones deleted
//! first, since an upsert merges metadata), deletes for extra ones. So for a record a client
//! writes during the repair, either the client's write took its claim first (then the repair
//! waited until it was applied on both instances and copies the client's value), or the repair
//! did (then the client's write is logged after the repair wrote, and executes and replays
//! over it on every instance, in log order). Either way the record ends as the client wrote it
//! everywhere. Repair writes are not logged: they make one instance equal to another, which
//! the log already describes; they are sent only while this proxy may execute, with a fenced
//! body, as client writes are.
//!
//! Never writes to the source, never to an instance other than the repair's, never deletes a
//! collection without `delete_extra` or one named in PROTECTED_COLLECTIONS, and never writes
//! outside a claim.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::Method;
use actix_web::web;
use log::{info, warn};
use serde_json::json;

use crate::apply::effects::record_changes;
use crate::calls::{Calls, Collection, ID_PAGE, Outcome, Place, ok};
use crate::http::{Cluster, Identities, WritePath};
use crate::identity::{CanonicalId, IdentityChange, InstanceCollectionId, Placement};
use crate::instance::{InstanceId, Role};
use crate::policy::{Claim, Records};
use crate::tls::UpstreamTls;
use crate::verify::{
    Chunk, CollectionReport, Filter, InstanceReport, Job, Pace, Record, RecordDiff, RepairCounts,
    Verification, chunk_hash, chunks,
};

/// Start a check, or a repair of `job.instance`; refused while a job runs.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Start(pub Job);

/// What the verifier needs: the cluster, identities and write order it shares with the
/// write path, where it reports, and its settings.
pub struct VerifierParts {
    pub cluster: web::Data<Cluster>,
    pub ids: web::Data<Identities>,
    pub writes: web::Data<WritePath>,
    pub state: Arc<Verification>,
    /// VERIFY_RATE: records a second read from one instance.
    pub rate: u32,
    /// VERIFY_INTERVAL: time between checks started by themselves; zero: never.
    pub interval: Duration,
    pub tls: UpstreamTls,
}

/// Runs checks and repairs, one at a time.
pub struct VerifierActor {
    parts: Arc<VerifierParts>,
}

impl VerifierActor {
    pub fn new(parts: VerifierParts) -> Self {
        Self { parts: Arc::new(parts) }
    }

    fn start(&mut self, job: Job, ctx: &mut Context<Self>) -> Result<(), String> {
        if !self.parts.cluster.leadership.may_execute() {
            return Err("this proxy does not lead".into());
        }
        if !self.parts.state.begin(job.clone()) {
            return Err("a verification or repair is already running".into());
        }
        let run = Run::new(self.parts.clone(), job);
        ctx.spawn(run.go().into_actor(self));
        Ok(())
    }
}

impl Actor for VerifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.parts.interval.is_zero() {
            return;
        }
        ctx.run_interval(self.parts.interval, |act, ctx| {
            if act.parts.cluster.leadership.may_execute() {
                let job = Job::new("verify", Filter::default(), None, false);
                if let Err(e) = act.start(job, ctx) {
                    info!("verify: the scheduled check did not start: {e}");
                }
            }
        });
    }
}

impl Supervised for VerifierActor {
    /// A job whose future died with the actor is ended, so that the next one may start.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.state.update(|job| job.error = Some("the verifier restarted".into()));
        if let Some(job) = self.parts.state.finish() {
            warn!("{}: stopped: the verifier restarted", job.kind);
        }
    }
}

impl Handler<Start> for VerifierActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Start, ctx: &mut Context<Self>) -> Self::Result {
        self.start(msg.0, ctx)
    }
}

/// An empty report on collection `name` of `place`.
fn report(place: &Place, name: &str) -> CollectionReport {
    CollectionReport {
        tenant: place.tenant.clone(),
        database: place.database.clone(),
        collection: name.to_string(),
        ..Default::default()
    }
}

/// One job under way.
struct Run {
    parts: Arc<VerifierParts>,
    calls: Calls,
    paces: RefCell<Vec<Pace>>,
    job: Job,
}

impl Run {
    fn new(parts: Arc<VerifierParts>, job: Job) -> Self {
        let calls = Calls::new(parts.cluster.clone(), &parts.tls);
        let paces = parts.cluster.instances.iter().map(|_| Pace::new(parts.rate)).collect();
        Self { parts, calls, paces: RefCell::new(paces), job }
    }

    async fn go(self) {
        let started = Instant::now();
        if let Err(e) = self.all().await {
            warn!("{}: stopped: {e}", self.job.kind);
            self.parts.state.update(|j| j.error = Some(e));
        }
        let Some(job) = self.parts.state.finish() else { return };
        log_result(&job, started.elapsed());
    }

    fn cluster(&self) -> &Cluster {
        &self.parts.cluster
    }

    fn name(&self, id: InstanceId) -> String {
        self.calls.name(id)
    }

    /// The primary if usable, else the usable instance that owes the fewest writes.
    async fn source(&self) -> Outcome<InstanceId> {
        let snapshots = self.cluster().snapshots().await.map_err(|e| e.to_string())?;
        let backlogs = self.cluster().progress.backlogs();
        let usable: Vec<InstanceId> = snapshots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.healthy)
            .map(|(i, _)| InstanceId(i))
            .collect();
        usable
            .iter()
            .find(|id| self.cluster().instances[id.0].spec.role == Role::Primary)
            .or_else(|| usable.iter().min_by_key(|id| backlogs[id.0]))
            .copied()
            .ok_or_else(|| "no usable instance to take as the source".to_string())
    }

    async fn all(&self) -> Outcome<()> {
        let source = self.source().await?;
        let targets: Vec<InstanceId> = match &self.job.instance {
            Some(name) => {
                let id = self
                    .cluster()
                    .instance(name)
                    .map(|i| i.spec.id)
                    .ok_or_else(|| format!("no instance named `{name}`"))?;
                if id == source {
                    return Err(format!(
                        "{name} is the source: there is nothing to repair it from"
                    ));
                }
                vec![id]
            }
            None => self
                .cluster()
                .instances
                .iter()
                .map(|i| i.spec.id)
                .filter(|i| *i != source)
                .collect(),
        };
        self.parts.state.update(|j| {
            j.source = Some(self.name(source));
            j.instances = targets
                .iter()
                .map(|t| InstanceReport { instance: self.name(*t), ..Default::default() })
                .collect();
        });
        for place in self.places(source).await? {
            self.database(source, &targets, &place).await?;
        }
        Ok(())
    }

    /// Every database of the source the filter admits, in the tenants the proxy knows.
    async fn places(&self, source: InstanceId) -> Outcome<Vec<Place>> {
        let filter = &self.job.filter;
        let mut tenants: BTreeSet<String> =
            self.parts.ids.table.snapshot().into_iter().map(|c| c.tenant).collect();
        tenants.insert("default_tenant".into());
        tenants.extend(filter.tenant.clone());
        let mut places = Vec::new();
        for tenant in tenants.into_iter().filter(|t| filter.admits(t, None, None)) {
            let Some(databases) = self.calls.databases(source, &tenant).await? else { continue };
            for name in databases {
                if filter.admits(&tenant, Some(&name), None) {
                    places.push(Place { tenant: tenant.clone(), database: name });
                }
            }
        }
        Ok(places)
    }

    async fn database(
        &self,
        source: InstanceId,
        targets: &[InstanceId],
        place: &Place,
    ) -> Outcome<()> {
        let filter = &self.job.filter;
        let admitted =
            |c: &Collection| filter.admits(&place.tenant, Some(&place.database), Some(&c.name));
        let ours: Vec<Collection> =
            self.calls.collections(source, place).await?.into_iter().filter(admitted).collect();
        self.parts.state.update(|j| j.collections_total += ours.len() * targets.len());
        for target in targets {
            let theirs: BTreeMap<String, Collection> =
                match self.calls.collections(*target, place).await {
                    Ok(list) => {
                        list.into_iter().filter(admitted).map(|c| (c.name.clone(), c)).collect()
                    }
                    Err(e) => {
                        self.unreadable(*target, place, &ours, &e);
                        continue;
                    }
                };
            for collection in &ours {
                self.calls.leading()?;
                let mut report = report(place, &collection.name);
                if self.job.kind == "repair" {
                    report.repair = Some(RepairCounts::default());
                }
                let there = theirs.get(&collection.name).cloned();
                if let Err(e) =
                    self.collection(source, *target, place, collection, there, &mut report).await
                {
                    report.problems.push(format!("unreadable: {e}"));
                    if let Some(r) = report.repair.as_mut() {
                        r.left.push(format!("not repaired: {e}"));
                    }
                }
                self.file(*target, report);
            }
            let names: HashSet<&str> = ours.iter().map(|c| c.name.as_str()).collect();
            for extra in theirs.values().filter(|c| !names.contains(c.name.as_str())) {
                self.calls.leading()?;
                let report = self.extra_collection(source, *target, place, extra).await;
                self.file(*target, report);
            }
        }
        Ok(())
    }

    /// Compares (and repairs) one collection of the source on one instance.
    async fn collection(
        &self,
        source: InstanceId,
        target: InstanceId,
        place: &Place,
        ours: &Collection,
        theirs: Option<Collection>,
        report: &mut CollectionReport,
    ) -> Outcome<()> {
        let canonical = self.parts.ids.table.to_canonical(source, &ours.id);
        let whole_database = Claim::Database(place.key());
        let mut theirs = theirs;
        if theirs.as_ref().is_none_or(|t| t.metadata != ours.metadata) {
            // Existence and metadata again, under the database's claim (a create, delete or
            // metadata change of a client may be in flight or owed).
            let _turn = self.claimed(&whole_database, &[source, target]).await?;
            let (ours_now, theirs_now) = (
                self.calls.by_name(source, place, &ours.name).await?,
                self.calls.by_name(target, place, &ours.name).await?,
            );
            let Some(ours_now) = ours_now else { return Ok(()) };
            theirs = theirs_now;
            match &theirs {
                None => {
                    report.problems.push("missing".into());
                    let Some(counts) = report.repair.as_mut() else {
                        report.source_count = self.calls.count(source, place, &ours_now).await?;
                        return Ok(());
                    };
                    let created = self.create(target, place, &ours_now, canonical.as_ref()).await?;
                    counts.created = true;
                    info!(
                        "repair: {}: created collection {}/{} with the source's metadata and configuration",
                        self.name(target),
                        place.key(),
                        ours.name
                    );
                    theirs = Some(created);
                }
                Some(t) if t.metadata != ours_now.metadata => {
                    report.problems.push("metadata".into());
                    if let Some(counts) = report.repair.as_mut() {
                        self.set_metadata(target, place, t, &ours_now).await?;
                        counts.metadata_set = true;
                        info!(
                            "repair: {}: collection {}/{}: metadata set to the source's",
                            self.name(target),
                            place.key(),
                            ours.name
                        );
                    }
                }
                Some(_) => {}
            }
        }
        let Some(theirs) = theirs else { return Ok(()) };
        self.records(source, target, place, (ours, &theirs), canonical, report).await
    }

    /// Compares the records chunk by chunk; re-checks (and repairs) differences under claims.
    async fn records(
        &self,
        source: InstanceId,
        target: InstanceId,
        place: &Place,
        (ours, theirs): (&Collection, &Collection),
        canonical: Option<CanonicalId>,
        report: &mut CollectionReport,
    ) -> Outcome<()> {
        let (source_ids, target_ids) = futures_util::future::try_join(
            self.ids(source, place, ours),
            self.ids(target, place, theirs),
        )
        .await?;
        report.source_count = source_ids.len() as u64;
        report.count = target_ids.len() as u64;
        for chunk in chunks(&source_ids, &target_ids) {
            self.calls.leading()?;
            let (a, b) = futures_util::future::try_join(
                self.read(source, place, ours, &chunk),
                self.read(target, place, theirs, &chunk),
            )
            .await?;
            if chunk_hash(&chunk, &a) == chunk_hash(&chunk, &b) {
                continue;
            }
            let suspects = RecordDiff::of(&chunk, &a, &b).ids();
            if suspects.is_empty() {
                continue;
            }
            let claim = match &canonical {
                Some(c) => Claim::Collection {
                    database: place.key(),
                    collection: c.0.clone(),
                    records: Records::Ids(suspects.iter().cloned().collect()),
                },
                None => Claim::Database(place.key()),
            };
            let _turn = self.claimed(&claim, &[source, target]).await?;
            let (a, b) = futures_util::future::try_join(
                self.read(source, place, ours, &suspects),
                self.read(target, place, theirs, &suspects),
            )
            .await?;
            let diff = RecordDiff::of(&suspects, &a, &b);
            if diff.is_empty() {
                continue;
            }
            report.add(&diff);
            if let Some(counts) = report.repair.as_mut() {
                let (written, deleted) = self.fix(target, place, theirs, &diff, &a).await?;
                counts.written += written;
                counts.deleted += deleted;
                info!(
                    "repair: {}: collection {}/{}: {written} records written, {deleted} deleted",
                    self.name(target),
                    place.key(),
                    ours.name
                );
            }
        }
        Ok(())
    }

    /// Makes the target's records of `diff` the source's (`from`), under the caller's claim.
    async fn fix(
        &self,
        target: InstanceId,
        place: &Place,
        theirs: &Collection,
        diff: &RecordDiff,
        from: &Chunk,
    ) -> Outcome<(usize, usize)> {
        let base = format!("{}/collections/{}", place.path(), theirs.id);
        let gone: Vec<&String> = diff.extra.iter().chain(&diff.different).collect();
        if !gone.is_empty() {
            let path = format!("{base}/delete");
            let (status, answer) =
                self.calls.write(target, Method::POST, &path, json!({"ids": gone})).await?;
            ok(status, &answer, &path)?;
        }
        let copied: Vec<(&String, &Record)> = diff
            .missing
            .iter()
            .chain(&diff.different)
            .filter_map(|id| from.get(id).map(|r| (id, r)))
            .collect();
        self.calls.put(target, (place, theirs), "add", &copied).await?;
        Ok((copied.len(), diff.extra.len()))
    }

    /// A collection on the instance that the source lacks: reported; deleted by a repair with
    /// `delete_extra` unless it is protected.
    async fn extra_collection(
        &self,
        source: InstanceId,
        target: InstanceId,
        place: &Place,
        extra: &Collection,
    ) -> CollectionReport {
        let mut report = report(place, &extra.name);
        report.problems.push("extra".into());
        if self.job.kind != "repair" {
            return report;
        }
        let mut counts = RepairCounts::default();
        let protected = self.parts.writes.protected_collections.contains(&extra.name);
        if protected {
            counts
                .left
                .push("extra collection kept: it is protected (PROTECTED_COLLECTIONS)".into());
        } else if !self.job.delete_extra {
            counts.left.push("extra collection kept: delete_extra is false".into());
        } else {
            match self.delete_collection(source, target, place, extra).await {
                Ok(true) => {
                    counts.collection_deleted = true;
                    info!(
                        "repair: {}: deleted extra collection {}/{}",
                        self.name(target),
                        place.key(),
                        extra.name
                    );
                }
                Ok(false) => report.problems.clear(),
                Err(e) => counts.left.push(format!("not deleted: {e}")),
            }
        }
        report.repair = Some(counts);
        report
    }

    /// Deletes `extra` on the target if, under the database's claim, the source still lacks it.
    async fn delete_collection(
        &self,
        source: InstanceId,
        target: InstanceId,
        place: &Place,
        extra: &Collection,
    ) -> Outcome<bool> {
        let _turn = self.claimed(&Claim::Database(place.key()), &[source, target]).await?;
        if self.calls.by_name(source, place, &extra.name).await?.is_some() {
            return Ok(false);
        }
        let path = format!("{}/collections/{}", place.path(), extra.name);
        let (status, answer) =
            self.calls.write(target, Method::DELETE, &path, serde_json::Value::Null).await?;
        ok(status, &answer, &path)?;
        if let Some(canonical) = self.parts.ids.table.to_canonical(target, &extra.id) {
            let dropped = IdentityChange::Dropped { instance: target, canonical: Some(canonical) };
            record_changes(vec![dropped], &self.parts.ids.mapping)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(true)
    }

    /// Creates the source's collection on the target and records its id there.
    async fn create(
        &self,
        target: InstanceId,
        place: &Place,
        ours: &Collection,
        canonical: Option<&CanonicalId>,
    ) -> Outcome<Collection> {
        let mut theirs = self.calls.databases(target, &place.tenant).await?;
        self.calls.ensure_place(target, place, &mut theirs).await?;
        let created = self.calls.create(target, place, ours, false).await?;
        if let Some(canonical) = canonical {
            let placed = IdentityChange::Placed(Placement {
                canonical: canonical.clone(),
                tenant: place.tenant.clone(),
                database: place.database.clone(),
                name: created.name.clone(),
                instance: target,
                local: InstanceCollectionId(created.id.clone()),
            });
            record_changes(vec![placed], &self.parts.ids.mapping)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(created)
    }

    async fn set_metadata(
        &self,
        target: InstanceId,
        place: &Place,
        theirs: &Collection,
        ours: &Collection,
    ) -> Outcome<()> {
        let path = format!("{}/collections/{}", place.path(), theirs.id);
        let body = json!({"new_metadata": ours.metadata});
        let (status, answer) = self.calls.write(target, Method::PUT, &path, body).await?;
        ok(status, &answer, &path)
    }

    /// Every id of the collection on `instance`, paced.
    async fn ids(
        &self,
        instance: InstanceId,
        place: &Place,
        c: &Collection,
    ) -> Outcome<BTreeSet<String>> {
        let mut all = BTreeSet::new();
        loop {
            self.pace(instance, ID_PAGE).await;
            let page = self.calls.id_page(instance, place, c, all.len()).await?;
            self.counted(page.len());
            let last = page.len() < ID_PAGE;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }

    /// The records of `ids` on `instance`, paced.
    async fn read(
        &self,
        instance: InstanceId,
        place: &Place,
        c: &Collection,
        ids: &[String],
    ) -> Outcome<Chunk> {
        self.pace(instance, ids.len()).await;
        let chunk = self.calls.read(instance, place, c, ids).await?;
        self.counted(chunk.len());
        Ok(chunk)
    }

    async fn pace(&self, instance: InstanceId, records: usize) {
        let wait = self.paces.borrow_mut()[instance.0].book(records, Instant::now());
        if !wait.is_zero() {
            actix_web::rt::time::sleep(wait).await;
        }
    }

    fn counted(&self, records: usize) {
        self.parts.state.update(|j| j.records_read += records as u64);
    }

    async fn claimed(
        &self,
        claim: &Claim,
        on: &[InstanceId],
    ) -> Outcome<crate::ordering::Turn<'_>> {
        self.calls.claimed((&self.parts.writes, &self.parts.ids.table), claim, on).await
    }

    /// Every collection of the source counted unreadable on an instance that cannot be listed.
    fn unreadable(&self, target: InstanceId, place: &Place, ours: &[Collection], why: &str) {
        for c in ours {
            let mut report = report(place, &c.name);
            report.problems.push(format!("unreadable: {why}"));
            if self.job.kind == "repair" {
                report.repair = Some(RepairCounts {
                    left: vec![format!("not repaired: {why}")],
                    ..Default::default()
                });
            }
            self.file(target, report);
        }
    }

    /// Adds one collection's report to its instance's.
    fn file(&self, target: InstanceId, report: CollectionReport) {
        let name = self.name(target);
        self.parts.state.update(|job| {
            if !report.problems.iter().any(|p| p == "extra") {
                job.collections_done += 1;
            }
            let Some(instance) = job.instances.iter_mut().find(|i| i.instance == name) else {
                return;
            };
            instance.checked_collections += 1;
            instance.checked_records += report.source_count;
            if !report.problems.is_empty() {
                instance.divergent_collections += 1;
                instance.divergent_chunks += report.divergent_chunks;
                instance.divergent_records += report.divergent_records;
            }
            instance.collections.push(report);
        });
    }
}

/// The result in the log: per instance the figures, per divergent collection what differs and
/// up to 100 ids of each kind.
fn log_result(job: &Job, took: Duration) {
    info!(
        "{}: done in {:.1} s against {}: {} records read{}",
        job.kind,
        took.as_secs_f64(),
        job.source.as_deref().unwrap_or("no source"),
        job.records_read,
        job.error.as_ref().map(|e| format!("; stopped: {e}")).unwrap_or_default()
    );
    for instance in &job.instances {
        info!(
            "{}: {}: {} collections and {} records checked; {} divergent collections, {} chunks, {} records",
            job.kind,
            instance.instance,
            instance.checked_collections,
            instance.checked_records,
            instance.divergent_collections,
            instance.divergent_chunks,
            instance.divergent_records
        );
        for c in instance.collections.iter().filter(|c| !c.problems.is_empty()) {
            warn!(
                "{}: {}: {}/{}/{}: {} (count {} on the source, {} here); missing {:?}, extra {:?}, different {:?}{}",
                job.kind,
                instance.instance,
                c.tenant,
                c.database,
                c.collection,
                c.problems.join(", "),
                c.source_count,
                c.count,
                c.ids.missing,
                c.ids.extra,
                c.ids.different,
                c.repair.as_ref().map(|r| format!("; repair: {r:?}")).unwrap_or_default()
            );
        }
    }
}
