//! The fault-schedule driver (issue 5): real primary, replica, PostgreSQL and two proxies on one
//! WAL (issue 13); concurrent writers through both proxies; a seeded schedule of `kill -9`,
//! `SIGSTOP` and `pg_ctl stop` of any one or two of them (the leader proxy among them, and the
//! follower now and then); then heal, wait for catch-up, and check every instance against what
//! the writers were told. Never asserts by itself: it reports, and the caller decides.

pub mod schedule;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Chroma, DB, Postgres, Proxy, fingerprint_deep, get, post, try_request};
use schedule::{Fault, Rng, Schedule, Target};
use writer::{Answer, Collection, Control, Role, Shared, Tenant, Writer, send};

/// The concurrent writers of a run, by role: record writers, and the writers that conflict
/// with them on purpose (collection delete and recreate, rename and metadata, tenants).
const ROLES: [Role; 6] =
    [Role::Records, Role::Records, Role::Records, Role::Churn, Role::Rename, Role::Tenants];
/// Resets in a reset schedule.
const RESETS: usize = 2;
/// Longest time a reset is retried (writers paused) before the run gives up on the oracle.
const RESET_DEADLINE: Duration = Duration::from_secs(120);
/// Longest wait for the log to drain and the instances to agree after healing.
const SETTLE: Duration = Duration::from_secs(90);

/// What one run found.
#[derive(Default)]
pub struct Report {
    pub acknowledged: u64,
    pub uncertain: u64,
    pub lost: Vec<String>,
    pub divergent: Vec<String>,
    pub resurrected: Vec<String>,
    pub stuck: Vec<String>,
    pub refused: Vec<String>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.divergent.is_empty()
            && self.resurrected.is_empty()
            && self.stuck.is_empty()
            && self.refused.is_empty()
    }

    /// Everything that went wrong, one line each.
    pub fn problems(&self) -> String {
        let groups = [
            ("lost", &self.lost),
            ("divergent", &self.divergent),
            ("resurrected", &self.resurrected),
            ("stuck", &self.stuck),
            ("refused", &self.refused),
        ];
        let lines = groups
            .iter()
            .flat_map(|(what, items)| items.iter().map(move |i| format!("{what}: {i}")));
        lines.collect::<Vec<_>>().join("\n")
    }
}

/// The processes of one run: two proxies on one WAL, writers spread over both.
struct Cluster {
    primary: Chroma,
    replica: Chroma,
    postgres: Postgres,
    proxies: [Proxy; 2],
    /// The proxy that led when the current step began: its `Proxy` faults hit it, its
    /// `Follower` faults the other one.
    leading: usize,
}

impl Cluster {
    fn start() -> Self {
        let primary = Chroma::start("primary");
        let replica = Chroma::start("replica");
        let postgres = Postgres::start();
        let db = postgres.url();
        let proxy = |id| {
            Proxy::start(
                &primary,
                &[&replica],
                &[
                    ("DATABASE_URL", &db),
                    ("PROXY_ID", id),
                    ("LEASE_TTL", "2s"),
                    ("CHECK_INTERVAL", "500ms"),
                    ("REQUEST_TIMEOUT", "3"),
                    ("WRITE_TIMEOUT", "3"),
                ],
            )
        };
        let a = proxy("a");
        let b = proxy("b");
        Self { primary, replica, postgres, proxies: [a, b], leading: 0 }
    }

    /// Before a step's faults: finds the proxy that leads now (by its own `/status`; the first
    /// when neither says so).
    fn begin_step(&mut self) {
        let leads = |p: &Proxy| {
            let status = try_request("GET", &format!("{}/status", p.url()), &[], None);
            status.is_ok_and(|s| s.body["proxy"]["role"] == "leader")
        };
        self.leading = self.proxies.iter().position(leads).unwrap_or(0);
    }

    fn proxy_of(&self, target: Target) -> usize {
        if target == Target::Proxy { self.leading } else { 1 - self.leading }
    }

    fn hit(&mut self, target: Target, fault: Fault) {
        match (target, fault) {
            (Target::Primary, Fault::Kill) => self.primary.kill9(),
            (Target::Primary, Fault::Pause) => self.primary.sigstop(),
            (Target::Replica, Fault::Kill) => self.replica.kill9(),
            (Target::Replica, Fault::Pause) => self.replica.sigstop(),
            (Target::Proxy | Target::Follower, fault) => {
                let i = self.proxy_of(target);
                match fault {
                    Fault::Kill => self.proxies[i].kill9(),
                    Fault::Pause => self.proxies[i].sigstop(),
                }
            }
            (Target::Postgres, Fault::Kill) => self.postgres.crash(),
            (Target::Postgres, Fault::Pause) => self.postgres.stop(),
        }
    }

