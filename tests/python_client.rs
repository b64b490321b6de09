//! Normal operation through the official Python client (`chromadb.HttpClient`) pointed at the
//! proxy: create a collection, add, query, get, delete records, delete the collection, with the
//! records checked on the primary directly.

mod support;

use support::{Chroma, Proxy, python, python_result};

#[test]
fn official_client_works_through_the_proxy() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    // Reads stay on the primary: records written through the proxy reach replicas only once
    // replication exists (WAL and replay issues).
    let proxy = Proxy::start(&primary, &[&replica], &[("READ_REPLICA_RATIO", "0")]);

    let result =
        python_result(&python("normal_ops.py", &[&proxy.url(), &primary.url(), "normal-ops"]));
    assert_eq!(result["ok"], true);

    assert!(proxy.served("primary", "writes") >= 4, "create, add, delete, delete collection");
    assert!(proxy.served("primary", "reads") >= 5);
    assert_eq!(proxy.served("replica", "reads") + proxy.served("replica", "writes"), 0);
    assert!(!primary.collection_names().contains(&"normal-ops".to_string()));
}
