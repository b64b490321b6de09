//! Fencing in the WAL store itself (DESIGN 12), against the real stores (an SQLite file, a
//! PostgreSQL server), two handles standing for two proxies: the lease is taken by
//! compare-and-set, and once another proxy took it, every change the first one tries to make to
//! the log is refused (appends, outcomes, applied marks, mappings, retention), while the new
//! holder's go through.

mod support;

use std::time::Duration;

use actix_web::web::Bytes;
use chroma_ha::config::DatabaseUrl;
use chroma_ha::instance::InstanceName;
use chroma_ha::policy::Scope;
use chroma_ha::wal::models::{EntryState, MappingRow, Resolution, Seq, WriteRecord};
use chroma_ha::wal::store::{WalError, WalStore};
use support::WalBackend;

const TTL: Duration = Duration::from_secs(60);

fn record(n: usize) -> WriteRecord {
    WriteRecord {
        txn_id: format!("t{n}"),
        idempotency_key: None,
        kind: "add",
        method: "POST".into(),
        path: "/api/v2/tenants/t/databases/d/collections/c/add".into(),
        body: Bytes::from_static(b"{}"),
        scope: Scope::Collection("c".into()),
    }
}

fn fenced<T: std::fmt::Debug>(what: &str, result: Result<T, WalError>) {
    assert!(matches!(result, Err(WalError::Fenced(_))), "{what} by the old leader: {result:?}");
}

fn a_lease_taken_over_fences_the_old_holder(wal: WalBackend) {
    let url: DatabaseUrl = wal.database_url().parse().unwrap();
    let names = vec![InstanceName::new("primary".into()), InstanceName::new("replica".into())];
    let (a, b) =
        (WalStore::open(&url, names.clone()).unwrap(), WalStore::open(&url, names).unwrap());
    let replica = InstanceName::new("replica".into());

    fenced("an append before any lease", a.commit(Seq(1), &[&record(0)], &[], 0));
    let seen = a.lease().unwrap();
    let first = a.take_lease("a", "http://a", &seen, TTL).unwrap().expect("free");
    assert_eq!(b.take_lease("b", "http://b", &seen, TTL).unwrap(), None, "compare-and-set");
    a.hold(first);
    a.commit(Seq(1), &[&record(1)], &[], 0).expect("the holder appends");
    assert!(a.renew_lease("a", first, TTL).unwrap());

    let now = b.lease().unwrap();
    assert_eq!((now.holder.as_deref(), now.epoch), (Some("a"), first));
    let second = b.take_lease("b", "http://b", &now, TTL).unwrap().expect("taken over");
    assert_eq!(second, first + 1);
    b.hold(second);
    assert!(!a.renew_lease("a", first, TTL).unwrap(), "the old holder's renewal finds it gone");

    fenced("an append", a.commit(Seq(2), &[&record(2)], &[], 0));
    let outcome = Resolution {
        seq: Seq(1),
        state: EntryState::Failed,
        status: None,
        response: None,
        error: Some("blind".into()),
        applied_on: None,
    };
    fenced("an outcome", a.commit(Seq(2), &[], &[outcome], 0));
    fenced("an applied mark", a.mark_applied(&replica, &[Seq(1)]));
    fenced("an attempt", a.record_attempt(&replica, Seq(1), "no", 5));
    let mapping = MappingRow {
        canonical_id: "c".into(),
        instance: replica.clone(),
        instance_id: "c-on-replica".into(),
        tenant: "t".into(),
        database_name: "d".into(),
        name: "c".into(),
        updated_ms: 0,
    };
    fenced("a mapping", a.save_mapping(&mapping));
    fenced("a mapping deleted", a.delete_mappings(&replica, None));
    fenced("retention", a.purge(i64::MAX, i64::MAX, 10));
    fenced("recovery", a.recover());
    fenced("a retry", a.retry_failed(None, None));
    fenced("a skip", a.skip(Seq(1), &replica, "no"));

    // Nothing of the old holder's changed the log; the new holder's changes go through.
    let (status, _) = b.status(0, false).unwrap();
    assert_eq!(status.head_seq, Seq(1));
    assert_eq!(b.transaction("t1").unwrap().unwrap().state, EntryState::Logged);
    b.recover().expect("the new holder recovers");
    assert_eq!(b.transaction("t1").unwrap().unwrap().state, EntryState::Queued);
    b.commit(Seq(2), &[&record(3)], &[], 0).expect("the new holder appends");
    b.save_mapping(&mapping).expect("and maps");
    assert!(b.release_lease("b", second).unwrap());
    let released = a.lease().unwrap();
    assert_eq!((released.holder, released.epoch), (None, second), "released, epoch kept");
}

both_backends!(a_lease_taken_over_fences_the_old_holder);
