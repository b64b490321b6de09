//! The fault-schedule driver (issue 5): real primary, replica, PostgreSQL and proxy; concurrent
//! writers through the proxy; a seeded schedule of `kill -9`, `SIGSTOP` and `pg_ctl stop` of
//! any one or two of them; then heal, wait for catch-up, and check every instance against what
//! the writers were told. Never asserts by itself: it reports, and the caller decides.

pub mod schedule;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Chroma, DB, Postgres, Proxy, fingerprint, get, post};
use schedule::{Fault, Schedule, Target};
use writer::Writer;

/// Concurrent writers per run.
const WRITERS: usize = 4;
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

/// The processes of one run.
struct Cluster {
    primary: Chroma,
    replica: Chroma,
    postgres: Postgres,
    proxy: Proxy,
}

impl Cluster {
    fn start() -> Self {
        let primary = Chroma::start("primary");
        let replica = Chroma::start("replica");
        let postgres = Postgres::start();
        let db = postgres.url();
        let proxy = Proxy::start(
            &primary,
            &[&replica],
            &[("DATABASE_URL", &db), ("CHECK_INTERVAL", "500ms"), ("REQUEST_TIMEOUT", "3")],
        );
        Self { primary, replica, postgres, proxy }
    }

    fn hit(&mut self, target: Target, fault: Fault) {
        match (target, fault) {
            (Target::Primary, Fault::Kill) => self.primary.kill9(),
            (Target::Primary, Fault::Pause) => self.primary.sigstop(),
            (Target::Replica, Fault::Kill) => self.replica.kill9(),
            (Target::Replica, Fault::Pause) => self.replica.sigstop(),
            (Target::Proxy, Fault::Kill) => self.proxy.kill9(),
            (Target::Proxy, Fault::Pause) => self.proxy.sigstop(),
            (Target::Postgres, Fault::Kill) => self.postgres.crash(),
            (Target::Postgres, Fault::Pause) => self.postgres.stop(),
        }
    }

    fn heal(&mut self, target: Target, fault: Fault) {
        match (target, fault) {
            (Target::Primary, Fault::Kill) => self.primary.spawn(),
            (Target::Primary, Fault::Pause) => self.primary.sigcont(),
            (Target::Replica, Fault::Kill) => self.replica.spawn(),
            (Target::Replica, Fault::Pause) => self.replica.sigcont(),
            (Target::Proxy, Fault::Kill) => self.proxy.spawn(),
            (Target::Proxy, Fault::Pause) => self.proxy.sigcont(),
            (Target::Postgres, _) => self.postgres.start_again(),
        }
    }
}

