//! `/metrics` and `/events` after a scripted sequence (writes, reads, a replica killed, writes while it is
//! down, its return and catch-up), read with a Prometheus text parser as a scraper would: each
//! named series has the value it should.

mod support;

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use serde_json::json;
use support::{Chroma, DB, Proxy, get, post, wait_until};

/// One scrape of `/metrics`, parsed.
fn scrape(proxy: &Proxy) -> Scrape {
    let answer = get(&format!("{}/metrics", proxy.url()));
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = answer.body.as_str().unwrap().to_string();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the series `name{labels}` (a counter, a gauge, or a histogram's count).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => {
            buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count).unwrap()
        }
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

#[test]
fn every_series_has_the_value_the_sequence_gives_it() {
    let primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("CHECK_INTERVAL", "1"), ("READ_REPLICA_RATIO", "1")],
    );
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "measured"}));
    assert_eq!(created.status, 200);
    let id = created.body["id"].as_str().unwrap().to_string();
    let add = |n: usize| {
        let body = json!({"ids": [format!("r{n}")], "embeddings": [[n as f64, 1.0]]});
        assert_eq!(post(&format!("{url}{DB}/collections/{id}/add"), body).status, 201);
    };
    (0..5).for_each(add);
    wait_until("the replica caught up", Duration::from_secs(10), || {
        proxy.status()["write_ahead_log"]["pending_writes"] == 0
    });
    let count = format!("{url}{DB}/collections/{id}/count");
    for _ in 0..3 {
        assert_eq!(get(&count).body, json!(5));
    }
    let m = scrape(&proxy);
    let requests = "chroma_ha_requests_total";
    assert_eq!(value(&m, requests, &[("kind", "write"), ("code", "200")]), 1.0, "the create");
    assert_eq!(value(&m, requests, &[("kind", "write"), ("code", "201")]), 5.0, "the adds");
    assert_eq!(value(&m, requests, &[("kind", "read"), ("code", "200")]), 3.0);
    assert_eq!(value(&m, "chroma_ha_request_seconds", &[("kind", "write")]), 6.0);
    assert_eq!(value(&m, "chroma_ha_wal_append_seconds", &[]), 6.0, "every write was logged");
    let replica_reads = [("instance", "replica"), ("kind", "read")];
    assert_eq!(value(&m, "chroma_ha_instance_requests_total", &replica_reads), 3.0);
    assert_eq!(value(&m, "chroma_ha_instance_up", &[("instance", "replica")]), 1.0);
    assert_eq!(value(&m, "chroma_ha_wal_pending_writes", &[]), 0.0);

    // The replica dies: the next read fails over from it, and writes pile up for it.
    replica.kill9();
    assert_eq!(get(&count).body, json!(5));
    (5..9).for_each(add);
    let m = scrape(&proxy);
    assert_eq!(value(&m, "chroma_ha_failovers_total", &[("instance", "replica")]), 1.0);
    assert!(value(&m, "chroma_ha_instance_failures_total", &[("instance", "replica")]) >= 1.0);
    assert_eq!(value(&m, "chroma_ha_instance_up", &[("instance", "replica")]), 0.0);
    let unhealthy = [("instance", "replica"), ("state", "unhealthy")];
    assert_eq!(value(&m, "chroma_ha_instance_state", &unhealthy), 1.0);
    let healthy = [("instance", "replica"), ("state", "healthy")];
    assert_eq!(value(&m, "chroma_ha_instance_state", &healthy), 0.0);
    let lag = [("instance", "replica")];
    assert_eq!(value(&m, "chroma_ha_replication_lag_entries", &lag), 4.0);
    assert!(value(&m, "chroma_ha_replication_lag_seconds", &lag) > 0.0);
    assert_eq!(value(&m, "chroma_ha_replication_lag_entries", &[("instance", "primary")]), 0.0);
    assert_eq!(value(&m, "chroma_ha_wal_pending_writes", &[]), 4.0);
    assert!(value(&m, "chroma_ha_wal_oldest_pending_seconds", &[]) > 0.0);
    assert_eq!(value(&m, "chroma_ha_wal_store_up", &[]), 1.0);
    assert_eq!(value(&m, "chroma_ha_wal_failed_replays", &[]), 0.0);

    // It returns and replay catches it up.
    replica.spawn();
    wait_until("the replica caught up again", Duration::from_secs(20), || {
        let m = scrape(&proxy);
        value(&m, "chroma_ha_replication_lag_entries", &lag) == 0.0
            && value(&m, "chroma_ha_instance_up", &[("instance", "replica")]) == 1.0
    });
    let m = scrape(&proxy);
    assert_eq!(value(&m, "chroma_ha_instance_state", &healthy), 1.0);
    assert_eq!(value(&m, "chroma_ha_wal_pending_writes", &[]), 0.0);
    assert_eq!(value(&m, "chroma_ha_wal_oldest_pending_seconds", &[]), 0.0);
    assert_eq!(value(&m, requests, &[("kind", "write"), ("code", "201")]), 9.0);
    assert_eq!(value(&m, "chroma_ha_unavailable_total", &[]), 0.0);

    // The same sequence in /events, newest first: down (with the failover), then up.
    let events = get(&format!("{url}/events")).body;
    let kinds: Vec<(&str, &str)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["instance"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds.first(), Some(&("up", "replica")), "{events}");
    assert!(kinds.contains(&("failover", "replica")) && kinds.contains(&("down", "replica")));
    let failover = events["events"].as_array().unwrap().iter().find(|e| e["kind"] == "failover");
    let detail = failover.unwrap()["detail"].as_str().unwrap();
    assert!(detail.starts_with("GET: ") && detail.ends_with("re-sent to primary"), "{detail}");
    assert!(!detail.contains(&id), "/events is open: no path names a collection: {detail}");
}
