//! Seeding (DESIGN 13) against real Chroma servers: a proxy put in front of a primary full of
//! data created straight on it, with an empty replica, copies the data to the replica while
//! every read through it stays right; writers through the proxy during the copy end as their
//! oracle on both instances; a copy interrupted by a `kill -9` of the proxy finishes after the
//! restart; one interrupted by a `kill -9` of the source never lets the replica serve early;
//! SEED_EMPTY_INSTANCES=false leaves an empty replica alone.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Chroma, DB, Proxy, fingerprint, get, post, python, python_command, python_result,
    spawn_workload, wait_until,
};

/// The database of the test's own tenant.
const TEAM_DB: &str = "/api/v2/tenants/team/databases/work";

/// Whether two fingerprints hold the same collections and records: ids, documents and
/// metadatas exactly, embeddings within one step of the fingerprint's rounding (Chroma moves a
/// cosine-space embedding written back by up to one float step: see `verify::EMBEDDING_STEPS`).
fn equivalent(a: &Value, b: &Value) -> Result<(), String> {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    let names = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    if names(a) != names(b) {
        return Err(format!("collections {:?} vs {:?}", names(a), names(b)));
    }
    for (name, x) in a {
        let y = &b[name];
        for field in ["ids", "documents", "metadatas"] {
            if x[field] != y[field] {
                return Err(format!("{name}: {field} differ"));
            }
        }
        let numbers = |v: &Value| -> Vec<f64> {
            let rows = v["embeddings"].as_array().cloned().unwrap_or_default();
            rows.iter()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                .map(|n| n.as_f64().unwrap())
                .collect()
        };
        let (p, q) = (numbers(x), numbers(y));
        if p.len() != q.len() || p.iter().zip(&q).any(|(u, v)| (u - v).abs() > 1.5e-5) {
            return Err(format!("{name}: embeddings differ"));
        }
    }
    Ok(())
}

/// Waits until both instances hold [`equivalent`] data; answers the first's fingerprint.
fn wait_equivalent(a: &Chroma, b: &Chroma, timeout: Duration) -> Value {
    let mut last = String::new();
    let mut print = Value::Null;
    let done = || {
        print = fingerprint(a);
        match equivalent(&print, &fingerprint(b)) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    };
    let mut done = done;
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} and {} still differ: {last}",
            a.name,
            b.name
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    print
}

/// A primary filled straight with seed_data.py's collections, an empty replica, and a proxy in
/// front of them with these settings.
fn adopting(settings: &[(&str, &str)]) -> (Chroma, Chroma, Proxy) {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    fill(&primary);
    let proxy = Proxy::start(&primary, &[&replica], settings);
    (primary, replica, proxy)
}

/// Fills `instance` straight with seed_data.py's three collections; answers their counts.
fn fill(instance: &Chroma) -> Value {
    python_result(&python("seed_data.py", &[&instance.url()]))
}

fn replica(proxy: &Proxy) -> Value {
    proxy.instance_status("replica")
}

fn serving(proxy: &Proxy) -> bool {
    replica(proxy)["state"] == "healthy"
}

/// Waits until the replica serves and owes nothing.
fn seeded(proxy: &Proxy, timeout: Duration) {
    wait_until("the replica is seeded and caught up", timeout, || {
        let r = replica(proxy);
        r["state"] == "healthy" && r["replication_lag"]["entries"] == 0
    });
}

/// A collection's object straight from an instance.
fn collection(instance: &Chroma, name: &str) -> Value {
    let answer = get(&format!("{}{DB}/collections/{name}", instance.url()));
    assert_eq!(answer.status, 200, "{name} on {}: {:?}", instance.name, answer.body);
    answer.body
}

/// Every collection's metadata and configuration match on both instances.
fn assert_same_collections(a: &Chroma, b: &Chroma) {
    for name in ["docs", "notes", "vectors"] {
        let (x, y) = (collection(a, name), collection(b, name));
        assert_eq!(x["metadata"], y["metadata"], "{name}: metadata");
        assert_eq!(x["configuration_json"], y["configuration_json"], "{name}: configuration");
    }
}

