//! Tenants, databases, collection renames and reset replicate like record writes: after each,
//! both instances are identical; a reset empties every instance and clears the mappings.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Chroma, Stack, WalBackend, get, post, request, wait_until};

fn databases(instance: &Chroma, tenant: &str) -> Vec<String> {
    let answer = get(&format!("{}/api/v2/tenants/{tenant}/databases", instance.url()));
    let mut names: Vec<String> = answer.body.as_array().map_or(Vec::new(), |a| {
        a.iter().map(|d| d["name"].as_str().unwrap().to_string()).collect()
    });
    names.sort();
    names
}

fn collections(instance: &Chroma, tenant: &str, database: &str) -> Vec<String> {
    let answer = get(&format!(
        "{}/api/v2/tenants/{tenant}/databases/{database}/collections",
        instance.url()
    ));
    let mut names: Vec<String> = answer.body.as_array().map_or(Vec::new(), |a| {
        a.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    });
    names.sort();
    names
}

#[test]
fn tenants_databases_renames_and_reset_replicate() {
    let Stack { proxy, primary, replica, wal: _wal } = Stack::start(WalBackend::sqlite(), &[]);
    let url = proxy.url();

    assert_eq!(post(&format!("{url}/api/v2/tenants"), json!({"name": "acme"})).status, 200);
    assert_eq!(
        post(&format!("{url}/api/v2/tenants/acme/databases"), json!({"name": "sales"})).status,
        200
    );
    let created = post(
        &format!("{url}/api/v2/tenants/acme/databases/sales/collections"),
        json!({"name": "leads"}),
    );
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();
    let renamed = request(
        "PUT",
        &format!("{url}/api/v2/tenants/acme/databases/sales/collections/{id}"),
        Some(json!({"new_name": "prospects"})),
    );
    assert_eq!(renamed.status, 200, "{renamed:?}");
    wait_until(
        "tenant, database and renamed collection on the replica",
        Duration::from_secs(10),
        || {
            databases(&replica, "acme") == ["sales"]
                && collections(&replica, "acme", "sales") == ["prospects"]
        },
    );
    assert_eq!(collections(&primary, "acme", "sales"), ["prospects"]);
    // The renamed collection is found by its new name, with the id the client got.
    let by_name = get(&format!("{url}/api/v2/tenants/acme/databases/sales/collections/prospects"));
    assert_eq!(by_name.body["id"], id.as_str());

    let reset = post(&format!("{url}/api/v2/reset"), json!({}));
    assert_eq!(reset.status, 200, "{reset:?}");
    wait_until("the reset reached the replica", Duration::from_secs(10), || {
        databases(&replica, "acme").is_empty() || collections(&replica, "acme", "sales").is_empty()
    });
    assert!(collections(&primary, "acme", "sales").is_empty());
    wait_until("mappings cleared", Duration::from_secs(10), || {
        get(&format!("{url}/collection/mappings")).body["collections"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

/// A replayed tenant or database create on an instance that already has it counts as done (as a
/// delete of something gone does): refused with 409 forever, it would keep the instance owing,
/// never again the write target.
#[test]
fn a_replayed_create_of_what_exists_counts_as_done() {
    let Stack { proxy, primary, replica, wal: _wal } = Stack::start(WalBackend::sqlite(), &[]);
    let url = proxy.url();
    // Made on the replica behind the proxy's back.
    assert_eq!(
        post(&format!("{}/api/v2/tenants", replica.url()), json!({"name": "early"})).status,
        200
    );
    let on_replica = format!("{}/api/v2/tenants/early/databases", replica.url());
    assert_eq!(post(&on_replica, json!({"name": "already"})).status, 200);

    assert_eq!(post(&format!("{url}/api/v2/tenants"), json!({"name": "early"})).status, 200);
    let database =
        post(&format!("{url}/api/v2/tenants/early/databases"), json!({"name": "already"}));
    assert_eq!(database.status, 200, "{database:?}");
    wait_until("the replica applied both creates", Duration::from_secs(20), || {
        let status = proxy.instance_status("replica");
        status["replication_lag"]["entries"] == 0 && status["state"] == "healthy"
    });
    let wal = proxy.status()["write_ahead_log"].clone();
    assert_eq!(
        (wal["failed_replays"].as_i64(), wal["pending_writes"].as_i64()),
        (Some(0), Some(0)),
        "{wal}"
    );
    assert_eq!(databases(&primary, "early"), databases(&replica, "early"));
    let txn = database.header("x-transaction-id").unwrap();
    let view = get(&format!("{url}/transactions/{txn}")).body;
    assert!(
        view["instances"].as_array().unwrap().iter().all(|i| i["state"] == "applied"),
        "{view}"
    );
}
