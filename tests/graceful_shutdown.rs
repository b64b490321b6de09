//! SIGTERM: the proxy stops accepting, lets the in-flight request finish (here one that is
//! waiting out a hung primary), and exits 0.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Proxy, post, try_request, wait_until};

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let mut proxy =
        Proxy::start(&primary, &[&replica], &[("REQUEST_TIMEOUT", "2"), ("SHUTDOWN_GRACE", "10")]);
    let url = proxy.url();

    primary.sigstop();
    let in_flight = std::thread::spawn(move || {
        post(&format!("{url}{DB}/collections"), json!({"name": "drained"}))
    });
    wait_until("the write reached the proxy", Duration::from_secs(5), || {
        proxy.status()["stats"]["writes"] == 1
    });
    proxy.sigterm();
    wait_until("the proxy stops accepting", Duration::from_secs(5), || {
        try_request("GET", &format!("{}/health", proxy.url()), &[], None).is_err()
    });
    let answer = in_flight.join().unwrap();
    assert_eq!(answer.status, 200, "the in-flight write finished: {answer:?}");
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(replica.collection_names().contains(&"drained".to_string()));
    primary.sigcont();
    assert!(proxy.log().contains("shutdown complete"));
}
