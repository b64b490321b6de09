//! `kill -9` of the proxy during a concurrent write load, then a restart on the same WAL store:
//! every write that got a 2xx is committed in the log and present on the primary, writes whose
//! outcome was unknown are queued, none is left `logged`, and a retry with the same
//! Idempotency-Key is safe. Runs on both WAL backends.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Proxy, WalBackend, post, try_request, wait_until};

const WRITERS: usize = 4;

/// What a writer learnt of one add: acknowledged (with its transaction id) or unknown.
#[derive(Debug, Clone)]
enum Outcome {
    Acked(String),
    Unknown,
}

fn add(url: &str, collection: &str, id: &str) -> Result<support::Answer, String> {
    let body = serde_json::to_vec(&json!({"ids": [id], "embeddings": [[1.0, 2.0]]})).unwrap();
    try_request(
        "POST",
        &format!("{url}{DB}/collections/{collection}/add"),
        &[("idempotency-key", id), ("content-type", "application/json")],
        Some(&body),
    )
}

fn acknowledged_writes_survive_a_proxy_kill(wal: WalBackend) {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let db = wal.database_url();
    let settings = [("DATABASE_URL", db.as_str()), ("READ_REPLICA_RATIO", "0")];
    let mut proxy = Proxy::start(&primary, &[&replica], &settings);
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "crash"}));
    let collection = created.body["id"].as_str().unwrap().to_string();

    let outcomes = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, collection, outcomes, stop) =
                (url.clone(), collection.clone(), outcomes.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("w{w}-{i}");
                    let outcome = match add(&url, &collection, &id) {
                        Ok(a) if a.status == 201 => {
                            Outcome::Acked(a.header("x-transaction-id").unwrap().to_string())
                        }
                        Ok(a) if a.status < 500 => panic!("write {id} answered {a:?}"),
                        // Dead proxy: no answer, or a refused connection.
                        _ => Outcome::Unknown,
                    };
                    let unknown = matches!(outcome, Outcome::Unknown);
                    outcomes.lock().unwrap().insert(id, outcome);
                    if unknown {
                        break;
                    }
                }
            })
        })
        .collect();
    wait_until("120 acknowledged writes", Duration::from_secs(60), || {
        outcomes.lock().unwrap().len() >= 120
    });
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(proxy.pid() as libc::pid_t, libc::SIGKILL) };
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    proxy.wait_exit(Duration::from_secs(5));
    // Restarted as a supervisor would: same address, so same PROXY_ID, and it takes its own
    // lease back at once.
    proxy.spawn();

    let outcomes = outcomes.lock().unwrap().clone();
    let acked: Vec<(&String, &String)> = outcomes
        .iter()
        .filter_map(|(id, o)| match o {
            Outcome::Acked(txn) => Some((id, txn)),
            Outcome::Unknown => None,
        })
        .collect();
    assert!(acked.len() >= 120);
    let states: BTreeMap<String, String> = wal
        .query("SELECT txn_id, state FROM wal_entries")
        .into_iter()
        .map(|row| {
            let (txn, state) = row.split_once('|').unwrap();
            (txn.to_string(), state.to_string())
        })
        .collect();
    for (id, txn) in &acked {
        assert_eq!(
            states.get(*txn).map(String::as_str),
            Some("committed"),
            "acknowledged write {id}"
        );
    }
    assert!(!states.values().any(|s| s == "logged"), "recovery left an entry logged");
    let on_primary =
        post(&format!("{}{DB}/collections/{collection}/get", primary.url()), json!({}));
    let present: Vec<&str> =
        on_primary.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for (id, _) in &acked {
        assert!(present.contains(&id.as_str()), "acknowledged write {id} is on the primary");
    }
    let queued = states.values().filter(|s| *s == "queued").count();
    let unknown = outcomes.len() - acked.len();
    eprintln!(
        "crash recovery: {} acknowledged, {unknown} unknown, {queued} recovered as queued",
        acked.len()
    );

    // A client retrying its unknown writes with the same key gets a success, never an error.
    for (id, outcome) in &outcomes {
        if matches!(outcome, Outcome::Unknown) {
            let retry = add(&proxy.url(), &collection, id).unwrap();
            assert!(retry.status == 201 || retry.status == 202, "retry of {id}: {retry:?}");
        }
    }
}

both_backends!(acknowledged_writes_survive_a_proxy_kill);
