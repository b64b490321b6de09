//! A collection whose id on one instance was never recorded (its create ran there while the WAL
//! store was down, so the mapping could not be persisted: fault schedule seed 5). Replay, about
//! to refuse a later entry as "collection not on this instance", finds the collection there by
//! its name, records its id, and applies the entry; nothing fails, both instances end identical.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DB, Stack, WalBackend, get, post, wait_identical, wait_until};

#[test]
fn replay_finds_a_collection_whose_mapping_was_lost() {
    let mut stack = Stack::start(WalBackend::sqlite(), &[("CHECK_INTERVAL", "1")]);
    let url = stack.proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "docs"}));
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();
    wait_until("the replica has the collection", Duration::from_secs(10), || {
        stack.proxy.status()["write_ahead_log"]["pending_writes"] == 0
    });

    // The primary's mapping is lost, and the primary is down while records are written.
    stack.proxy.kill9();
    let deleted = stack.wal.query("DELETE FROM collection_map WHERE instance = 'primary'");
    assert!(deleted.is_empty());
    assert_eq!(stack.wal.query("SELECT count(*) FROM collection_map"), ["1"]);
    stack.primary.kill9();
    stack.proxy.spawn();
    for n in 0..5 {
        let body = json!({"ids": [format!("r{n}")], "embeddings": [[n as f64, 1.0]]});
        let add = post(&format!("{url}{DB}/collections/{id}/add"), body);
        assert_eq!(add.status, 201, "{add:?}");
    }

    // Back, the primary is caught up: replay maps its collection by name first.
    stack.primary.spawn();
    wait_until("the primary caught up", Duration::from_secs(30), || {
        let wal = get(&format!("{url}/wal/status")).body;
        wal["pending_writes"] == 0 && wal["failed_replays"] == 0
    });
    let print = wait_identical(&[&stack.primary, &stack.replica], Duration::from_secs(10));
    assert_eq!(print["docs"]["ids"].as_array().unwrap().len(), 5, "{print}");
    assert_eq!(stack.wal.query("SELECT count(*) FROM collection_map"), ["2"]);
    let log = stack.proxy.log();
    assert!(log.contains(&format!("primary: collection {id} found by its name")), "{log}");
}
