//! A hung instance (`SIGSTOP`: it accepts connections and never answers): requests still
//! succeed after REQUEST_TIMEOUT, served by the other instance, and the hung one is marked down.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Chroma, DB, Proxy, get, post, wait_until};

#[test]
fn a_hung_primary_costs_one_timeout_then_the_replica_serves() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("REQUEST_TIMEOUT", "2"), ("CHECK_INTERVAL", "1"), ("READ_REPLICA_RATIO", "0")],
    );
    // Warm the proxy's connection pool to the primary, so the hang hits an established connection.
    assert_eq!(get(&format!("{}{DB}/collections_count", proxy.url())).status, 200);

    primary.sigstop();
    let started = Instant::now();
    let answer = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "while-hung"}));
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        took >= Duration::from_secs(2),
        "the write waited for REQUEST_TIMEOUT first ({took:?})"
    );
    assert_eq!(proxy.served("replica", "writes"), 1);
    assert!(replica.collection_names().contains(&"while-hung".to_string()));
    assert_eq!(proxy.instance_status("primary")["healthy"], false);

    let read = get(&format!("{}{DB}/collections/while-hung", proxy.url()));
    assert_eq!(
        read.status, 200,
        "reads are served by the replica while the primary hangs: {read:?}"
    );
    assert_eq!(proxy.served("replica", "reads"), 1);

    primary.sigcont();
    wait_until("the thawed primary is healthy again", Duration::from_secs(10), || {
        proxy.instance_status("primary")["healthy"] == true
    });
    let log = proxy.log();
    assert!(log.contains("instance primary") && log.contains("is DOWN"), "down transition logged");
    assert!(log.contains("is UP again"), "up transition logged");
    assert!(log.contains("failover: POST"), "failover logged");
}
