//! Idempotency-Key: the same key and request return the first answer without a second
//! execution, even across a proxy restart; the same key with another request is 422.
//! Runs on both WAL backends.

mod support;

use serde_json::json;
use support::{Chroma, DB, Proxy, WalBackend, try_request};

fn send(proxy: &Proxy, key: &str, name: &str) -> support::Answer {
    let body = serde_json::to_vec(&json!({"name": name})).unwrap();
    let headers = [("idempotency-key", key), ("content-type", "application/json")];
    try_request("POST", &format!("{}{DB}/collections", proxy.url()), &headers, Some(&body)).unwrap()
}

fn same_key_same_answer_one_execution(wal: WalBackend) {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let db = wal.database_url();
    let settings = [("DATABASE_URL", db.as_str())];
    let mut proxy = Proxy::start(&primary, &[&replica], &settings);

    // Creating a collection twice fails in Chroma (it exists), so a second execution would show.
    let first = send(&proxy, "key-1", "idempotent");
    assert_eq!(first.status, 200, "{first:?}");
    let again = send(&proxy, "key-1", "idempotent");
    assert_eq!(
        (again.status, &again.body),
        (200, &first.body),
        "the first answer, not Chroma's 409"
    );
    assert_eq!(again.header("x-transaction-id"), first.header("x-transaction-id"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let other = send(&proxy, "key-1", "another-name");
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(other.body["error"], "InvalidArgumentError");

    // The alias header works the same way.
    let body = serde_json::to_vec(&json!({"name": "idempotent"})).unwrap();
    let alias = try_request(
        "POST",
        &format!("{}{DB}/collections", proxy.url()),
        &[("x-transaction-id", "key-1"), ("content-type", "application/json")],
        Some(&body),
    )
    .unwrap();
    assert_eq!((alias.status, &alias.body), (200, &first.body));

    // Across a restart on the same WAL store.
    proxy.sigterm();
    assert_eq!(proxy.wait_exit(std::time::Duration::from_secs(15)).code(), Some(0));
    let proxy = Proxy::start(&primary, &[&replica], &settings);
    let after_restart = send(&proxy, "key-1", "idempotent");
    assert_eq!((after_restart.status, &after_restart.body), (200, &first.body));
    assert_eq!(send(&proxy, "key-1", "third-name").status, 422);

    // One execution: one collection on the primary, one entry in the log.
    assert_eq!(primary.collection_names(), ["idempotent"]);
    let entries = wal.query("SELECT count(*) FROM wal_entries WHERE idempotency_key = 'key-1'");
    assert_eq!(entries, ["1"]);
    let total = wal.query("SELECT count(*) FROM wal_entries");
    assert_eq!(total, ["1"], "duplicates and refused reuses leave no entry");

    // Malformed keys are refused before anything is logged.
    let body = serde_json::to_vec(&json!({"name": "bad-key"})).unwrap();
    let url = format!("{}{DB}/collections", proxy.url());
    let twice = try_request(
        "POST",
        &url,
        &[("idempotency-key", "a"), ("idempotency-key", "b")],
        Some(&body),
    )
    .unwrap();
    assert_eq!(twice.status, 400, "{twice:?}");
    let spaced =
        try_request("POST", &url, &[("idempotency-key", "has space")], Some(&body)).unwrap();
    assert_eq!(spaced.status, 400, "{spaced:?}");
    assert_eq!(wal.query("SELECT count(*) FROM wal_entries"), ["1"]);
}

both_backends!(same_key_same_answer_one_execution);
