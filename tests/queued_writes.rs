//! Every instance down: a record write is logged as queued and answered 202 with its
//! transaction id; a collection create is refused with 503. Runs on both WAL backends.

mod support;

use serde_json::json;
use std::time::Duration;

use support::{Chroma, DB, Proxy, WalBackend, get, post, wait_until};

fn writes_queue_while_every_instance_is_down(wal: WalBackend) {
    let mut primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let db = wal.database_url();
    let proxy =
        Proxy::start(&primary, &[&replica], &[("DATABASE_URL", &db), ("CHECK_INTERVAL", "1")]);
    let created = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "queued"}));
    assert_eq!(created.status, 200);
    let id = created.body["id"].as_str().unwrap().to_string();
    wait_until("the create reached the replica", Duration::from_secs(10), || {
        replica.collection_names() == ["queued"]
    });

    primary.kill9();
    replica.kill9();
    let add = post(
        &format!("{}{DB}/collections/{id}/add", proxy.url()),
        json!({"ids": ["q1"], "embeddings": [[1.0, 0.0]]}),
    );
    assert_eq!(add.status, 202, "{add:?}");
    assert_eq!(add.body["state"], "queued");
    let txn = add.header("x-transaction-id").unwrap().to_string();

    let view = get(&format!("{}/transactions/{txn}", proxy.url()));
    assert_eq!(view.status, 200);
    assert_eq!(view.body["state"], "queued");
    assert_eq!(view.body["kind"], "add");
    assert!(view.body["instances"].as_array().unwrap().iter().all(|i| i["state"] == "pending"));
    let wal_status = &proxy.status()["write_ahead_log"];
    assert_eq!(wal_status["pending_writes"], 1, "{wal_status}");
    assert!(wal_status["oldest_pending"].as_f64().is_some());
    assert_eq!(
        wal.query(&format!("SELECT state FROM wal_entries WHERE txn_id = '{txn}'")),
        ["queued"]
    );

    let create =
        post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "needs-an-answer"}));
    assert_eq!(create.status, 503, "{create:?}");
    assert_eq!(create.body["error"], "InternalError");
    let failed_txn = create.header("x-transaction-id").unwrap();
    assert_eq!(
        wal.query(&format!("SELECT state FROM wal_entries WHERE txn_id = '{failed_txn}'")),
        ["failed"]
    );

    let read = get(&format!("{}{DB}/collections/{id}/count", proxy.url()));
    assert_eq!(read.status, 503, "reads fail while nothing is up: {read:?}");
    assert_eq!(get(&format!("{}/health", proxy.url())).status, 503);
}

both_backends!(writes_queue_while_every_instance_is_down);
