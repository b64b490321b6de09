//! Several proxies on one WAL (DESIGN 12), with real processes: two proxies, real Chroma, real
//! PostgreSQL (and SQLite for two processes on one file).
//!
//! - Clients writing through both proxies at once to one collection: every write acknowledged,
//!   exactly one leader, instances identical, the log's sequence without gaps or duplicates.
//! - `kill -9` of the leader under a load sent only to the follower: no failed request, writes
//!   accepted again within LEASE_TTL + 1 s, nothing acknowledged missing.
//! - SIGSTOP of the leader for 2 x LEASE_TTL, then SIGCONT: the old leader commits and executes
//!   nothing after resuming, and steps down.
//! - SIGTERM of the leader: the follower leads within 1 s, no failed request through it.
//! - Rolling restart of both proxies under load: no failed request through a client that retries
//!   a refused connection on the other proxy.
//! - SQLite: two processes on one file, one leader and one follower.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Chroma, DB, Proxy, WalBackend, assert_matches_oracle, get, post, python_result, spawn_workload,
    try_request, wait_identical, wait_until,
};

/// Short, so that takeovers after a death take seconds.
const LEASE_TTL: &str = "2s";
const TTL: Duration = Duration::from_secs(2);

/// Proxy `id` in front of both instances on `wal`, record answers above 256 bytes streamed.
fn proxy(id: &str, primary: &Chroma, replica: &Chroma, wal: &WalBackend) -> Proxy {
    let db = wal.database_url();
    Proxy::start(
        primary,
        &[replica],
        &[
            ("DATABASE_URL", db.as_str()),
            ("PROXY_ID", id),
            ("LEASE_TTL", LEASE_TTL),
            ("READ_REPLICA_RATIO", "0.5"),
            ("CHECK_INTERVAL", "1"),
            ("STREAM_THRESHOLD", "256"),
        ],
    )
}

/// The `proxy` block of a proxy's `/status`, or `None` while it does not answer.
fn standing(p: &Proxy) -> Option<Value> {
    let answer = try_request("GET", &format!("{}/status", p.url()), &[], None).ok()?;
    (answer.status == 200).then(|| answer.body["proxy"].clone())
}

fn role(p: &Proxy) -> Option<String> {
    standing(p).and_then(|s| s["role"].as_str().map(str::to_string))
}

fn wait_role(p: &Proxy, wanted: &str, timeout: Duration) -> Duration {
    wait_until(&format!("proxy {} is {wanted}", p.url()), timeout, || {
        role(p).as_deref() == Some(wanted)
    })
}

/// A leader `a` and a follower `b`, in that order.
fn pair(primary: &Chroma, replica: &Chroma, wal: &WalBackend) -> (Proxy, Proxy) {
    let a = proxy("a", primary, replica, wal);
    wait_role(&a, "leader", Duration::from_secs(10));
    let b = proxy("b", primary, replica, wal);
    wait_role(&b, "follower", Duration::from_secs(10));
    (a, b)
}

/// The ids of collection `name` as `instance` holds them, read straight from it.
fn ids_on(instance: &Chroma, name: &str) -> BTreeSet<String> {
    let base = format!("{}{DB}/collections", instance.url());
    let collection = get(&format!("{base}/{name}"));
    assert_eq!(collection.status, 200, "{collection:?}");
    let id = collection.body["id"].as_str().unwrap();
    let all = post(&format!("{base}/{id}/get"), json!({"include": []}));
    all.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// A request answered, or not, as a client saw it.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    at: Instant,
    done: Instant,
    outcome: Result<u16, String>,
}

/// Clients adding one record at a time (and reading it back by id) to one collection until
/// stopped; each sends to the first URL of its list that accepts a connection.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Clients of collection `collection` (its canonical id), one per list of URLs.
    fn start(collection: &str, clients: Vec<Vec<String>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let threads = clients
            .into_iter()
            .enumerate()
            .map(|(c, urls)| {
                let (stop, sent, collection) = (stop.clone(), sent.clone(), collection.to_string());
                std::thread::spawn(move || {
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("c{c}-{n}");
                        let body = json!({"ids": [id], "embeddings": [[n as f32, 1.0]]});
                        let add = format!("{DB}/collections/{collection}/add");
                        let at = Instant::now();
                        let outcome = first_answer(&urls, &add, &body).map(|a| a.status);
                        let done = Instant::now();
                        let ok = outcome.as_ref().is_ok_and(|s| (200..300).contains(s));
                        sent.lock().unwrap().push(Sent { id: id.clone(), at, done, outcome });
                        if ok {
                            let read = format!("{DB}/collections/{collection}/get");
                            let at = Instant::now();
                            let outcome = first_answer(&urls, &read, &json!({"ids": [id]}))
                                .and_then(|a| match a.body["ids"].as_array() {
                                    Some(ids) if ids.len() == 1 => Ok(a.status),
                                    _ => Err(format!("read back {id}: {a:?}")),
                                });
                            let done = Instant::now();
                            sent.lock().unwrap().push(Sent {
                                id: format!("read {id}"),
                                at,
                                done,
                                outcome,
                            });
                        }
                    }
                })
            })
            .collect();
        Self { stop, sent, threads }
    }

    /// Stops the clients; answers every request sent.
    fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.sent).unwrap().into_inner().unwrap()
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

