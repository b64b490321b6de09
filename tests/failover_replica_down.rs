//! Replica `kill -9`: reads keep succeeding, served by the primary.

mod support;

use std::time::Duration;

use support::{Chroma, DB, Proxy, get, wait_until};

#[test]
fn replica_kill_moves_reads_to_the_primary() {
    let primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("READ_REPLICA_RATIO", "1"), ("CHECK_INTERVAL", "1")],
    );
    let count_url = format!("{}{DB}/collections_count", proxy.url());

    for _ in 0..20 {
        assert_eq!(get(&count_url).status, 200);
    }
    assert_eq!(proxy.served("replica", "reads"), 20, "with ratio 1 the replica serves every read");

    replica.kill9();
    let primary_before = proxy.served("primary", "reads");
    for i in 0..100 {
        let answer = get(&count_url);
        assert_eq!(answer.status, 200, "read {i} after the replica died: {answer:?}");
    }
    assert_eq!(proxy.served("primary", "reads") - primary_before, 100);
    assert_eq!(proxy.served("replica", "reads"), 20);
    wait_until("/status shows the replica unhealthy", Duration::from_secs(4), || {
        proxy.instance_status("replica")["healthy"] == false
    });
    let health = get(&format!("{}/health", proxy.url()));
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("degraded")));

    replica.restart();
    wait_until("the replica is back", Duration::from_secs(10), || {
        proxy.instance_status("replica")["healthy"] == true
    });
    assert_eq!(get(&count_url).status, 200);
    assert_eq!(proxy.served("replica", "reads"), 21, "reads return to the replica");
}
