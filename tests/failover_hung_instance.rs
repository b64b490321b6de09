//! A hung instance (`SIGSTOP`: it accepts connections and never answers). Slow is not dead
//! (DESIGN 3): a request that times out makes the instance suspect and triggers a probe, and the
//! failed probe marks it down. A read fails over at once. A write in flight on it is not re-sent
//! elsewhere, where it could be applied before the hung instance applies it late over newer
//! writes: it gets the unknown-outcome answer and replay applies it everywhere in log order; the
//! next writes go to the replica.

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
        &[
            ("REQUEST_TIMEOUT", "2"),
            ("WRITE_TIMEOUT", "2"),
            // Background probes alone would take FALL x 10 s: the request's probe decides.
            ("CHECK_INTERVAL", "10"),
            ("READ_REPLICA_RATIO", "0"),
        ],
    );
    let url = proxy.url();
    assert_eq!(post(&format!("{url}{DB}/collections"), json!({"name": "before"})).status, 200);
    wait_until("the replica has `before`", Duration::from_secs(10), || {
        replica.collection_names().contains(&"before".to_string())
    });

    // A read fails over at once, after one timeout; the probe it triggers marks the primary down.
    primary.sigstop();
    let started = Instant::now();
    let read = get(&format!("{url}{DB}/collections/before"));
    assert_eq!(read.status, 200, "{read:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "the read waited for REQUEST_TIMEOUT");
    assert_eq!(proxy.served("replica", "reads"), 1);
    wait_until("the probe marks the hung primary down", Duration::from_secs(5), || {
        proxy.instance_status("primary")["healthy"] == false
    });
    primary.sigcont();
    wait_until("the thawed primary is healthy again", Duration::from_secs(30), || {
        proxy.instance_status("primary")["healthy"] == true
    });

    // A write hangs on the primary: not re-sent, its outcome unknown.
    primary.sigstop();
    let started = Instant::now();
    let hung = post(&format!("{url}{DB}/collections"), json!({"name": "while-hung"}));
    assert!(started.elapsed() >= Duration::from_secs(2), "the write waited for WRITE_TIMEOUT");
    assert_eq!(
        (hung.status, hung.body["error"].as_str()),
        (503, Some("InternalError")),
        "{hung:?}"
    );
    let message = hung.body["message"].as_str().unwrap();
    assert!(message.contains("outcome is unknown"), "{message}");
    assert_eq!(proxy.served("replica", "writes"), 0, "a write that may still run is not re-sent");
    wait_until("the probe marks the hung primary down", Duration::from_secs(5), || {
        proxy.instance_status("primary")["healthy"] == false
    });
    // Replay applies the unknown write to the replica, and the next write goes there.
    wait_until("replay creates `while-hung` on the replica", Duration::from_secs(10), || {
        replica.collection_names().contains(&"while-hung".to_string())
    });
    let next = post(&format!("{url}{DB}/collections"), json!({"name": "after-hung"}));
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(proxy.served("replica", "writes"), 1);

    // Thawed, the primary applies the hung write itself and replay gives it the rest.
    primary.sigcont();
    wait_until("the primary has every collection", Duration::from_secs(30), || {
        let names = primary.collection_names();
        ["before", "while-hung", "after-hung"].iter().all(|n| names.contains(&n.to_string()))
    });
    let log = proxy.log();
    assert!(log.contains("instance primary") && log.contains("is DOWN"), "down transition logged");
    assert!(log.contains("then its probe failed"), "why it went down is logged");
    assert!(log.contains("not re-sent, the outcome is unknown"), "the kept write is logged");
    assert!(log.contains("is UP again"), "up transition logged");
}
