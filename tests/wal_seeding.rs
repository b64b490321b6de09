//! The seeding rows of the WAL store (DESIGN 13), against the real stores: a seeding's floor is
//! the entry before the first one its source has not applied, it only goes down when the copy
//! starts again from another source, and finishing it marks the entries up to the floor applied
//! on the seeded instance, answers what it owed of them per scope (once: a replay of those
//! entries afterwards settles nothing more), deletes the row, and leaves later entries owed.

mod support;

use std::time::Duration;

use actix_web::web::Bytes;
use chroma_ha::config::DatabaseUrl;
use chroma_ha::instance::InstanceName;
use chroma_ha::policy::Scope;
use chroma_ha::wal::models::{EntryState, Resolution, Seq, WriteRecord};
use chroma_ha::wal::store::WalStore;
use support::WalBackend;

fn record(n: usize, collection: &str) -> WriteRecord {
    WriteRecord {
        txn_id: format!("t{n}"),
        idempotency_key: None,
        kind: "add",
        method: "POST".into(),
        path: format!("/api/v2/tenants/t/databases/d/collections/{collection}/add"),
        body: Bytes::from_static(b"{}"),
        scope: Scope::Collection(collection.into()),
    }
}

fn committed_on(seq: i64, instance: &InstanceName) -> Resolution {
    Resolution {
        seq: Seq(seq),
        state: EntryState::Committed,
        status: Some(200),
        response: None,
        error: None,
        applied_on: Some(instance.clone()),
    }
}

fn the_floor_holds_what_the_copy_holds(wal: WalBackend) {
    let url: DatabaseUrl = wal.database_url().parse().unwrap();
    let name = |n: &str| InstanceName::new(n.into());
    let (primary, replica, other) = (name("primary"), name("replica"), name("replica-2"));
    let store =
        WalStore::open(&url, vec![primary.clone(), replica.clone(), other.clone()]).unwrap();
    let lease = store.lease().unwrap();
    let epoch =
        store.take_lease("a", "http://a", &lease, Duration::from_secs(60)).unwrap().unwrap();
    store.hold(epoch);

    assert_eq!(store.begin_seeding(&replica, &primary).unwrap(), Seq(0), "an empty log");
    // Entries 1-4: 1, 2 and 4 applied on the primary, 3 still owed there (queued).
    let records: Vec<WriteRecord> =
        (1..=4).map(|n| record(n, if n % 2 == 0 { "c2" } else { "c1" })).collect();
    store.commit(Seq(1), &records.iter().collect::<Vec<_>>(), &[], 0).unwrap();
    let done: Vec<Resolution> = [1, 2, 4].iter().map(|s| committed_on(*s, &primary)).collect();
    store.commit(Seq(5), &[], &done, 0).unwrap();
    assert_eq!(store.begin_seeding(&replica, &primary).unwrap(), Seq(0), "never up again");
    assert_eq!(store.seedings().unwrap(), vec![(replica.clone(), primary.clone(), Seq(0))]);
    store.finish_seeding(&replica, Seq(0)).unwrap();
    assert!(store.seedings().unwrap().is_empty());

    assert_eq!(store.begin_seeding(&replica, &primary).unwrap(), Seq(2), "before entry 3");
    // replica-2, as a source, lacks entries 1-4 (nothing applied there): a lower floor.
    assert_eq!(store.begin_seeding(&replica, &other).unwrap(), Seq(0));
    assert_eq!(store.begin_seeding(&replica, &primary).unwrap(), Seq(0), "it stays down");
    store.finish_seeding(&replica, Seq(0)).unwrap();

    assert_eq!(store.begin_seeding(&replica, &primary).unwrap(), Seq(2));
    let mut owed = store.finish_seeding(&replica, Seq(2)).unwrap();
    owed.sort_by_key(|(scope, _)| scope.key());
    let c = |s: &str| Scope::Collection(s.into());
    assert_eq!(owed, vec![(c("c1"), 1), (c("c2"), 1)], "entries 1 and 2, once each");
    assert!(store.seedings().unwrap().is_empty());
    // Replay of 1-4 afterwards moves only 3 and 4: 1 and 2 were settled by the seeding.
    let mut moved = store.mark_applied(&replica, &[Seq(1), Seq(2), Seq(3), Seq(4)]).unwrap();
    moved.sort();
    assert_eq!(moved, vec![Seq(3), Seq(4)]);
}

both_backends!(the_floor_holds_what_the_copy_holds);
