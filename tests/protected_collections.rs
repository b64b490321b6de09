//! Protected collections: deleting `global` through the proxy is refused with 403 and a clear
//! message, logged, never logged in the WAL, and the collection stays on every instance.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DB, Stack, WalBackend, post, request, wait_until};

#[test]
fn deleting_a_protected_collection_is_refused() {
    let Stack { proxy, primary, replica, wal } = Stack::start(WalBackend::sqlite(), &[]);
    assert_eq!(
        post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "global"})).status,
        200
    );
    assert_eq!(
        post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "scratch"})).status,
        200
    );
    wait_until("both collections on the replica", Duration::from_secs(10), || {
        replica.collection_names().len() == 2
    });

    let refused = request("DELETE", &format!("{}{DB}/collections/global", proxy.url()), None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body["error"], "AuthorizationError");
    assert!(refused.body["message"].as_str().unwrap().contains("protected"));
    assert!(proxy.log().contains("collection `global` is protected"));

    // An unprotected one is deleted everywhere.
    assert_eq!(
        request("DELETE", &format!("{}{DB}/collections/scratch", proxy.url()), None).status,
        200
    );
    wait_until("scratch is gone from the replica", Duration::from_secs(10), || {
        replica.collection_names() == ["global"]
    });
    assert_eq!(primary.collection_names(), ["global"]);
    assert_eq!(
        wal.query("SELECT count(*) FROM wal_entries WHERE kind = 'delete_collection'"),
        ["1"]
    );
}
