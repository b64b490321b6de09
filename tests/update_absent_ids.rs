//! Regression (a user's primary outage run): Chroma 1.5.9 re-applies its whole log to a
//! collection's vector index after the backfill a read triggers, so an update that named an
//! absent id later lands on the record an add created (the add's document, the update's
//! embedding). The proxy sends an update only with the ids the instance has, on the write path
//! and in replay: here every instance, the primary that executed and the replica that replayed,
//! serves each record as it was added, and an update of absent ids with embeddings that do not
//! fit the collection is refused with Chroma's own error, as direct.

mod support;

use support::{Chroma, Proxy, python, python_result};

#[test]
fn updates_of_absent_ids_never_reach_chroma() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(&primary, &[&replica], &[("READ_REPLICA_RATIO", "0.5")]);
    let result =
        python_result(&python("update_absent.py", &[&proxy.url(), &primary.url(), &replica.url()]));
    assert_eq!(result["ok"], true);
}