/// The answer of the first URL that takes the connection (a POST when `body` is not null).
fn first_answer(urls: &[String], path: &str, body: &Value) -> Result<support::Answer, String> {
    let mut errors = Vec::new();
    for url in urls {
        let bytes = serde_json::to_vec(body).unwrap();
        let answer = match body {
            Value::Null => try_request("GET", &format!("{url}{path}"), &[], None),
            _ => try_request("POST", &format!("{url}{path}"), &[], Some(&bytes)),
        };
        match answer {
            Ok(answer) => return Ok(answer),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// Requests that did not get a 2xx.
fn failed(sent: &[Sent]) -> Vec<&Sent> {
    sent.iter().filter(|s| !s.outcome.as_ref().is_ok_and(|c| (200..300).contains(c))).collect()
}

/// Ids of acknowledged adds.
fn acked(sent: &[Sent]) -> BTreeSet<String> {
    let adds = sent.iter().filter(|s| !s.id.starts_with("read "));
    adds.filter(|s| s.outcome.as_ref().is_ok_and(|c| (200..300).contains(c)))
        .map(|s| s.id.clone())
        .collect()
}

/// The log's sequence numbers, checked consecutive from the first.
fn assert_no_gaps(wal: &WalBackend) -> usize {
    let seqs: Vec<i64> = wal
        .query("SELECT seq FROM wal_entries ORDER BY seq")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "the log's sequence has a gap or a duplicate: {seqs:?}");
    }
    seqs.len()
}

/// Creates collection `name` through the proxy at `url`; answers its canonical id.
fn create(url: &str, name: &str) -> String {
    let created = post(&format!("{url}{DB}/collections"), json!({"name": name}));
    assert_eq!(created.status, 200, "{created:?}");
    created.body["id"].as_str().unwrap().to_string()
}

fn wait_replicated(instances: [&Chroma; 2], name: &str, expected: &BTreeSet<String>) {
    wait_until("every acknowledged write on both instances", Duration::from_secs(60), || {
        instances.iter().all(|i| ids_on(i, name).is_superset(expected))
    });
    assert_eq!(ids_on(instances[0], name), ids_on(instances[1], name), "instances differ");
}

#[test]
fn writes_through_both_proxies_share_one_log() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::postgres();
    let (a, b) = pair(&primary, &replica, &wal);
    let c = create(&b.url(), "shared");
    // The official client through the follower, alongside.
    let workload = spawn_workload(&b, "via-b", 40);
    let clients = vec![vec![a.url()], vec![a.url()], vec![b.url()], vec![b.url()]];
    let load = Load::start(&c, clients);
    wait_until("400 requests", Duration::from_secs(120), || load.count() >= 400);
    let sent = load.stop();
    let workload = python_result(&workload.wait_with_output().unwrap());

    assert!(failed(&sent).is_empty(), "failed requests: {:?}", failed(&sent));
    let roles = [role(&a), role(&b)];
    assert_eq!(roles, [Some("leader".into()), Some("follower".into())], "exactly one leader");
    let b_block = standing(&b).unwrap();
    assert_eq!(b_block["leader"]["id"], "a", "{b_block}");
    let a_block = standing(&a).unwrap();
    let followers: Vec<&str> = a_block["followers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(followers, ["b"], "the leader lists the follower it heard from: {a_block}");

    let expected = acked(&sent);
    wait_replicated([&primary, &replica], "shared", &expected);
    assert_eq!(ids_on(&primary, "shared"), expected, "exactly the acknowledged writes");
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &workload, "via-b");
    let entries = assert_no_gaps(&wal);
    let epochs = wal.query("SELECT DISTINCT epoch FROM wal_entries");
    assert_eq!(epochs.len(), 1, "one leader logged every entry: {epochs:?}");
    eprintln!("{} requests, {entries} log entries, all under epoch {}", sent.len(), epochs[0]);
}

