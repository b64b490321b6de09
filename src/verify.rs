//! Verification and repair, the pure parts (DESIGN 13): what a record's hash covers, how the
//! sorted ids of a collection are cut into chunks and compared, which ids differ, the scope an
//! operator asks for, the pace of reads, and the report that `/admin/verify`, `/status`,
//! `/metrics` and the log show.
//!
//! No I/O and no policy on ordering here: the verifier actor ([`crate::actors::verifier`])
//! reads the instances, takes the claims and writes. This module never talks to an instance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Ids per chunk: a chunk's records are read by id from both instances and compared at once.
pub const CHUNK: usize = 1000;
/// Divergent ids listed per collection and instance: enough to start looking, never a dump.
pub const MAX_IDS: usize = 100;

/// One record as an instance answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub document: Value,
    pub metadata: Value,
    pub embedding: Value,
    pub uri: Value,
}

/// Float steps (f32 units in the last place, relative) within which two embeddings' components
/// are the same: Chroma 1.5.9 stores a cosine-space embedding through a normalization that
/// moves some components by one step, so an embedding read from one instance and written to
/// another can come back one step off (a copy through the API cannot be bit-exact there).
pub const EMBEDDING_STEPS: f32 = 4.0;

impl Record {
    /// The same record: document, metadata and uri equal, embeddings equal within
    /// [`EMBEDDING_STEPS`] per component.
    pub fn matches(&self, other: &Self) -> bool {
        self.document == other.document
            && self.metadata == other.metadata
            && self.uri == other.uri
            && same_embedding(&self.embedding, &other.embedding)
    }
}

fn same_embedding(a: &Value, b: &Value) -> bool {
    let (Some(x), Some(y)) = (a.as_array(), b.as_array()) else { return a == b };
    x.len() == y.len()
        && x.iter().zip(y).all(|(u, v)| match (u.as_f64(), v.as_f64()) {
            (Some(u), Some(v)) => {
                let (u, v) = (u as f32, v as f32);
                (u - v).abs() <= EMBEDDING_STEPS * f32::EPSILON * u.abs().max(v.abs())
            }
            _ => u == v,
        })
}

/// SHA-256 of a record's id, document, metadata and embedding (as JSON, keys sorted).
pub fn record_hash(id: &str, record: &Record) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [&Value::String(id.to_string()), &record.document, &record.metadata] {
        hash.update(serde_json::to_vec(part).unwrap_or_default());
        hash.update([0]);
    }
    hash.update(serde_json::to_vec(&record.embedding).unwrap_or_default());
    hash.finalize().into()
}

/// The records of one chunk on one instance, by id.
pub type Chunk = BTreeMap<String, Record>;

/// SHA-256 over the chunk's ids in order and each present record's hash: two instances hold
/// the same records of these ids, bit for bit, exactly when their chunk hashes are equal (and
/// when they are not, [`RecordDiff::of`] tells which differ beyond float steps).
pub fn chunk_hash(ids: &[String], records: &Chunk) -> [u8; 32] {
    let mut hash = Sha256::new();
    for id in ids {
        match records.get(id) {
            Some(record) => hash.update(record_hash(id, record)),
            None => hash.update([0u8; 32]),
        }
    }
    hash.finalize().into()
}

/// How the records of some ids differ on an instance from the source.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RecordDiff {
    /// On the source only.
    pub missing: Vec<String>,
    /// On the instance only.
    pub extra: Vec<String>,
    /// On both, with another document, metadata or embedding.
    pub different: Vec<String>,
}

impl RecordDiff {
    /// Compares the records of `ids` (sorted) on the source and the instance.
    pub fn of(ids: &[String], source: &Chunk, instance: &Chunk) -> Self {
        let mut diff = Self::default();
        for id in ids {
            match (source.get(id), instance.get(id)) {
                (Some(_), None) => diff.missing.push(id.clone()),
                (None, Some(_)) => diff.extra.push(id.clone()),
                (Some(a), Some(b)) if !a.matches(b) => diff.different.push(id.clone()),
                _ => {}
            }
        }
        diff
    }

    /// Every id that differs, sorted.
    pub fn ids(&self) -> Vec<String> {
        let all: BTreeSet<&String> =
            self.missing.iter().chain(&self.extra).chain(&self.different).collect();
        all.into_iter().cloned().collect()
    }

