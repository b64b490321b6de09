//! SIGTERM: the proxy stops accepting, lets the in-flight request finish (here a read waiting
//! out a hung primary before it fails over), and exits 0.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Proxy, get, post, try_request, wait_until};

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let mut proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("REQUEST_TIMEOUT", "2"), ("SHUTDOWN_GRACE", "10"), ("READ_REPLICA_RATIO", "0")],
    );
    let url = proxy.url();
    assert_eq!(post(&format!("{url}{DB}/collections"), json!({"name": "drained"})).status, 200);
    wait_until("the replica has the collection", Duration::from_secs(10), || {
        replica.collection_names().contains(&"drained".to_string())
    });

    primary.sigstop();
    let in_flight = std::thread::spawn(move || get(&format!("{url}{DB}/collections/drained")));
    wait_until("the read reached the proxy", Duration::from_secs(5), || {
        proxy.status()["stats"]["reads"] == 1
    });
    proxy.sigterm();
    wait_until("the proxy stops accepting", Duration::from_secs(5), || {
        try_request("GET", &format!("{}/health", proxy.url()), &[], None).is_err()
    });
    let answer = in_flight.join().unwrap();
    assert_eq!(answer.status, 200, "the in-flight read finished: {answer:?}");
    assert_eq!(answer.body["name"], "drained");
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    primary.sigcont();
    assert!(proxy.log().contains("shutdown complete"));
}
