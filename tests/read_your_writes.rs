//! Read-your-writes: 500 iterations of "write through the proxy, read it back through the proxy
//! at once" with READ_REPLICA_RATIO=1 (reads prefer the replica) while the replica is held
//! behind for a while (SIGSTOP): not one read misses the write before it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DB, Stack, WalBackend, post, wait_identical, wait_until};

#[test]
fn every_read_sees_the_write_before_it() {
    let Stack { proxy, primary, replica, wal: _wal } = Stack::start(
        WalBackend::sqlite(),
        &[("READ_REPLICA_RATIO", "1"), ("CHECK_INTERVAL", "1"), ("REQUEST_TIMEOUT", "3")],
    );
    let created = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "ryw"}));
    let id = created.body["id"].as_str().unwrap().to_string();
    let base = format!("{}{DB}/collections/{id}", proxy.url());

    let mut misses = Vec::new();
    for i in 0..500 {
        if i == 150 {
            replica.sigstop();
        }
        if i == 300 {
            replica.sigcont();
        }
        let key = format!("k{}", i % 20);
        let doc = format!("version {i}");
        let write = post(
            &format!("{base}/upsert"),
            json!({"ids": [key], "embeddings": [[i as f32, 1.0]], "documents": [doc]}),
        );
        assert_eq!(write.status, 200, "write {i}: {write:?}");
        if i % 10 == 0 && !(150..300).contains(&i) {
            // Now and then let replay catch up first, so the replica (preferred for reads)
            // serves the read: then it is the replica that must have the write.
            wait_until("the replica caught up", Duration::from_secs(10), || {
                proxy.instance_status("replica")["replication_lag"]["entries"] == 0
            });
        }
        let read = post(&format!("{base}/get"), json!({"ids": [key], "include": ["documents"]}));
        assert_eq!(read.status, 200, "read {i}: {read:?}");
        if read.body["documents"][0] != doc {
            misses.push(format!("{i}: wrote {doc:?}, read {}", read.body["documents"]));
        }
    }
    assert!(misses.is_empty(), "{} stale reads: {misses:?}", misses.len());
    assert!(proxy.served("replica", "reads") >= 30, "the replica served reads when it was current");
    wait_identical(&[&primary, &replica], Duration::from_secs(30));
}
