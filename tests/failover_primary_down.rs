//! Primary `kill -9` in the middle of a write/read loop run by the official Python client: no
//! client request fails, `/status` shows the primary down within CHECK_INTERVAL x fall + 1 s,
//! the restarted primary catches up from the log and becomes the write target again by itself,
//! and both instances end identical.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Chroma, DB, Proxy, post, python_command, python_result, wait_until};

const CHECK_INTERVAL_SECS: u64 = 1;
const FALL: u64 = 3;
const ITERATIONS: usize = 250;

#[test]
fn primary_kill_during_load_fails_no_client_request() {
    let mut primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    for instance in [&primary, &replica] {
        let answer = post(&format!("{}{DB}/collections", instance.url()), json!({"name": "seed"}));
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let proxy =
        Proxy::start(&primary, &[&replica], &[("CHECK_INTERVAL", "1"), ("REQUEST_TIMEOUT", "5")]);

    let load = python_command("failover_load.py", &[&proxy.url(), &ITERATIONS.to_string(), "load"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a third of the writes done", Duration::from_secs(120), || {
        proxy.served("primary", "writes") >= (ITERATIONS / 3) as u64
    });
    primary.kill9();
    let killed_at = Instant::now();
    let detection_limit = Duration::from_secs(CHECK_INTERVAL_SECS * FALL + 1);
    wait_until("/status shows the primary unhealthy", detection_limit, || {
        proxy.instance_status("primary")["healthy"] == false
    });
    let detected_after = killed_at.elapsed();

    let result = python_result(&load.wait_with_output().unwrap());
    let failures = result["failures"].as_array().unwrap();
    assert!(failures.is_empty(), "client requests failed across the kill: {failures:?}");
    assert_eq!(result["writes"], ITERATIONS);
    assert_eq!(result["reads"], 2 * ITERATIONS);
    let on_replica = proxy.served("replica", "writes");
    assert!(on_replica > 0, "writes continued on the replica");
    let created_on_replica =
        replica.collection_names().iter().filter(|n| n.starts_with("load-")).count();
    assert_eq!(
        created_on_replica, ITERATIONS,
        "every write reached the replica, answered or replayed"
    );
    eprintln!(
        "failover figures: failed client requests 0 of {}, /status showed the primary down {:.2}s \
         after kill -9, slowest client request {:.3}s, writes on replica {on_replica}",
        3 * ITERATIONS,
        detected_after.as_secs_f64(),
        result["slowest_seconds"].as_f64().unwrap()
    );

    primary.restart();
    wait_until("the restarted primary caught up from the log", Duration::from_secs(30), || {
        primary.collection_names() == replica.collection_names()
    });
    wait_until("the restarted primary is the write target again", Duration::from_secs(10), || {
        let status = proxy.instance_status("primary");
        status["healthy"] == true && status["state"] == "healthy"
    });
    let before = proxy.served("primary", "writes");
    let answer =
        post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "after-restart"}));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        proxy.served("primary", "writes"),
        before + 1,
        "the primary is the write target again"
    );
    assert!(primary.collection_names().contains(&"after-restart".to_string()));
    wait_until("both instances identical", Duration::from_secs(10), || {
        primary.collection_names() == replica.collection_names()
    });
}
