//! Replica `kill -9` during the mixed workload, then back: reads and writes never fail, and
//! after catch-up both instances are identical and as the oracle expects.

mod support;

use support::{Stack, WalBackend, replica_outage_under_workload};

#[test]
fn replica_outage_is_caught_up() {
    let Stack { proxy, primary, mut replica, wal: _wal } =
        Stack::start(WalBackend::sqlite(), &[("CHECK_INTERVAL", "1")]);
    replica_outage_under_workload(&proxy, &primary, &mut replica, "rdown");
}