    fn heal(&mut self, target: Target, fault: Fault) {
        match (target, fault) {
            (Target::Primary, Fault::Kill) => start_again(&mut self.primary),
            (Target::Primary, Fault::Pause) => self.primary.sigcont(),
            (Target::Replica, Fault::Kill) => start_again(&mut self.replica),
            (Target::Replica, Fault::Pause) => self.replica.sigcont(),
            (Target::Proxy | Target::Follower, fault) => {
                let i = self.proxy_of(target);
                match fault {
                    Fault::Kill => self.proxies[i].spawn(),
                    Fault::Pause => self.proxies[i].sigcont(),
                }
            }
            (Target::Postgres, _) => self.postgres.start_again(),
        }
    }
}

/// Starts a killed Chroma again. Chroma 1.5.9 drops its tables one by one on a reset, outside a
/// transaction (`SqliteDb::reset`): killed in the middle of one, it cannot open its data again
/// ("table ... already exists"). An operator then empties its directory, and the proxy seeds
/// the instance from the other one; so does this.
fn start_again(chroma: &mut Chroma) {
    let Err(why) = chroma.try_spawn() else { return };
    assert!(why.contains("already exists"), "chroma {} did not start again: {why}", chroma.name);
    eprintln!("chroma {} was killed during a reset and cannot open its data: emptied", chroma.name);
    chroma.empty_data();
    chroma.spawn();
}

/// Runs the schedule of `seed` and checks the outcome; with `resets`, [`RESETS`] resets at
/// seeded times, each with every writer paused, run alongside the faults.
pub fn run(seed: u64, resets: bool) -> Report {
    let schedule = Schedule::draw(seed);
    let mut cluster = Cluster::start();
    let proxy_url = cluster.proxies[0].url();
    let urls: Vec<String> = cluster.proxies.iter().map(Proxy::url).collect();
    let shared = post(&format!("{proxy_url}{DB}/collections"), json!({ "name": "shared" }));
    assert_eq!(shared.status, 200, "{shared:?}");
    let shared = Shared {
        generation: 0,
        name: "shared".into(),
        id: shared.body["id"].as_str().unwrap().to_string(),
    };
    let writers: Vec<Writer> = ROLES
        .iter()
        .enumerate()
        .map(|(i, &role)| {
            let proxies = [urls[i % 2].clone(), urls[(i + 1) % 2].clone()];
            Writer::new(i, role, seed, proxies, &shared)
        })
        .collect();
    let control = Arc::new(Control { stop: AtomicBool::new(false), shared: RwLock::new(shared) });
    let writers: Vec<_> = writers
        .into_iter()
        .map(|writer| {
            let control = control.clone();
            std::thread::spawn(move || writer.run(control))
        })
        .collect();
    let resetter = resets.then(|| {
        let (control, proxy_url) = (control.clone(), proxy_url.clone());
        let times = reset_times(seed, &schedule);
        std::thread::spawn(move || reset_at(&times, &proxy_url, &control))
    });
    for step in &schedule.steps {
        std::thread::sleep(step.pause);
        // PostgreSQL heals first: a proxy restarting needs its WAL store.
        let mut faults = step.faults.clone();
        faults.sort_by_key(|(t, _)| *t != Target::Postgres);
        cluster.begin_step();
        for &(target, fault) in &faults {
            cluster.hit(target, fault);
        }
        std::thread::sleep(step.hold);
        for &(target, fault) in &faults {
            cluster.heal(target, fault);
        }
    }
    let reset_problems = resetter.map(|r| r.join().unwrap()).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(1));
    control.stop.store(true, Ordering::Relaxed);
    let writers: Vec<Writer> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut report = Report {
        acknowledged: writers.iter().map(|w| w.acknowledged).sum(),
        uncertain: writers.iter().map(|w| w.uncertain).sum(),
        refused: writers.iter().flat_map(|w| w.refused.iter().cloned()).collect(),
        stuck: reset_problems,
        ..Report::default()
    };
    let settling = Instant::now();
    settle(&cluster, &mut report);
    let settled = settling.elapsed();
    let tenants: Vec<String> =
        writers.iter().flat_map(|w| w.tenants.iter().map(|t| t.name.clone())).collect();
    let print = agreed_fingerprint(&cluster, &tenants, &mut report);
    let debugging = std::env::var("FAULT_DEBUG").is_ok();
    if debugging {
        let agreed = settling.elapsed() - settled;
        eprintln!(
            "seed {seed}: the log settled in {settled:?}, the instances agreed {agreed:?} later"
        );
    }
    check(&print, &writers, &mut report);
    if debugging {
        debug(&print, &writers);
    }
    if !report.clean() || debugging {
        let saved = std::env::temp_dir().join(format!("chroma-ha-faults-seed-{seed}.log"));
        // The proxy's log, then the log of writes as the WAL holds it: what each entry was, how
        // it ended, and where it was applied.
        let entries = cluster.postgres.query(
            "SELECT e.seq, e.kind, e.state, e.status, e.path, e.idempotency_key, \
             string_agg(a.instance || '=' || a.state, ',' ORDER BY a.instance) \
             FROM wal_entries e LEFT JOIN wal_applied a ON a.seq = e.seq \
             GROUP BY e.seq ORDER BY e.seq",
        );
        let mappings = cluster.postgres.query(
            "SELECT canonical_id, instance, instance_id, name FROM collection_map ORDER BY name",
        );
        let _ = std::fs::write(
            &saved,
            format!(
                "{}\n--- WAL entries (seq|kind|state|status|path|key|applied)\n{}\n--- collection_map\n{}\n",
                cluster.proxies.iter().map(Proxy::log).collect::<Vec<_>>().join("\n--- proxy b\n"),
                entries.join("\n"),
                mappings.join("\n")
            ),
        );
        let kind = if resets { " (with resets)" } else { "" };
        eprintln!("{schedule}{kind}\n{}\nproxy log: {}", report.problems(), saved.display());
    }
    report
}

