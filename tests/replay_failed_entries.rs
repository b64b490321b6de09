//! A replayed entry an instance keeps refusing is marked failed after MAX_REPLAY_RETRIES,
//! counted in `failed_replays` and listed by `GET /admin/wal/failed`, and holds back the later
//! writes of its collection on that instance (they wait, so a retry never applies an old write
//! over a newer one); once the cause is repaired (here a wrong collection mapping, fixed with
//! `POST /admin/create_mapping`), `POST /admin/wal/retry` applies it, then the writes it held
//! back, and the instances end identical. `POST /admin/wal/skip` resolves one instead.

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

/// A stack whose replica refuses the next write of collection `repair` (its mapping is broken
/// by hand); answers (canonical id, the replica's real id).
fn broken_mapping(proxy: &support::Proxy, replica: &support::Chroma) -> (String, String) {
    let created = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "repair"}));
    let canonical = created.body["id"].as_str().unwrap().to_string();
    wait_until("the collection reached the replica", Duration::from_secs(10), || {
        replica.collection_names() == ["repair"]
    });
    let replica_id = get(&format!("{}{DB}/collections/repair", replica.url())).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = "00000000-0000-4000-8000-000000000000";
    let body = json!({"collection_name": "repair", "primary_id": canonical, "replica_id": wrong});
    assert_eq!(admin(proxy, "POST", "/admin/create_mapping", Some(body)).status, 200);
    (canonical, replica_id)
}

/// An add the replica refuses, then a delete of the same record that it would accept (a delete
/// of what is gone counts as done): the delete must wait behind the failed add.
fn add_then_delete(proxy: &support::Proxy, canonical: &str) -> (support::Answer, support::Answer) {
    let records = format!("{}{DB}/collections/{canonical}", proxy.url());
    let add = post(&format!("{records}/add"), json!({"ids": ["x"], "embeddings": [[1.0, 2.0]]}));
    assert_eq!(add.status, 201, "{add:?}");
    let delete = post(&format!("{records}/delete"), json!({"ids": ["x"]}));
    assert_eq!(delete.status, 200, "{delete:?}");
    (add, delete)
}

fn on_replica(proxy: &support::Proxy, write: &support::Answer) -> Value {
    let txn = write.header("x-transaction-id").unwrap();
    let view = get(&format!("{}/transactions/{txn}", proxy.url())).body;
    view["instances"].as_array().unwrap().iter().find(|i| i["instance"] == "replica").unwrap()
        ["state"]
        .clone()
}

#[test]
fn failed_replays_are_listed_hold_back_later_writes_and_are_retried() {
    let Stack { proxy, primary, replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("ADMIN_TOKEN", TOKEN), ("MAX_REPLAY_RETRIES", "2")]);
    let (canonical, replica_id) = broken_mapping(&proxy, &replica);
    let (add, delete) = add_then_delete(&proxy, &canonical);

    wait_until("the replay failed for good", Duration::from_secs(20), || {
        proxy.status()["write_ahead_log"]["failed_replays"] == 1
    });
    let failed = admin(&proxy, "GET", "/admin/wal/failed?after=0&limit=10", None);
    let entry = &failed.body["failed"][0];
    assert_eq!(
        (entry["instance"].as_str(), entry["kind"].as_str(), entry["attempts"].as_i64()),
        (Some("replica"), Some("add"), Some(2))
    );
    assert!(entry["last_error"].as_str().unwrap().contains("404"), "{entry}");
    assert_eq!(entry["transaction_id"].as_str(), add.header("x-transaction-id"));
    let seq = entry["seq"].as_i64().unwrap();
    assert_eq!(
        admin(&proxy, "GET", &format!("/admin/wal/failed?after={seq}"), None).body["failed"],
        json!([])
    );
    // The delete would be accepted, but it waits behind the add it must follow.
    std::thread::sleep(Duration::from_millis(1500)); // give replay every chance to overtake
    assert_eq!(on_replica(&proxy, &delete), "pending", "the later write waits");

    // Repair, then retry that entry on that instance: the add, then the delete, are applied.
    let body =
        json!({"collection_name": "repair", "primary_id": canonical, "replica_id": replica_id});
    assert_eq!(admin(&proxy, "POST", "/admin/create_mapping", Some(body)).status, 200);
    let retried =
        admin(&proxy, "POST", "/admin/wal/retry", Some(json!({"seq": seq, "instance": "replica"})));
    assert_eq!(retried.body["requeued"], 1, "{retried:?}");
    wait_until("the delete reached the replica", Duration::from_secs(20), || {
        on_replica(&proxy, &delete) == "applied"
    });
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(20));
    assert!(!print.to_string().contains("\"x\""), "the deleted record stays deleted: {print}");
    assert_eq!(proxy.status()["write_ahead_log"]["failed_replays"], 0);
    let mappings = get(&format!("{}/collection/mappings", proxy.url())).body;
    assert_eq!(mappings["collections"][0]["instances"]["replica"], replica_id.as_str());
    assert!(proxy.log().contains("FAILED after 2 attempts"));
}

#[test]
fn a_skipped_entry_releases_the_writes_it_held_back() {
    let Stack { proxy, primary, replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("ADMIN_TOKEN", TOKEN), ("MAX_REPLAY_RETRIES", "1")]);
    let (canonical, replica_id) = broken_mapping(&proxy, &replica);
    let (_, delete) = add_then_delete(&proxy, &canonical);
    wait_until("the replay failed for good", Duration::from_secs(20), || {
        proxy.status()["write_ahead_log"]["failed_replays"] == 1
    });
    let seq = admin(&proxy, "GET", "/admin/wal/failed", None).body["failed"][0]["seq"].clone();
    let body =
        json!({"collection_name": "repair", "primary_id": canonical, "replica_id": replica_id});
    assert_eq!(admin(&proxy, "POST", "/admin/create_mapping", Some(body)).status, 200);

    let no_reason = json!({"seq": seq, "instance": "replica", "reason": " "});
    assert_eq!(admin(&proxy, "POST", "/admin/wal/skip", Some(no_reason)).status, 400);
    let unknown = json!({"seq": 999_999, "instance": "replica", "reason": "none"});
    assert_eq!(admin(&proxy, "POST", "/admin/wal/skip", Some(unknown)).status, 404);
    let skip = json!({"seq": seq, "instance": "replica", "reason": "added by hand"});
    let skipped = admin(&proxy, "POST", "/admin/wal/skip", Some(skip));
    assert_eq!(skipped.status, 200, "{skipped:?}");
    wait_until("the delete reached the replica", Duration::from_secs(20), || {
        on_replica(&proxy, &delete) == "applied"
    });
    wait_identical(&[&primary, &replica], Duration::from_secs(20));
    assert_eq!(proxy.status()["write_ahead_log"]["failed_replays"], 0);
    assert!(proxy.log().contains("SKIPPED on replica"));
}
