//! A primary and two replicas (`replica`, `replica-2`): the official client's workload runs
//! across a `kill -9` of the primary, then another across one of `replica-2`, each restarted;
//! afterwards all three are identical and as the oracles expect, and reads were spread over
//! both replicas.

mod support;

use std::time::Duration;

use support::{
    Chroma, Proxy, assert_matches_oracle, python_result, spawn_workload, wait_identical, wait_until,
};

#[test]
fn three_instances_stay_identical_across_two_outages() {
    let mut primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let mut replica_2 = Chroma::start("replica-2");
    let proxy = Proxy::start(
        &primary,
        &[&replica, &replica_2],
        &[("CHECK_INTERVAL", "1"), ("REQUEST_TIMEOUT", "5")],
    );
    let writes = || {
        ["primary", "replica", "replica-2"].map(|i| proxy.served(i, "writes")).iter().sum::<u64>()
    };
    let mut results = Vec::new();
    for (prefix, down) in [("three-a", &mut primary), ("three-b", &mut replica_2)] {
        let workload = spawn_workload(&proxy, prefix, 250);
        let start = writes();
        wait_until("the workload is under way", Duration::from_secs(60), || writes() >= start + 20);
        down.kill9();
        let at_kill = writes();
        wait_until("writes go on", Duration::from_secs(60), || writes() >= at_kill + 20);
        down.restart();
        let result = python_result(&workload.wait_with_output().unwrap());
        assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
        assert_eq!(result["ids_stable"], true, "the client's collection ids never changed");
        results.push((prefix, result));
    }
    let print = wait_identical(&[&primary, &replica, &replica_2], Duration::from_secs(90));
    for (prefix, result) in &results {
        assert_matches_oracle(&print, result, prefix);
    }
    let reads = ["primary", "replica", "replica-2"].map(|i| proxy.served(i, "reads"));
    assert!(
        reads[1] > 0 && reads[2] > 0 && reads[1] + reads[2] > reads[0],
        "reads spread over the replicas (primary, replica, replica-2): {reads:?}"
    );
}
