//! Slow is not dead (DESIGN 3): a write that takes longer than REQUEST_TIMEOUT on a live
//! instance completes within WRITE_TIMEOUT, leaves every instance usable, and replicates; a read
//! that times out on live instances gets them probed, not marked down.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Chroma, DB, Proxy, get, post, wait_until};

/// Records in the big add: its body is about 10 MB, far more than REQUEST_TIMEOUT of work.
const RECORDS: usize = 4_000;

fn count(base: &str, id: &str) -> u64 {
    get(&format!("{base}{DB}/collections/{id}/count")).body.as_u64().unwrap_or(0)
}

#[test]
fn a_write_slower_than_request_timeout_leaves_every_instance_usable() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("REQUEST_TIMEOUT", "100ms"), ("WRITE_TIMEOUT", "60s"), ("READ_REPLICA_RATIO", "0")],
    );
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "big"}));
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();

    let ids: Vec<String> = (0..RECORDS).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Vec<f64>> = (0..RECORDS)
        .map(|i| (0..384).map(|d| ((i * 31 + d * 7) % 1000) as f64 / 1000.0).collect())
        .collect();
    let started = Instant::now();
    let add = post(
        &format!("{url}{DB}/collections/{id}/add"),
        json!({"ids": ids, "embeddings": embeddings}),
    );
    let took = started.elapsed();
    eprintln!("the big add took {took:?} through the proxy");
    assert!(took > Duration::from_millis(100), "the test needs an add slower than REQUEST_TIMEOUT");
    assert_eq!(add.status, 201, "the big add completed on the primary: {add:?}");
    assert_eq!(proxy.served("primary", "writes"), 2);
    assert_eq!(proxy.served("replica", "writes"), 0, "never re-sent");
    assert_eq!(count(&primary.url(), &id), RECORDS as u64);

    // Replay sends it to the replica within WRITE_TIMEOUT too.
    let replica_id = wait_until_mapped(&proxy, &id);
    wait_until("the replica has every record", Duration::from_secs(60), || {
        count(&replica.url(), &replica_id) == RECORDS as u64
    });

    // A read with all embeddings takes Chroma longer than 100 ms: whatever it answers, the
    // instances are probed, not marked down.
    let big_get = post(
        &format!("{url}{DB}/collections/{id}/get"),
        json!({"include": ["embeddings", "documents", "metadatas"]}),
    );
    eprintln!("big get through the proxy: {}", big_get.status);
    wait_until("every instance answers its probe", Duration::from_secs(10), || {
        let status = proxy.status();
        status["instances"].as_array().unwrap().iter().all(|i| i["healthy"] == true)
    });
    let heartbeat = get(&format!("{url}/api/v2/heartbeat"));
    assert_eq!(heartbeat.status, 200, "{heartbeat:?}");
    let small = post(
        &format!("{url}{DB}/collections/{id}/add"),
        json!({"ids": ["small"], "embeddings": [vec![0.5; 384]]}),
    );
    assert_eq!(small.status, 201, "{small:?}");
    let log = proxy.log();
    assert!(!log.contains("is DOWN"), "no instance was marked down:\n{log}");
}

/// The replica's id of canonical collection `id`, once the proxy has mapped it.
fn wait_until_mapped(proxy: &Proxy, id: &str) -> String {
    let mut local = String::new();
    wait_until("the replica's id is mapped", Duration::from_secs(30), || {
        let mappings = get(&format!("{}/collection/mappings", proxy.url())).body;
        let found = mappings["collections"].as_array().and_then(|all| {
            all.iter().find(|c| c["canonical_id"] == id).map(|c| c["instances"]["replica"].clone())
        });
        if let Some(Value::String(replica)) = found {
            local = replica;
            true
        } else {
            false
        }
    });
    local
}