/// The proxy's recent events of `kind` on the replica.
fn events(proxy: &Proxy, kind: &str) -> usize {
    let answer = get(&format!("{}/events", proxy.url()));
    let events = answer.body["events"].as_array().cloned().unwrap_or_default();
    events.iter().filter(|e| e["kind"] == kind && e["instance"] == "replica").count()
}

/// The dashboard's DOM once its scripts have run, in headless Chromium.
fn dashboard_dom(proxy: &Proxy) -> String {
    let out = std::process::Command::new(support::chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", "--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("{}/dashboard", proxy.url()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Records every state `/status` shows for the replica, until stopped.
struct StateLog {
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StateLog {
    fn start(proxy: &Proxy) -> Self {
        let (seen, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let url = format!("{}/status", proxy.url());
        let (log, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                if let Ok(answer) = support::try_request("GET", &url, &[], None) {
                    let instances = answer.body["instances"].as_array().cloned();
                    let state = instances
                        .unwrap_or_default()
                        .into_iter()
                        .find(|i| i["name"] == "replica")
                        .map(|i| i["state"].as_str().unwrap_or("").to_string());
                    log.lock().unwrap().extend(state);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { seen, stop, thread: Some(thread) }
    }

    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn adopting_a_full_primary_seeds_the_empty_replica_while_every_read_stays_right() {
    let primary = Chroma::start("primary");
    let replica_chroma = Chroma::start("replica");
    let counts = fill(&primary);
    assert_eq!(counts["docs"], 1000);
    // 2,000 records at 500 a second: the copy lasts about 3 s, and reads go to the replica
    // first whenever it serves.
    let proxy = Proxy::start(
        &primary,
        &[&replica_chroma],
        &[("READ_REPLICA_RATIO", "1"), ("SEED_RATE", "500"), ("CHECK_INTERVAL", "1")],
    );
    let first = replica(&proxy);
    assert_eq!(first["state"], "seeding", "held from the first request on: {first}");
    let reads = python("seed_reads.py", &[&proxy.url(), &primary.url(), "replica"]);
    let reads = python_result(&reads);
    assert_eq!(reads["wrong"], json!([]), "reads through the proxy: {reads}");
    assert!(reads["rounds_while_seeding"].as_u64().unwrap() >= 1, "{reads}");
    seeded(&proxy, Duration::from_secs(120));
    let print = wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    assert_eq!(print["docs"]["ids"].as_array().unwrap().len(), 1000);
    assert_eq!(print["vectors"]["ids"].as_array().unwrap().len(), 300);
    assert_same_collections(&primary, &replica_chroma);
    let hnsw = &collection(&replica_chroma, "vectors")["configuration_json"]["hnsw"];
    assert_eq!(hnsw["space"], "cosine", "{hnsw}");
    assert_eq!(hnsw["ef_construction"], 150, "{hnsw}");
    assert_eq!(hnsw["max_neighbors"], 24, "{hnsw}");
    let last = &replica(&proxy)["seeding"]["last"];
    assert_eq!(last["records"], 2000, "{last}");
    assert_eq!(last["collections"], 3, "{last}");
    assert_eq!(events(&proxy, "seeding"), 1);
    assert_eq!(events(&proxy, "seeded"), 1);
    // Once seeded, the replica serves reads (READ_REPLICA_RATIO=1).
    let before = proxy.served("replica", "reads");
    let answer = get(&format!("{}{DB}/collections/docs", proxy.url()));
    assert_eq!(answer.status, 200);
    assert!(proxy.served("replica", "reads") > before, "the seeded replica serves reads");
}

#[test]
fn writes_during_the_seeding_end_as_their_oracle_on_both_instances() {
    let (primary, replica_chroma, proxy) =
        adopting(&[("SEED_RATE", "500"), ("CHECK_INTERVAL", "1")]);
    assert_eq!(replica(&proxy)["state"], "seeding");
    // Into a collection being copied, and into new collections, while the copy runs.
    let writer = python_command("seed_writer.py", &[&proxy.url(), "docs", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let workload = spawn_workload(&proxy, "online", 120);
    let written = python_result(&writer.wait_with_output().unwrap());
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(written["failures"], json!([]), "{}", written["failures"]);
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    seeded(&proxy, Duration::from_secs(120));
    let print = wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    support::assert_matches_oracle(&print, &result, "online-");
    let expected = written["expected"].as_object().unwrap();
    let mut ids: Vec<&String> = expected.keys().collect();
    ids.sort();
    let docs = &print["docs"];
    let held: Vec<&str> =
        docs["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(held, ids, "the records of docs on both instances are the writer's");
    for (i, id) in held.iter().enumerate() {
        assert_eq!(docs["documents"][i], expected[*id], "document of {id}");
    }
    assert_same_collections(&primary, &replica_chroma);
}

#[test]
fn a_seeding_cut_by_a_proxy_kill_finishes_after_the_restart() {
    let (primary, replica_chroma, mut proxy) =
        adopting(&[("SEED_RATE", "400"), ("CHECK_INTERVAL", "1")]);
    wait_until("half the records are copied", Duration::from_secs(60), || {
        replica(&proxy)["seeding"]["running"]["records_copied"].as_u64().unwrap_or(0) >= 1000
    });
    proxy.kill9();
    proxy.spawn();
    let after = replica(&proxy);
    assert_eq!(after["state"], "seeding", "still held after the restart: {after}");
    seeded(&proxy, Duration::from_secs(120));
    wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    assert_same_collections(&primary, &replica_chroma);
    let log = proxy.log();
    assert!(log.matches("seeding: replica: copying from primary").count() >= 2, "{log}");
}

#[test]
fn a_seeding_cut_by_a_source_kill_never_lets_the_replica_serve_early() {
    let (mut primary, replica_chroma, proxy) =
        adopting(&[("SEED_RATE", "400"), ("CHECK_INTERVAL", "1")]);
    let states = StateLog::start(&proxy);
    wait_until("half the records are copied", Duration::from_secs(60), || {
        replica(&proxy)["seeding"]["running"]["records_copied"].as_u64().unwrap_or(0) >= 1000
    });
    primary.kill9();
    wait_until("the copy stops and waits for a source", Duration::from_secs(60), || {
        replica(&proxy)["seeding"]["running"]["phase"] == "waiting"
    });
    // With the source gone the half-copied replica is the only instance up, and still serves
    // nothing: a read is refused rather than answered from half the data.
    let answer = get(&format!("{}{DB}/collections/docs", proxy.url()));
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(!serving(&proxy));
    // The dashboard, in a real browser, says so.
    let dom = dashboard_dom(&proxy);
    let row = dom.split("data-instance=\"replica\"").nth(1).unwrap_or_default();
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    assert!(row.contains("seeding") && row.contains("waiting from primary"), "{row}");
    primary.spawn();
    seeded(&proxy, Duration::from_secs(120));
    let mut seen = states.stop();
    seen.push(replica(&proxy)["state"].as_str().unwrap().to_string());
    let first_healthy = seen.iter().position(|s| s == "healthy").unwrap();
    assert!(
        seen[..first_healthy].iter().all(|s| s == "seeding" || s == "checking"),
        "the replica showed only seeding until it was seeded: {seen:?}"
    );
    wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    assert_same_collections(&primary, &replica_chroma);
    assert_eq!(events(&proxy, "seeded"), 1);
}

#[test]
fn with_seeding_off_an_empty_replica_is_left_alone() {
    let (_primary, replica_chroma, proxy) =
        adopting(&[("SEED_EMPTY_INSTANCES", "false"), ("CHECK_INTERVAL", "1")]);
    let r = replica(&proxy);
    assert_eq!(r["state"], "healthy", "{r}");
    assert!(r["seeding"]["running"].is_null() && r["seeding"]["last"].is_null(), "{r}");
    assert!(replica_chroma.collection_names().is_empty(), "nothing was copied");
}

/// A replica whose data is lost while the proxy runs (down, then started on an empty directory,
/// as after a reset that Chroma could not finish) is held when it comes back, seeded from the
/// primary again, and serves the same records under the same canonical ids; writes reach it.
#[test]
fn a_replica_that_comes_back_empty_is_seeded_again() {
    let primary = Chroma::start("primary");
    let mut replica_chroma = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica_chroma],
        &[("READ_REPLICA_RATIO", "1"), ("CHECK_INTERVAL", "1")],
    );
    let counts = python_result(&python("seed_data.py", &[&proxy.url()]));
    assert_eq!(counts["docs"], 1000);
    // And a tenant of its own, with a database and a collection of three records.
    let url = proxy.url();
    let place = format!("{url}{TEAM_DB}");
    assert_eq!(post(&format!("{url}/api/v2/tenants"), json!({"name": "team"})).status, 200);
    let made = post(&format!("{url}/api/v2/tenants/team/databases"), json!({"name": "work"}));
    assert_eq!(made.status, 200, "{made:?}");
    let made = post(&format!("{place}/collections"), json!({"name": "tasks"}));
    assert_eq!(made.status, 200, "{made:?}");
    let tasks = made.body["id"].as_str().unwrap().to_string();
    let records =
        json!({"ids": ["t1", "t2", "t3"], "embeddings": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]});
    assert_eq!(post(&format!("{place}/collections/{tasks}/add"), records).status, 201);
    wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    let docs = get(&format!("{url}{DB}/collections/docs")).body["id"].clone();

    replica_chroma.kill9();
    wait_until("the proxy sees the replica down", Duration::from_secs(30), || {
        replica(&proxy)["healthy"] == false
    });
    replica_chroma.empty_data();
    replica_chroma.spawn();
    assert!(replica_chroma.collection_names().is_empty());
    wait_until("the replica is seeded again", Duration::from_secs(120), || {
        events(&proxy, "seeded") == 1
    });
    seeded(&proxy, Duration::from_secs(60));
    wait_equivalent(&primary, &replica_chroma, Duration::from_secs(60));
    assert_same_collections(&primary, &replica_chroma);
    // The tenant is made there, not only its database (Chroma makes a database of a tenant it
    // lacks), and its collection holds its records.
    let tenant = get(&format!("{}/api/v2/tenants/team", replica_chroma.url()));
    assert_eq!(tenant.status, 200, "{tenant:?}");
    let copied = get(&format!("{}{TEAM_DB}/collections/tasks", replica_chroma.url()));
    assert_eq!(copied.status, 200, "{copied:?}");
    let id = copied.body["id"].as_str().unwrap();
    let count = get(&format!("{}{TEAM_DB}/collections/{id}/count", replica_chroma.url()));
    assert_eq!(count.body, json!(3), "{count:?}");

    // Reads go to the replica first (READ_REPLICA_RATIO=1), under the ids clients already hold.
    let before = proxy.served("replica", "reads");
    let docs = docs.as_str().unwrap();
    let count = get(&format!("{url}{DB}/collections/{docs}/count"));
    assert_eq!((count.status, count.body.clone()), (200, json!(1000)), "{count:?}");
    let count = get(&format!("{place}/collections/{tasks}/count"));
    assert_eq!((count.status, count.body.clone()), (200, json!(3)), "{count:?}");
    assert!(proxy.served("replica", "reads") >= before + 2, "the seeded replica serves reads");
    let add = post(
        &format!("{url}{DB}/collections/{docs}/add"),
        json!({"ids": ["after-seeding"], "embeddings": [vec![0.5; 8]]}),
    );
    assert_eq!(add.status, 201, "{add:?}");
    let print = wait_equivalent(&primary, &replica_chroma, Duration::from_secs(30));
    assert_eq!(print["docs"]["ids"].as_array().unwrap().len(), 1001);
}
