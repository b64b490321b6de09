//! Replay reads what an instance owes in windows bounded in bytes as well as in entries, so its
//! memory does not grow with the writes' sizes; a window always holds one entry, however large,
//! and ends before an entry still executing, whose body it does not read.
//! Against the real stores (an SQLite file, a PostgreSQL server), no Chroma needed.

mod support;

use std::time::Duration;

use actix_web::web::Bytes;
use chroma_ha::config::DatabaseUrl;
use chroma_ha::instance::InstanceName;
use chroma_ha::policy::Scope;
use chroma_ha::wal::models::{EntryState, Resolution, Seq, WriteRecord};
use chroma_ha::wal::store::WalStore;
use support::WalBackend;

const MB: usize = 1 << 20;

fn owed_windows(wal: WalBackend) {
    let url: DatabaseUrl = wal.database_url().parse().unwrap();
    let replica = InstanceName::new("replica".into());
    let store = WalStore::open(&url, vec![InstanceName::new("primary".into()), replica.clone()])
        .expect("open the WAL store");
    let lease = store.lease().unwrap();
    let epoch = store.take_lease("test", "http://127.0.0.1:1", &lease, Duration::from_secs(60));
    store.hold(epoch.unwrap().expect("a fresh lease is free"));
    let record = |n: usize, size: usize| WriteRecord {
        txn_id: format!("t{n}"),
        idempotency_key: None,
        kind: "add",
        method: "POST".into(),
        path: "/api/v2/tenants/t/databases/d/collections/c/add".into(),
        body: Bytes::from(vec![b'x'; size]),
        scope: Scope::Collection("c".into()),
    };
    // Ten 1 MB entries, then one of 5 MB, then two small ones.
    let sizes: Vec<usize> = [vec![MB; 10], vec![5 * MB], vec![10, 10]].concat();
    let records: Vec<WriteRecord> = sizes.iter().enumerate().map(|(n, s)| record(n, *s)).collect();
    let refs: Vec<&WriteRecord> = records.iter().collect();
    store.commit(Seq(1), &refs, &[], 0).expect("append");
    // Executed on the primary, all but the last, which is still executing.
    let executed = |seq: i64| Resolution {
        seq: Seq(seq),
        state: EntryState::Committed,
        status: Some(200),
        response: None,
        error: None,
        applied_on: Some(InstanceName::new("primary".into())),
    };
    let resolutions: Vec<Resolution> = (1..=12).map(executed).collect();
    store.commit(Seq(14), &[], &resolutions, 0).expect("record outcomes");

    let window = store.pending(&replica, Seq(0), 2_000, 3 * MB as i64).unwrap();
    let seqs: Vec<i64> = window.entries.iter().map(|p| p.entry.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3], "3 MB of bodies");
    assert!(window.more);
    let window = store.pending(&replica, Seq(10), 2_000, 3 * MB as i64).unwrap();
    let seqs: Vec<i64> = window.entries.iter().map(|p| p.entry.seq.0).collect();
    assert_eq!(seqs, [11], "one entry larger than the budget still comes alone");
    assert_eq!(window.entries[0].entry.body.len(), 5 * MB);
    let window = store.pending(&replica, Seq(11), 2_000, 3 * MB as i64).unwrap();
    let seqs: Vec<i64> = window.entries.iter().map(|p| p.entry.seq.0).collect();
    assert_eq!(seqs, [12], "the window ends before the entry still executing");
    assert!(window.in_flight && !window.more);
    let window = store.pending(&replica, Seq(12), 2_000, 3 * MB as i64).unwrap();
    assert!(window.entries.is_empty() && window.in_flight);
    store.commit(Seq(14), &[], &[executed(13)], 0).expect("record the last outcome");
    let window = store.pending(&replica, Seq(11), 2_000, 3 * MB as i64).unwrap();
    assert_eq!(window.entries.len(), 2);
    assert!(!window.more && !window.in_flight, "nothing owed after the last");
    let window = store.pending(&replica, Seq(0), 2, 64 * MB as i64).unwrap();
    assert_eq!((window.entries.len(), window.more), (2, true), "the entry limit holds too");
    assert!(store.pending(&replica, Seq(13), 2_000, MB as i64).unwrap().entries.is_empty());
}

both_backends!(owed_windows);
