//! A flapping primary: killed and restarted three times during the mixed workload. No client
//! error, nothing lost, no delete resurrected, every instance identical at the end.

mod support;

use std::time::Duration;

use support::{
    Stack, WalBackend, assert_matches_oracle, python_result, spawn_workload, wait_identical,
    wait_until,
};

#[test]
fn a_flapping_primary_loses_nothing() {
    let Stack { proxy, mut primary, replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("CHECK_INTERVAL", "1"), ("REQUEST_TIMEOUT", "5")]);
    let workload = spawn_workload(&proxy, "flap", 450);
    let writes = || proxy.served("primary", "writes") + proxy.served("replica", "writes");
    for round in 0..3 {
        let before = writes();
        wait_until("writes flow", Duration::from_secs(60), || writes() >= before + 30);
        primary.kill9();
        let during = writes();
        wait_until("writes flow without the primary", Duration::from_secs(60), || {
            writes() >= during + 30
        });
        primary.restart();
        eprintln!("flap {round}: primary back after {} writes", writes() - before);
    }
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    assert_eq!(result["ids_stable"], true);
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &result, "flap-");
}