#[test]
fn kill9_of_the_leader_fails_no_request_through_the_follower() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::postgres();
    let (mut a, b) = pair(&primary, &replica, &wal);
    let c = create(&b.url(), "killed");
    let load = Load::start(&c, vec![vec![b.url()]; 3]);
    wait_until("100 requests", Duration::from_secs(60), || load.count() >= 100);
    a.kill9();
    let killed = Instant::now();
    let takeover = wait_role(&b, "leader", Duration::from_secs(30));
    let before = load.count();
    wait_until("100 more requests", Duration::from_secs(60), || load.count() >= before + 100);
    let sent = load.stop();

    assert!(failed(&sent).is_empty(), "failed requests: {:?}", failed(&sent));
    let first = sent
        .iter()
        .filter(|s| s.at > killed && !s.id.starts_with("read "))
        .map(|s| s.done)
        .min()
        .expect("writes sent after the kill");
    let accepted_again = first.duration_since(killed);
    eprintln!(
        "kill -9 of the leader: follower leads after {takeover:?}, writes accepted again after {accepted_again:?}, {} requests, none failed",
        sent.len()
    );
    assert!(
        accepted_again <= TTL + Duration::from_secs(1),
        "writes accepted again after {accepted_again:?}, more than LEASE_TTL + 1 s"
    );
    a.spawn();
    wait_role(&a, "follower", Duration::from_secs(10));
    let expected = acked(&sent);
    wait_replicated([&primary, &replica], "killed", &expected);
    assert_eq!(ids_on(&primary, "killed"), expected, "nothing acknowledged missing, nothing extra");
    assert_no_gaps(&wal);
}

#[test]
fn a_leader_thawed_after_sigstop_executes_nothing_and_follows() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::postgres();
    let (a, b) = pair(&primary, &replica, &wal);
    let c = create(&b.url(), "stopped");
    let old_epoch = standing(&a).unwrap()["epoch"].as_i64().unwrap();
    let load = Load::start(&c, vec![vec![b.url()]; 2]);
    wait_until("60 requests", Duration::from_secs(60), || load.count() >= 60);
    a.sigstop();
    let stopped = Instant::now();
    // Clients of the frozen leader itself: their requests wait inside it.
    let frozen_clients = Load::start(&c, vec![vec![a.url()]; 2]);
    wait_role(&b, "leader", Duration::from_secs(30));
    let before = load.count();
    wait_until("writes through the new leader", Duration::from_secs(30), || {
        load.count() >= before + 20
    });
    wait_until("2 x LEASE_TTL frozen", 3 * TTL, || stopped.elapsed() >= 2 * TTL);
    let resumed_ms = now_ms();
    a.sigcont();
    wait_role(&a, "follower", Duration::from_secs(10));
    let before = load.count();
    wait_until("more writes after the thaw", Duration::from_secs(30), || {
        load.count() >= before + 40
    });
    let sent = load.stop();
    let frozen = frozen_clients.stop();

    assert!(failed(&sent).is_empty(), "failed requests through the follower: {:?}", failed(&sent));
    let late = wal.query(&format!(
        "SELECT seq FROM wal_entries WHERE epoch = {old_epoch} AND (created_ms >= {resumed_ms} OR updated_ms >= {resumed_ms})"
    ));
    assert!(late.is_empty(), "the thawed leader committed entries {late:?}");
    assert!(a.log().contains("LOST"), "the old leader says it lost the lease");
    // Every record on the instances is a logged, applicable write: nothing was executed unlogged.
    wait_until("replay done", Duration::from_secs(60), || {
        wal.query("SELECT count(*) FROM wal_applied WHERE state = 'pending'") == ["0"]
    });
    let logged: BTreeSet<String> = wal
        .query(
            "SELECT convert_from(body, 'UTF8') FROM wal_entries WHERE kind = 'add' AND state IN ('committed', 'queued')",
        )
        .iter()
        .flat_map(|body| {
            let body: Value = serde_json::from_str(body).unwrap();
            body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    for instance in [&primary, &replica] {
        assert_eq!(
            ids_on(instance, "stopped"),
            logged,
            "{} holds exactly the logged writes",
            instance.name
        );
    }
    assert!(logged.is_superset(&acked(&sent)));
    eprintln!(
        "SIGSTOP of the leader: {} requests through the follower, none failed; {} requests to the frozen leader ({} answered 2xx after the thaw)",
        sent.len(),
        frozen.len(),
        frozen.len() - failed(&frozen).len()
    );
}

#[test]
fn sigterm_hands_the_lease_over_at_once() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::postgres();
    let (mut a, b) = pair(&primary, &replica, &wal);
    let c = create(&b.url(), "termed");
    let load = Load::start(&c, vec![vec![b.url()]; 2]);
    // Clients of the leader itself: once it stops accepting they get refused connections, and
    // what it still holds goes to the next leader.
    let own = Load::start(&c, vec![vec![a.url()]]);
    wait_until("60 requests", Duration::from_secs(60), || load.count() >= 60);
    a.sigterm();
    let took = wait_role(&b, "leader", Duration::from_secs(10));
    assert!(a.wait_exit(Duration::from_secs(15)).success());
    let own = own.stop();
    let answered_badly: Vec<&Sent> =
        own.iter().filter(|s| s.outcome.as_ref().is_ok_and(|c| !(200..300).contains(c))).collect();
    assert!(answered_badly.is_empty(), "the stopping leader answered {answered_badly:?}");
    let before = load.count();
    wait_until("60 more requests", Duration::from_secs(60), || load.count() >= before + 60);
    let sent = load.stop();
    eprintln!("SIGTERM of the leader: the follower leads after {took:?}; {} requests", sent.len());
    assert!(failed(&sent).is_empty(), "failed requests: {:?}", failed(&sent));
    assert!(
        took <= Duration::from_secs(1),
        "the follower took {took:?} to lead; leader's log:\n{}",
        a.log()
    );
    assert!(a.log().contains("RELEASED"), "the leader released its lease");
    wait_replicated([&primary, &replica], "termed", &acked(&sent));
}

