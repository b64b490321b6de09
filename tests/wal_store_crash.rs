//! PostgreSQL crashes (`pg_ctl stop -m immediate`) right after a write, while the proxy runs on.
//! Found by the fault schedules (seed 42): outcomes were committed without waiting for the
//! disk, the crash lost the last one, its entry stayed `logged`, and replay waited behind it
//! forever. Now no entry stays `logged`, the log drains, and both instances hold every
//! acknowledged write.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DB, Stack, WalBackend, get, post, wait_identical, wait_until};

#[test]
fn a_postgres_crash_loses_no_outcome() {
    let Stack { proxy, primary, replica, wal } = Stack::start(WalBackend::postgres(), &[]);
    let WalBackend::Postgres(mut pg) = wal else { unreachable!("started with PostgreSQL") };
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "crash"}));
    let add = format!("{url}{DB}/collections/{}/add", created.body["id"].as_str().unwrap());
    let write = |i: usize| {
        let answer = post(&add, json!({"ids": [format!("r{i:03}")], "embeddings": [[i, 1]]}));
        assert!(answer.status == 200 || answer.status == 201, "{answer:?}");
    };
    (0..20).for_each(write);
    // Within PostgreSQL's WAL writer delay of the last outcome commit.
    pg.crash();
    pg.start_again();
    wait_until("writes succeed again", Duration::from_secs(30), || {
        let body = json!({"ids": ["r020"], "embeddings": [[20, 1]]});
        [200, 201].contains(&post(&add, body).status)
    });
    (21..30).for_each(write);

    wait_until("the log drains", Duration::from_secs(30), || {
        get(&format!("{url}/wal/status")).body["pending_writes"] == 0
    });
    assert_eq!(pg.query("SELECT count(*) FROM wal_entries WHERE state = 'logged'"), ["0"]);
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(30));
    let expected: Vec<String> = (0..30).map(|i| format!("r{i:03}")).collect();
    assert_eq!(print["crash"]["ids"], json!(expected), "every acknowledged add, everywhere");
}