/// Runs the schedule of `seed` and checks the outcome.
pub fn run(seed: u64) -> Report {
    let schedule = Schedule::draw(seed);
    let mut cluster = Cluster::start();
    let proxy_url = cluster.proxy.url();
    let shared = post(&format!("{proxy_url}{DB}/collections"), json!({ "name": "shared" }));
    assert_eq!(shared.status, 200, "{shared:?}");
    let shared_id = shared.body["id"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let writer = Writer::new(i, seed, proxy_url.clone(), ("shared", &shared_id));
            let stop = stop.clone();
            std::thread::spawn(move || writer.run(stop))
        })
        .collect();
    for step in &schedule.steps {
        std::thread::sleep(step.pause);
        // PostgreSQL heals first: a proxy restarting needs its WAL store.
        let mut faults = step.faults.clone();
        faults.sort_by_key(|(t, _)| *t != Target::Postgres);
        for &(target, fault) in &faults {
            cluster.hit(target, fault);
        }
        std::thread::sleep(step.hold);
        for &(target, fault) in &faults {
            cluster.heal(target, fault);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let writers: Vec<Writer> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut report = Report {
        acknowledged: writers.iter().map(|w| w.acknowledged).sum(),
        uncertain: writers.iter().map(|w| w.uncertain).sum(),
        refused: writers.iter().flat_map(|w| w.refused.iter().cloned()).collect(),
        ..Report::default()
    };
    settle(&cluster, &mut report);
    let print = agreed_fingerprint(&cluster, &mut report);
    check(&print, &writers, &mut report);
    if !report.clean() {
        let saved = std::env::temp_dir().join(format!("chroma-ha-faults-seed-{seed}.log"));
        let _ = std::fs::write(&saved, cluster.proxy.log());
        eprintln!("{schedule}\n{}\nproxy log: {}", report.problems(), saved.display());
    }
    report
}

/// Waits until the log has nothing pending and no entry failed; what remains is stuck.
fn settle(cluster: &Cluster, report: &mut Report) {
    let url = format!("{}/wal/status", cluster.proxy.url());
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

/// Both instances' fingerprints once they agree; the collections that still differ after the
/// deadline are divergent.
fn agreed_fingerprint(cluster: &Cluster, report: &mut Report) -> Value {
    let start = Instant::now();
    loop {
        let (a, b) = (fingerprint(&cluster.primary), fingerprint(&cluster.replica));
        if a == b {
            return a;
        }
        if start.elapsed() > SETTLE {
            let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
            let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names.into_iter().filter(|n| a.get(*n) != b.get(*n)) {
                report.divergent.push(format!(
                    "collection {name}: primary {:?} replica {:?}",
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
    let mut known: Vec<&str> = Vec::new();
    for writer in writers {
        let mine = format!("w{}-", writer.index);
        for c in &writer.collections {
            known.push(&c.name);
            let name = &c.name;
            let Some(found) = print.get(name) else {
                if !c.exists.contains(&false) {
                    report.lost.push(format!("collection {name} (acknowledged create)"));
                }
                continue;
            };
            if !c.exists.contains(&true) {
                report.resurrected.push(format!("collection {name} (acknowledged delete)"));
                continue;
            }
            let held = records(found, &mine);
            for (id, states) in &c.records {
                // Present without a value never matches an expected state.
                let got = held.get(id.as_str()).map(|v| v.unwrap_or(i64::MIN));
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
    }
    for name in print.keys().filter(|n| !known.contains(&n.as_str())) {
        report.resurrected.push(format!("collection {name}: never created"));
    }
}

/// `id -> metadata v` of the records of one writer (ids starting with `mine`).
fn records<'a>(collection: &'a Value, mine: &str) -> BTreeMap<&'a str, Option<i64>> {
    let ids = collection["ids"].as_array().map(Vec::as_slice).unwrap_or_default();
    let metadatas = collection["metadatas"].as_array().map(Vec::as_slice).unwrap_or_default();
    ids.iter()
        .zip(metadatas)
        .filter_map(|(id, m)| Some((id.as_str()?, m["v"].as_i64())))
        .filter(|(id, _)| id.starts_with(mine))
        .collect()
}

#[test]
fn the_check_catches_lost_resurrected_and_phantom_records() {
    let mut writer = Writer::new(0, 1, String::new(), ("shared", "id"));
    let shared = &mut writer.collections[0].records;
    shared.insert("w0-r0".into(), vec![Some(1)]);
    shared.insert("w0-r1".into(), vec![None]);
    shared.insert("w0-r2".into(), vec![None, Some(3)]);
    shared.insert("w0-r3".into(), vec![Some(4)]);
    let print = json!({"shared": {
        "ids": ["w0-r1", "w0-r2", "w0-r3", "w0-r9", "w1-r0"],
        "metadatas": [{"v": 2}, {"v": 3}, {"v": 5}, {"v": 9}, {"v": 1}],
    }, "stranger": {"ids": [], "metadatas": []}});
    let mut report = Report::default();
    check(&print, &[writer], &mut report);
    assert_eq!(report.lost.len(), 2, "w0-r0 missing, w0-r3 holds another value: {:?}", report.lost);
    assert_eq!(report.resurrected.len(), 3, "w0-r1, w0-r9, stranger: {:?}", report.resurrected);
}
