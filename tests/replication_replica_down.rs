//! Replica `kill -9` during the mixed workload, then back: reads and writes never fail, and
//! after catch-up both instances are identical and as the oracle expects.

mod support;

use std::time::Duration;

use support::{
    Stack, WalBackend, assert_matches_oracle, python_result, spawn_workload, wait_identical,
    wait_until,
};

#[test]
fn replica_outage_is_caught_up() {
    let Stack { proxy, primary, mut replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("CHECK_INTERVAL", "1")]);
    let workload = spawn_workload(&proxy, "rdown", 250);
    wait_until("the workload is under way", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= 30
    });
    replica.kill9();
    let before = proxy.served("primary", "writes");
    wait_until("writes go on without the replica", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= before + 60
    });
    let backlog = proxy.instance_status("replica")["replication_lag"]["entries"].as_i64().unwrap();
    assert!(backlog > 0, "the replica owes the writes made while it was down");
    replica.restart();
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &result, "rdown-");
}
