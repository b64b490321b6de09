//! PostgreSQL stopped: writes are refused with 503 and a clear message and executed nowhere,
//! reads still succeed; PostgreSQL started again: writes succeed without restarting the proxy.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Postgres, Proxy, get, post, wait_until};

#[test]
fn writes_refused_while_postgres_is_down_and_resume_after() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let mut pg = Postgres::start();
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("DATABASE_URL", &pg.url()), ("READ_REPLICA_RATIO", "0")],
    );
    let url = proxy.url();
    assert_eq!(post(&format!("{url}{DB}/collections"), json!({"name": "before"})).status, 200);

    pg.stop();
    let refused = post(&format!("{url}{DB}/collections"), json!({"name": "during"}));
    assert_eq!(refused.status, 503, "{refused:?}");
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("write-ahead log") && message.contains("not executed"), "{message}");
    assert!(
        !primary.collection_names().contains(&"during".to_string()),
        "nothing executed unlogged"
    );
    assert!(!replica.collection_names().contains(&"during".to_string()));
    let read = get(&format!("{url}{DB}/collections/before"));
    assert_eq!(read.status, 200, "reads are unaffected: {read:?}");
    let status = get(&format!("{url}/status"));
    assert_eq!(status.status, 200);
    assert!(status.body["write_ahead_log"]["error"].is_string(), "{}", status.body);

    pg.start_again();
    wait_until("writes succeed again", Duration::from_secs(20), || {
        post(&format!("{url}{DB}/collections"), json!({"name": "after"})).status == 200
    });
    assert!(primary.collection_names().contains(&"after".to_string()));
    assert!(proxy.log().contains("write-ahead log store (postgresql) failed"));
    assert!(proxy.log().contains("reachable again"));
}
