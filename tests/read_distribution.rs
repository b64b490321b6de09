//! With both instances healthy and READ_REPLICA_RATIO=0.8, reads are spread over both, in that
//! proportion, and writes all go to the primary.

mod support;

use std::time::Duration;

use support::{Chroma, DB, Proxy, get, post, wait_until};

#[test]
fn reads_are_spread_by_ratio_and_writes_go_to_the_primary() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(&primary, &[&replica], &[("READ_REPLICA_RATIO", "0.8")]);

    for _ in 0..100 {
        let answer = get(&format!("{}{DB}/collections_count", proxy.url()));
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let on_primary = proxy.served("primary", "reads");
    let on_replica = proxy.served("replica", "reads");
    assert_eq!(on_primary + on_replica, 100);
    assert!((75..=85).contains(&on_replica), "replica served {on_replica} of 100 reads");

    for i in 0..5 {
        let answer = post(
            &format!("{}{DB}/collections", proxy.url()),
            serde_json::json!({"name": format!("rd-{i}")}),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(proxy.served("primary", "writes"), 5);
    assert_eq!(proxy.served("replica", "writes"), 0);
    assert_eq!(primary.collection_names().len(), 5);
    wait_until("replay copies the collections to the replica", Duration::from_secs(10), || {
        replica.collection_names() == primary.collection_names()
    });
}