    /// How many ids differ.
    pub fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.different.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The union of both instances' ids, sorted, cut into chunks of [`CHUNK`].
pub fn chunks(source: &BTreeSet<String>, instance: &BTreeSet<String>) -> Vec<Vec<String>> {
    let all: Vec<String> = source.union(instance).cloned().collect();
    all.chunks(CHUNK).map(<[String]>::to_vec).collect()
}

/// What an operator asks to check: everything, or one tenant, database or collection (by name).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub tenant: Option<String>,
    pub database: Option<String>,
    pub collection: Option<String>,
}

impl Filter {
    /// Whether the filter lets this tenant, database or collection through (`None`: any).
    pub fn admits(&self, tenant: &str, database: Option<&str>, collection: Option<&str>) -> bool {
        let ok = |want: &Option<String>, have: Option<&str>| match (want, have) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        ok(&self.tenant, Some(tenant))
            && ok(&self.database, database)
            && ok(&self.collection, collection)
    }
}

/// Reads of one instance, at most `rate` records a second: each read waits until the records
/// read before it have been paid for.
pub struct Pace {
    rate: f64,
    next: Instant,
}

impl Pace {
    /// A pace of `rate` records a second (at least 1).
    pub fn new(rate: u32) -> Self {
        Self { rate: f64::from(rate.max(1)), next: Instant::now() }
    }

    /// How long to wait before reading `records` more at `now`; books them.
    pub fn book(&mut self, records: usize, now: Instant) -> Duration {
        let start = self.next.max(now);
        self.next = start + Duration::from_secs_f64(records as f64 / self.rate);
        start - now
    }
}

/// What was found on one collection of one instance.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CollectionReport {
    pub tenant: String,
    pub database: String,
    pub collection: String,
    /// Records on the source and on the instance, as counted.
    pub source_count: u64,
    pub count: u64,
    /// `missing` (only on the source), `extra` (only on the instance), `metadata`, `records`.
    pub problems: Vec<String>,
    /// Chunks whose hashes differ after the re-check.
    pub divergent_chunks: usize,
    /// Records that differ after the re-check.
    pub divergent_records: usize,
    /// The first [`MAX_IDS`] of each kind.
    pub ids: RecordDiff,
    /// What a repair did here: records written, records deleted, the collection created,
    /// updated or deleted; and what it left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairCounts>,
}

impl CollectionReport {
    /// Whether the instance still differs here after what the repair did.
    pub fn remains(&self) -> bool {
        match &self.repair {
            Some(r) => !r.left.is_empty(),
            None => !self.problems.is_empty(),
        }
    }

    /// Adds the divergent ids of one chunk, keeping [`MAX_IDS`] of each kind.
    pub fn add(&mut self, diff: &RecordDiff) {
        self.divergent_chunks += 1;
        self.divergent_records += diff.len();
        let keep = |into: &mut Vec<String>, from: &[String]| {
            let room = MAX_IDS.saturating_sub(into.len());
            into.extend(from.iter().take(room).cloned());
        };
        keep(&mut self.ids.missing, &diff.missing);
        keep(&mut self.ids.extra, &diff.extra);
        keep(&mut self.ids.different, &diff.different);
        if !self.problems.iter().any(|p| p == "records") {
            self.problems.push("records".into());
        }
    }
}

/// What a repair did on one collection.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairCounts {
    pub written: usize,
    pub deleted: usize,
    pub created: bool,
    pub metadata_set: bool,
    pub collection_deleted: bool,
    /// Differences left, and why (an extra collection kept, a protected one, an error).
    pub left: Vec<String>,
}

/// One instance's result against the source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InstanceReport {
    pub instance: String,
    pub checked_collections: usize,
    pub checked_records: u64,
    pub divergent_collections: usize,
    pub divergent_chunks: usize,
    pub divergent_records: usize,
    /// Every collection checked, divergent or not.
    pub collections: Vec<CollectionReport>,
}

