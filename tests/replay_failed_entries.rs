//! A replayed entry an instance keeps refusing is marked failed after MAX_REPLAY_RETRIES,
//! counted in `failed_replays` and listed by `GET /admin/wal/failed`; once the cause is repaired
//! (here a wrong collection mapping, fixed with `POST /admin/create_mapping`),
//! `POST /admin/wal/retry` applies it and the instances end identical.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{DB, Stack, WalBackend, get, post, try_request, wait_identical, wait_until};

const TOKEN: &str = "replay-admin";

fn admin(proxy: &support::Proxy, method: &str, path: &str, body: Option<Value>) -> support::Answer {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let auth = format!("Bearer {TOKEN}");
    try_request(
        method,
        &format!("{}{path}", proxy.url()),
        &[("authorization", &auth)],
        bytes.as_deref(),
    )
    .unwrap()
}

#[test]
fn failed_replays_are_listed_and_retried() {
    let Stack { proxy, primary, replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("ADMIN_TOKEN", TOKEN), ("MAX_REPLAY_RETRIES", "2")]);
    let created = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "repair"}));
    let canonical = created.body["id"].as_str().unwrap().to_string();
    wait_until("the collection reached the replica", Duration::from_secs(10), || {
        replica.collection_names() == ["repair"]
    });
    let replica_id = get(&format!("{}{DB}/collections/repair", replica.url())).body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Break the mapping by hand: the replica's id becomes one it does not have.
    let wrong = "00000000-0000-4000-8000-000000000000";
    let body = json!({"collection_name": "repair", "primary_id": canonical, "replica_id": wrong});
    assert_eq!(admin(&proxy, "POST", "/admin/create_mapping", Some(body)).status, 200);
    let add = post(
        &format!("{}{DB}/collections/{canonical}/add", proxy.url()),
        json!({"ids": ["x"], "embeddings": [[1.0, 2.0]]}),
    );
    assert_eq!(add.status, 201, "{add:?}");

    wait_until("the replay failed for good", Duration::from_secs(20), || {
        proxy.status()["write_ahead_log"]["failed_replays"] == 1
    });
    let failed = admin(&proxy, "GET", "/admin/wal/failed", None);
    let entry = &failed.body["failed"][0];
    assert_eq!(
        (entry["instance"].as_str(), entry["kind"].as_str(), entry["attempts"].as_i64()),
        (Some("replica"), Some("add"), Some(2))
    );
    assert!(entry["last_error"].as_str().unwrap().contains("404"), "{entry}");
    assert_eq!(entry["transaction_id"].as_str(), add.header("x-transaction-id"));

    // Repair, then retry.
    let body =
        json!({"collection_name": "repair", "primary_id": canonical, "replica_id": replica_id});
    assert_eq!(admin(&proxy, "POST", "/admin/create_mapping", Some(body)).status, 200);
    let retried = admin(&proxy, "POST", "/admin/wal/retry", None);
    assert_eq!(retried.body["requeued"], 1, "{retried:?}");
    wait_identical(&[&primary, &replica], Duration::from_secs(20));
    wait_until("nothing failed any more", Duration::from_secs(10), || {
        proxy.status()["write_ahead_log"]["failed_replays"] == 0
    });
    let mappings = get(&format!("{}/collection/mappings", proxy.url())).body;
    assert_eq!(mappings["collections"][0]["instances"]["replica"], replica_id.as_str());
    assert!(proxy.log().contains("FAILED after 2 attempts"));
}