/// With `FAULT_DEBUG` set: what the instances ended with, and what each writer did.
fn debug(print: &Value, writers: &[Writer]) {
    for (name, held) in print.as_object().unwrap() {
        let records = held["ids"].as_array().map_or(0, Vec::len);
        eprintln!("{name}: {records} records, metadata {}", held.get("metadata").unwrap_or(held));
    }
    for w in writers {
        let (acknowledged, uncertain) = (w.acknowledged, w.uncertain);
        let collections = w.collections.len();
        eprintln!(
            "w{} {:?}: {collections} collections, {acknowledged} acknowledged writes, {uncertain} uncertain",
            w.index, w.role
        );
    }
}

/// When the resets of a reset schedule happen: seeded, within the faults' span.
pub fn reset_times(seed: u64, schedule: &Schedule) -> Vec<Duration> {
    let span: Duration = schedule.steps.iter().map(|s| s.pause + s.hold).sum();
    let mut rng = Rng::new(seed ^ 0x7e5e_7000);
    let mut times: Vec<Duration> =
        (0..RESETS).map(|_| rng.millis(1000, span.as_millis().max(1001) as u64)).collect();
    times.sort();
    times
}

/// Resets at these times after the start, each with every writer paused; afterwards the
/// writers go on in a fresh shared collection. Returns what kept the oracle from being exact.
fn reset_at(times: &[Duration], proxy: &str, control: &Control) -> Vec<String> {
    let start = Instant::now();
    for (n, &at) in times.iter().enumerate() {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let generation = n as u64 + 1;
        let mut shared = control.shared.write().unwrap();
        let url = format!("{proxy}/api/v2/reset");
        let Some(_) = send_until_acknowledged("POST", &url, None, &format!("reset-{generation}"))
        else {
            return vec![format!("reset {generation} never acknowledged")];
        };
        let name = format!("shared-g{generation}");
        let url = format!("{proxy}{DB}/collections");
        let body = json!({ "name": name, "get_or_create": true });
        let key = format!("shared-g{generation}");
        let Some(created) = send_until_acknowledged("POST", &url, Some(&body), &key) else {
            return vec![format!("create {name} never acknowledged")];
        };
        let id = created["id"].as_str().unwrap().to_string();
        *shared = Shared { generation, name, id };
    }
    Vec::new()
}