#[test]
fn a_rolling_restart_fails_no_request() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::postgres();
    let (mut a, mut b) = pair(&primary, &replica, &wal);
    let c = create(&a.url(), "rolled");
    // What a load balancer does: a refused connection is tried on the other proxy.
    let load = Load::start(&c, vec![vec![a.url(), b.url()], vec![b.url(), a.url()]]);
    for p in [&mut a, &mut b] {
        let before = load.count();
        wait_until("requests before the restart", Duration::from_secs(60), || {
            load.count() >= before + 40
        });
        p.sigterm();
        assert!(p.wait_exit(Duration::from_secs(15)).success());
        p.spawn();
    }
    let before = load.count();
    wait_until("requests after both restarts", Duration::from_secs(60), || {
        load.count() >= before + 40
    });
    let sent = load.stop();
    eprintln!("rolling restart: {} requests", sent.len());
    assert!(failed(&sent).is_empty(), "failed requests: {:?}", failed(&sent));
    let roles = [role(&a), role(&b)];
    assert!(roles.contains(&Some("leader".into())) && roles.contains(&Some("follower".into())));
    wait_replicated([&primary, &replica], "rolled", &acked(&sent));
    assert_no_gaps(&wal);
}

#[test]
fn two_processes_on_one_sqlite_file_share_the_lease() {
    let (primary, replica) = (Chroma::start("primary"), Chroma::start("replica"));
    let wal = WalBackend::sqlite();
    let (a, b) = pair(&primary, &replica, &wal);
    let c = create(&b.url(), "sqlite");
    let load = Load::start(&c, vec![vec![a.url()], vec![b.url()]]);
    wait_until("100 requests", Duration::from_secs(60), || load.count() >= 100);
    let sent = load.stop();
    assert!(failed(&sent).is_empty(), "failed requests: {:?}", failed(&sent));
    assert_eq!([role(&a), role(&b)], [Some("leader".into()), Some("follower".into())]);
    let expected = acked(&sent);
    wait_replicated([&primary, &replica], "sqlite", &expected);
    assert_eq!(ids_on(&primary, "sqlite"), expected);
    assert_no_gaps(&wal);
    // A record read the leader streams (above STREAM_THRESHOLD) passes the follower as it
    // arrives, chunked, and whole.
    let everything = serde_json::to_vec(&json!({"include": ["embeddings"]})).unwrap();
    let read = try_request(
        "POST",
        &format!("{}{DB}/collections/{c}/get", b.url()),
        &[],
        Some(&everything),
    )
    .unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(read.header("content-length"), None, "streamed through both: {:?}", read.headers);
    let ids: BTreeSet<String> = read.body["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{read:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
