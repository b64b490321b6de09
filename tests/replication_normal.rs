//! Normal operation: a mixed workload (creates, adds, upserts, updates, deletes, collection
//! deletes) through the official Python client, reads spread over both instances; shortly after
//! it stops every instance is identical and matches the workload's oracle. Both WAL backends.

mod support;

use std::time::Duration;

use support::{
    Stack, WalBackend, assert_matches_oracle, python, python_result, wait_identical, wait_until,
};

fn mixed_workload_leaves_every_instance_identical(wal: WalBackend) {
    let Stack { proxy, primary, replica, wal: _wal } =
        Stack::start(wal, &[("READ_REPLICA_RATIO", "0.8")]);

    let result = python_result(&python("workload.py", &[&proxy.url(), "mix", "150"]));
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    assert_eq!(result["ids_stable"], true);

    let print = wait_identical(&[&primary, &replica], Duration::from_secs(30));
    assert_matches_oracle(&print, &result, "mix-");
    wait_until("nothing pending", Duration::from_secs(10), || {
        proxy.status()["write_ahead_log"]["pending_writes"] == 0
    });
    assert!(proxy.served("replica", "reads") > 0, "reads were spread over the replica too");
}

both_backends!(mixed_workload_leaves_every_instance_identical);
