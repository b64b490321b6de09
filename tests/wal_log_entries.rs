//! Every write through the proxy has exactly one WAL entry, in the right state, logged before
//! execution; rejected writes are recorded as rejected and the client gets Chroma's error;
//! reads leave no entry. Runs on both WAL backends.

mod support;

use serde_json::json;
use std::time::Duration;

use support::{Chroma, DB, Proxy, WalBackend, get, post, wait_until};

fn txn(answer: &support::Answer) -> String {
    answer
        .header("x-transaction-id")
        .expect("every write answer carries X-Transaction-Id")
        .to_string()
}

fn every_write_has_one_entry(wal: WalBackend) {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let db = wal.database_url();
    let proxy =
        Proxy::start(&primary, &[&replica], &[("DATABASE_URL", &db), ("READ_REPLICA_RATIO", "0")]);
    let url = proxy.url();

    let created = post(&format!("{url}{DB}/collections"), json!({"name": "wal-entries"}));
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();
    let added = post(
        &format!("{url}{DB}/collections/{id}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 2.0], [3.0, 4.0]]}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    // Chroma refuses mismatched list lengths: the client gets Chroma's own error.
    let rejected = post(
        &format!("{url}{DB}/collections/{id}/add"),
        json!({"ids": ["c", "d"], "embeddings": [[1.0, 2.0]]}),
    );
    assert_eq!(rejected.status, 400, "{rejected:?}");
    assert_eq!(rejected.body["error"], "InvalidArgumentError");
    let deleted = post(&format!("{url}{DB}/collections/{id}/delete"), json!({"ids": ["a"]}));
    assert_eq!(deleted.status, 200, "{deleted:?}");
    for _ in 0..5 {
        assert_eq!(get(&format!("{url}{DB}/collections/{id}/count")).status, 200);
        assert_eq!(post(&format!("{url}{DB}/collections/{id}/get"), json!({})).status, 200);
    }

    let rows = wal.query("SELECT txn_id, kind, state, status FROM wal_entries ORDER BY seq");
    let expected = [
        (txn(&created), "create_collection", "committed", "200"),
        (txn(&added), "add", "committed", "201"),
        (txn(&rejected), "add", "rejected", "400"),
        (txn(&deleted), "delete_records", "committed", "200"),
    ];
    let expected: Vec<String> =
        expected.iter().map(|(t, k, s, c)| format!("{t}|{k}|{s}|{c}")).collect();
    assert_eq!(rows, expected, "one entry per write, none per read");

    // The primary executed the committed writes and replay applies them to the replica; a
    // rejected write is owed to no instance.
    let applied_query = "SELECT e.kind, a.instance, a.state FROM wal_applied a JOIN wal_entries e ON e.seq = a.seq ORDER BY a.seq, a.instance";
    wait_until("replay applied every entry", Duration::from_secs(20), || {
        wal.query(applied_query).iter().all(|row| row.ends_with("|applied"))
    });
    assert_eq!(
        wal.query(applied_query),
        [
            "create_collection|primary|applied",
            "create_collection|replica|applied",
            "add|primary|applied",
            "add|replica|applied",
            "delete_records|primary|applied",
            "delete_records|replica|applied",
        ]
    );
    // Each entry names the scope it changes; no header (so no credential) is stored at all.
    let scopes = wal.query("SELECT DISTINCT scope FROM wal_entries ORDER BY scope");
    assert_eq!(
        scopes,
        [format!("collection:{id}"), "database:default_tenant/default_database".to_string()]
    );

    let view = get(&format!("{url}/transactions/{}", txn(&added)));
    assert_eq!(view.status, 200, "{view:?}");
    assert_eq!(view.body["state"], "committed");
    assert_eq!(view.body["instances"][0]["state"], "applied");
    assert_eq!(view.body["instances"][1]["state"], "applied");
    let status = proxy.status();
    assert_eq!(status["write_ahead_log"]["pending_writes"], 0);
    assert_eq!(status["write_ahead_log"]["total_replayed"], 3);
    assert_eq!(get(&format!("{url}/transactions/no-such-id")).status, 404);
    assert_eq!(get(&format!("{url}{DB}/collections/{id}/count")).body, json!(1));
}

both_backends!(every_write_has_one_entry);