/// A check or a repair, running or done.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// `verify` or `repair`.
    pub kind: &'static str,
    pub filter: Filter,
    /// The instance a repair changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub delete_extra: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub seconds: f64,
    /// The instance compared against.
    pub source: Option<String>,
    /// Collections found on the source (in the filter), and done so far.
    pub collections_total: usize,
    pub collections_done: usize,
    /// Records read so far, over every instance.
    pub records_read: u64,
    /// Why the job could not finish (no source, lost leadership).
    pub error: Option<String>,
    pub instances: Vec<InstanceReport>,
}

impl Job {
    /// A job just started.
    pub fn new(
        kind: &'static str,
        filter: Filter,
        instance: Option<String>,
        delete_extra: bool,
    ) -> Self {
        Self {
            kind,
            filter,
            instance,
            delete_extra,
            started_at: Utc::now(),
            finished_at: None,
            seconds: 0.0,
            source: None,
            collections_total: 0,
            collections_done: 0,
            records_read: 0,
            error: None,
            instances: Vec::new(),
        }
    }

    /// Whether differences remain (or the job could not tell).
    pub fn differs(&self) -> bool {
        self.error.is_some()
            || self.instances.iter().any(|i| i.collections.iter().any(CollectionReport::remains))
    }

    /// The job with only the collections that differ, for `/status`.
    pub fn summary(mut self) -> Self {
        for instance in &mut self.instances {
            instance.collections.retain(|c| !c.problems.is_empty());
        }
        self
    }

    /// Divergent records per instance, for `/metrics`.
    pub fn divergent_records(&self) -> Vec<(String, usize)> {
        self.instances.iter().map(|i| (i.instance.clone(), i.divergent_records)).collect()
    }
}

/// The job running, if any, and the last one finished: shared by the verifier actor (the only
/// writer) and the handlers of `/admin/verify`, `/status` and `/metrics`.
#[derive(Default)]
pub struct Verification {
    state: Mutex<(Option<Job>, Option<Job>)>,
}

