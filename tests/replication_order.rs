//! Order: several threads write conflicting operations on the same ids of one collection (add,
//! then upsert, then delete) concurrently; every instance ends identical, because writes to one
//! collection pass through the proxy one at a time and replay keeps the log's order.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DB, Stack, WalBackend, post, wait_identical};

const THREADS: usize = 4;
const ROUNDS: usize = 25;

#[test]
fn conflicting_concurrent_writes_end_identical() {
    let Stack { proxy, primary, replica, wal: _wal } = Stack::start(WalBackend::sqlite(), &[]);
    let created = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "order"}));
    let id = created.body["id"].as_str().unwrap().to_string();
    let base = format!("{}{DB}/collections/{id}", proxy.url());

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let base = base.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let ids: Vec<String> = (0..5).map(|k| format!("shared-{}", (round + k) % 8)).collect();
                    let embeddings: Vec<Vec<f32>> = (0..5).map(|k| vec![t as f32, round as f32, k as f32]).collect();
                    let docs: Vec<String> = (0..5).map(|k| format!("thread {t} round {round} item {k}")).collect();
                    let add = post(&format!("{base}/add"), json!({"ids": ids, "embeddings": embeddings, "documents": docs}));
                    assert!(add.status < 300, "{add:?}");
                    let upsert = post(&format!("{base}/upsert"), json!({"ids": ids, "embeddings": embeddings, "metadatas": (0..5).map(|_| json!({"t": t, "r": round})).collect::<Vec<_>>()}));
                    assert!(upsert.status < 300, "{upsert:?}");
                    let delete = post(&format!("{base}/delete"), json!({"ids": [ids[t % 5].clone()]}));
                    assert!(delete.status < 300, "{delete:?}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(30));
    assert!(print["order"]["ids"].as_array().is_some_and(|ids| !ids.is_empty()), "{print}");
}