/// Retries (same key) until acknowledged; `None` after [`RESET_DEADLINE`] or a refusal.
fn send_until_acknowledged(
    method: &str,
    url: &str,
    body: Option<&Value>,
    key: &str,
) -> Option<Value> {
    let start = Instant::now();
    while start.elapsed() < RESET_DEADLINE {
        match send(method, url, body, key) {
            Answer::Acknowledged(body) => return Some(body),
            Answer::Refused(why) => {
                eprintln!("{method} {url}: refused: {why}");
                return None;
            }
            Answer::Uncertain => {}
        }
    }
    None
}

/// Waits until the log has nothing pending and no entry failed; what remains is stuck.
fn settle(cluster: &Cluster, report: &mut Report) {
    let url = format!("{}/wal/status", cluster.proxies[0].url());
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < SETTLE {
        last = get(&url).body;
        if last["pending_writes"] == 0 && last["failed_replays"] == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    report.stuck.push(format!("after {SETTLE:?}: {last}"));
}

/// Both instances' fingerprints (with collection metadata and these tenants) once they agree;
/// what still differs after the deadline is divergent.
fn agreed_fingerprint(cluster: &Cluster, tenants: &[String], report: &mut Report) -> Value {
    let start = Instant::now();
    loop {
        let a = fingerprint_deep(&cluster.primary, tenants);
        let b = fingerprint_deep(&cluster.replica, tenants);
        if a == b {
            return a;
        }
        if start.elapsed() > SETTLE {
            let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names.into_iter().filter(|n| a.get(*n) != b.get(*n)) {
                report.divergent.push(format!(
                    "{name}: primary {:?} replica {:?}",
                    a.get(name),
                    b.get(name)
                ));
            }
            return Value::Object(a.clone());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every writer's knowledge against what the instances hold.
fn check(print: &Value, writers: &[Writer], report: &mut Report) {
    let print = print.as_object().unwrap();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for writer in writers {
        let mine = format!("w{}-", writer.index);
        for c in &writer.collections {
            check_collection(print, c, &mine, &mut known, report);
        }
        for t in &writer.tenants {
            check_tenant(print, t, &mut known, report);
        }
    }
    for name in print.keys().filter(|n| !known.contains(*n)) {
        report.resurrected.push(format!("{name}: never created"));
    }
}

fn check_collection(
    print: &serde_json::Map<String, Value>,
    c: &Collection,
    mine: &str,
    known: &mut BTreeSet<String>,
    report: &mut Report,
) {
    let mut names: Vec<String> = c.looks.iter().map(|(n, _)| format!("{}{n}", c.prefix)).collect();
    names.dedup();
    known.extend(names.iter().cloned());
    let found: Vec<(&String, &Value)> =
        names.iter().filter_map(|n| print.get(n).map(|f| (n, f))).collect();
    let (name, found) = match found.as_slice() {
        [] => {
            if !c.exists.contains(&false) {
                report
                    .lost
                    .push(format!("collection {} (acknowledged create)", names.join(" or ")));
            }
            return;
        }
        [one] => *one,
        _ => {
            report.divergent.push(format!("collection under several names: {names:?}"));
            return;
        }
    };
    if !c.exists.contains(&true) {
        report.resurrected.push(format!("collection {name} (acknowledged delete)"));
        return;
    }
    let metadata = found.get("metadata").unwrap_or(&Value::Null);
    let allowed: Vec<&Value> = c
        .looks
        .iter()
        .filter(|(n, _)| format!("{}{n}", c.prefix) == *name)
        .map(|(_, m)| m)
        .collect();
    if !allowed.contains(&metadata) {
        report
            .lost
            .push(format!("collection {name}: metadata {metadata}, acknowledged {allowed:?}"));
    }
    let held = records(found, mine);
    for (id, states) in &c.records {
        let got = match held.get(id.as_str()) {
            None => None,
            Some(Ok(v)) => Some(*v),
            Some(Err(why)) => {
                report.divergent.push(format!("{name}/{id}: {why}, acknowledged {states:?}"));
                continue;
            }
        };
        if states.contains(&got) {
            continue;
        }
        let what = format!("{name}/{id}: holds {got:?}, acknowledged {states:?}");
        if got.is_some() && states == &[None] {
            report.resurrected.push(what);
        } else {
            report.lost.push(what);
        }
    }
    for id in held.keys().filter(|id| !c.records.contains_key(**id)) {
        report.resurrected.push(format!("{name}/{id}: never written"));
    }
}

fn check_tenant(
    print: &serde_json::Map<String, Value>,
    t: &Tenant,
    known: &mut BTreeSet<String>,
    report: &mut Report,
) {
    let key = format!("tenant {}", t.name);
    known.insert(key.clone());
    let Some(databases) = print.get(&key).and_then(Value::as_array) else {
        if !t.exists.contains(&false) {
            report.lost.push(format!("{key} (acknowledged create)"));
        }
        return;
    };
    if !t.exists.contains(&true) {
        report.resurrected.push(format!("{key} (acknowledged delete or reset)"));
        return;
    }
    let held: Vec<&str> = databases.iter().filter_map(Value::as_str).collect();
    for (name, exists) in &t.databases {
        match (held.contains(&name.as_str()), exists.contains(&true), exists.contains(&false)) {
            (true, false, _) => report.resurrected.push(format!("{key}: database {name}")),
            (false, _, false) => report.lost.push(format!("{key}: database {name}")),
            _ => {}
        }
    }
    for name in held.iter().filter(|n| !t.databases.iter().any(|(d, _)| d == *n)) {
        report.resurrected.push(format!("{key}: database {name} never created"));
    }
}

/// `id -> value` of the records of one writer (ids starting with `mine`): the value whose
/// write gave the record its document, embedding and metadata, or why there is none.
fn records<'a>(collection: &'a Value, mine: &str) -> BTreeMap<&'a str, Result<i64, String>> {
    let column = |k: &str, i: usize| collection[k].get(i).unwrap_or(&Value::Null);
    let mut held = BTreeMap::new();
    for (i, id) in collection["ids"].as_array().into_iter().flatten().enumerate() {
        let Some(id) = id.as_str().filter(|id| id.starts_with(mine)) else { continue };
        let (document, metadata) = (column("documents", i), column("metadatas", i));
        let embedding: Option<Vec<f64>> = column("embeddings", i)
            .as_array()
            .map(|e| e.iter().filter_map(Value::as_f64).collect());
        let value = metadata["v"].as_i64().filter(|&v| {
            document.as_str() == Some(&writer::document(id, v))
                && embedding == Some(writer::embedding(v).iter().map(|&x| f64::from(x)).collect())
        });
        let why = || {
            let e = json!(embedding);
            format!("document {document}, embedding {e}, metadata {metadata}: not from one write")
        };
        held.insert(id, value.ok_or_else(why));
    }
    held
}

#[test]
fn the_check_catches_lost_resurrected_mixed_and_phantom_records() {
    let shared = Shared { generation: 0, name: "shared".into(), id: "id".into() };
    let mut writer = Writer::new(0, Role::Records, 1, [String::new(), String::new()], &shared);
    let records = &mut writer.collections[0].records;
    records.insert("w0-r0".into(), vec![Some(1)]);
    records.insert("w0-r1".into(), vec![None]);
    records.insert("w0-r2".into(), vec![None, Some(3)]);
    records.insert("w0-r3".into(), vec![Some(4)]);
    records.insert("w0-r4".into(), vec![Some(6)]);
    let held = |id: &str, v: i64| {
        (json!(id), json!(writer::document(id, v)), json!({"v": v}), json!(writer::embedding(v)))
    };
    let rows = [
        held("w0-r1", 2),
        held("w0-r2", 3),
        held("w0-r3", 5),
        // Metadata of the acknowledged write, document of another one.
        (
            json!("w0-r4"),
            json!(writer::document("w0-r4", 5)),
            json!({"v": 6}),
            json!(writer::embedding(6)),
        ),
        held("w0-r9", 9),
        held("w1-r0", 1),
    ];
    let print = json!({"shared": {
        "ids": rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "documents": rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        "metadatas": rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        "embeddings": rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        "metadata": null,
    }, "stranger": {"ids": [], "metadatas": []}});
    let mut report = Report::default();
    check(&print, &[writer], &mut report);
    assert_eq!(report.lost.len(), 2, "w0-r0 missing, w0-r3 holds another value: {:?}", report.lost);
    assert_eq!(report.divergent.len(), 1, "w0-r4 mixes two writes: {:?}", report.divergent);
    assert_eq!(report.resurrected.len(), 3, "w0-r1, w0-r9, stranger: {:?}", report.resurrected);
}