impl Verification {
    fn with<R>(&self, f: impl FnOnce(&mut (Option<Job>, Option<Job>)) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The running job and the last finished one.
    pub fn read(&self) -> (Option<Job>, Option<Job>) {
        self.with(|s| s.clone())
    }

    /// Starts `job` unless one runs; answers whether it started.
    pub fn begin(&self, job: Job) -> bool {
        self.with(|s| {
            if s.0.is_some() {
                return false;
            }
            s.0 = Some(job);
            true
        })
    }

    /// Changes the running job.
    pub fn update(&self, f: impl FnOnce(&mut Job)) {
        self.with(|s| {
            if let Some(job) = s.0.as_mut() {
                f(job)
            }
        })
    }

    /// Ends the running job: it becomes the last one.
    pub fn finish(&self) -> Option<Job> {
        self.with(|s| {
            let mut job = s.0.take()?;
            job.finished_at = Some(Utc::now());
            job.seconds = (Utc::now() - job.started_at).num_milliseconds() as f64 / 1000.0;
            s.1 = Some(job.clone());
            Some(job)
        })
    }

    /// Divergent records per instance in the last finished verification (a repair's count is
    /// what it found before repairing, so a repair leaves the gauge to the next check).
    pub fn divergent_records(&self) -> Vec<(String, usize)> {
        self.with(|s| s.1.as_ref().map(Job::divergent_records).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(doc: &str, meta: Value, emb: &[f32]) -> Record {
        Record { document: json!(doc), metadata: meta, embedding: json!(emb), uri: Value::Null }
    }

    fn ids(n: std::ops::Range<usize>) -> Vec<String> {
        n.map(|i| format!("id{i:05}")).collect()
    }

    #[test]
    fn a_hash_covers_id_document_metadata_and_embedding() {
        let base = record("d", json!({"k": 1}), &[0.5, 1.0]);
        let h = record_hash("a", &base);
        assert_eq!(h, record_hash("a", &base.clone()));
        assert_ne!(h, record_hash("b", &base));
        assert_ne!(h, record_hash("a", &record("e", json!({"k": 1}), &[0.5, 1.0])));
        assert_ne!(h, record_hash("a", &record("d", json!({"k": 2}), &[0.5, 1.0])));
        assert_ne!(h, record_hash("a", &record("d", json!({"k": 1}), &[0.5, 1.5])));
        let keys_reordered: Value = serde_json::from_str(r#"{"y":1,"x":2}"#).unwrap();
        let keys_sorted: Value = serde_json::from_str(r#"{"x":2,"y":1}"#).unwrap();
        assert_eq!(
            record_hash("a", &record("d", keys_reordered, &[1.0])),
            record_hash("a", &record("d", keys_sorted, &[1.0])),
            "metadata keys are hashed in one order"
        );
    }

    #[test]
    fn embeddings_one_float_step_apart_are_the_same_record() {
        let a = record("d", json!({}), &[0.697_360_2, 0.753_135, 2.0]);
        let stepped: Vec<f32> = [0.697_360_2f32, 0.753_135, 2.0]
            .iter()
            .map(|x| f32::from_bits(x.to_bits() + 1))
            .collect();
        assert!(a.matches(&record("d", json!({}), &stepped)));
        assert!(!a.matches(&record("d", json!({}), &[0.6974, 0.753_135, 2.0])));
        assert!(!a.matches(&record("d", json!({}), &[0.697_360_2, 0.753_135])));
        assert!(!a.matches(&record("e", json!({}), &stepped)), "documents are exact");
    }

    #[test]
    fn chunks_are_the_sorted_union_in_thousands() {
        let source: BTreeSet<String> = ids(0..2500).into_iter().collect();
        let mut instance = source.clone();
        instance.insert("zz-extra".into());
        let cut = chunks(&source, &instance);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 501]);
        assert_eq!(cut[0][0], "id00000");
        assert_eq!(cut[2].last().unwrap(), "zz-extra");
        assert!(cut.concat().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_diff_names_missing_extra_and_different_ids() {
        let chunk_ids = ids(0..4);
        let source: Chunk =
            chunk_ids[..3].iter().map(|id| (id.clone(), record("d", json!({}), &[1.0]))).collect();
        let mut instance = source.clone();
        instance.remove("id00000");
        instance.insert("id00001".into(), record("changed", json!({}), &[1.0]));
        instance.insert("id00003".into(), record("d", json!({}), &[1.0]));
        assert_ne!(chunk_hash(&chunk_ids, &source), chunk_hash(&chunk_ids, &instance));
        let diff = RecordDiff::of(&chunk_ids, &source, &instance);
        assert_eq!(diff.missing, ["id00000"]);
        assert_eq!(diff.different, ["id00001"]);
        assert_eq!(diff.extra, ["id00003"]);
        assert_eq!(diff.ids(), ["id00000", "id00001", "id00003"]);
        assert!(RecordDiff::of(&chunk_ids, &source, &source).is_empty());
        assert_eq!(chunk_hash(&chunk_ids, &source), chunk_hash(&chunk_ids, &source.clone()));
    }

    #[test]
    fn a_report_keeps_at_most_a_hundred_ids_of_each_kind() {
        let mut report = CollectionReport::default();
        let many = RecordDiff { missing: ids(0..150), extra: vec![], different: ids(0..3) };
        report.add(&many);
        report.add(&many);
        assert_eq!(report.ids.missing.len(), MAX_IDS);
        assert_eq!(report.ids.different.len(), 6);
        assert_eq!((report.divergent_chunks, report.divergent_records), (2, 306));
        assert_eq!(report.problems, ["records"]);
        assert!(report.remains());
        report.repair = Some(RepairCounts::default());
        assert!(!report.remains(), "a repair that left nothing leaves nothing to report");
    }

    #[test]
    fn the_pace_spaces_reads_by_their_size() {
        let mut pace = Pace::new(5000);
        let t0 = Instant::now();
        assert_eq!(pace.book(1000, t0), Duration::ZERO);
        let wait = pace.book(1000, t0);
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.book(1, later), Duration::ZERO, "idle time is not saved up");
    }

    #[test]
    fn the_filter_admits_what_it_names() {
        let f = Filter { tenant: None, database: Some("d".into()), collection: Some("c".into()) };
        assert!(f.admits("t", None, None));
        assert!(f.admits("t", Some("d"), Some("c")));
        assert!(!f.admits("t", Some("e"), None));
        assert!(!f.admits("t", Some("d"), Some("x")));
        assert!(Filter::default().admits("any", Some("db"), Some("name")));
    }
}
