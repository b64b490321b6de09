//! Replica `kill -9`: reads keep succeeding, served by the primary. A collection created on the
//! primary behind the proxy's back while the replica is down is served too, and its discovery
//! (which needs every instance) is not retried on every request.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Proxy, get, post, wait_until};

#[test]
fn replica_kill_moves_reads_to_the_primary() {
    let primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        // Seeding off: the replica comes back empty while the primary holds `behind`, which
        // seeding would copy (tests/seeding.rs); this test is about discovery.
        &[("READ_REPLICA_RATIO", "1"), ("CHECK_INTERVAL", "1"), ("SEED_EMPTY_INSTANCES", "false")],
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

    // Discovery cannot ask the dead replica: it fails, and requests are forwarded unchanged
    // (to the primary, the only usable instance) without asking every instance each time.
    let direct = post(&format!("{}{DB}/collections", primary.url()), json!({"name": "behind"}));
    let id = direct.body["id"].as_str().unwrap().to_string();
    let count = format!("{}{DB}/collections/{id}/count", proxy.url());
    for i in 0..20 {
        let answer = get(&count);
        assert_eq!((answer.status, &answer.body), (200, &json!(0)), "read {i} of `behind`");
    }
    let attempts = proxy.log().matches(&format!("collection {id} is not mapped")).count();
    assert!((1..=3).contains(&attempts), "{attempts} discovery attempts for 20 requests");

    replica.restart();
    wait_until("the replica is back", Duration::from_secs(10), || {
        proxy.instance_status("replica")["healthy"] == true
    });
    assert_eq!(get(&count_url).status, 200);
    assert_eq!(proxy.served("replica", "reads"), 21, "reads return to the replica");

    // With every instance reachable again, the next attempt maps it (the replica lacks it).
    wait_until("`behind` is mapped", Duration::from_secs(15), || {
        assert_eq!(get(&count).status, 200);
        let mappings = get(&format!("{}/collection/mappings", proxy.url())).body;
        mappings["collections"].as_array().unwrap().iter().any(|c| {
            c["canonical_id"] == id.as_str()
                && c["instances"]["primary"] == id.as_str()
                && c["instances"]["replica"].is_null()
        })
    });
}
