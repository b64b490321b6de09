//! Primary `kill -9` during the mixed workload: no client error; the primary is restarted,
//! catches up from the log, and every instance ends identical and as the oracle expects. The
//! collection ids the client got never change, including for collections created while the
//! primary was down (their canonical id is the replica's). Both WAL backends.

mod support;

use std::time::Duration;

use support::{
    Chroma, Proxy, WalBackend, assert_matches_oracle, get, python_result, spawn_workload,
    wait_identical, wait_until,
};

fn primary_outage_is_invisible_and_healed(wal: WalBackend) {
    let mut primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let db = wal.database_url();
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("DATABASE_URL", &db), ("CHECK_INTERVAL", "1"), ("REQUEST_TIMEOUT", "5")],
    );
    let workload = spawn_workload(&proxy, "outage", 300);
    wait_until("the workload is under way", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= 40
    });
    primary.kill9();
    let writes_on_replica = || proxy.served("replica", "writes");
    wait_until("writes continue on the replica", Duration::from_secs(60), || {
        writes_on_replica() >= 40
    });
    primary.restart();
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    assert_eq!(result["ids_stable"], true, "the client's collection ids never changed");

    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &result, "outage-");

    // Collections created during the outage keep the replica's id as their canonical id.
    let mappings = get(&format!("{}/collection/mappings", proxy.url())).body;
    let collections = mappings["collections"].as_array().unwrap();
    let mut created_during_outage = 0;
    for (name, id) in result["collections"].as_object().unwrap() {
        let mapping = collections.iter().find(|c| &c["name"] == name).unwrap();
        assert_eq!(&mapping["canonical_id"], id, "{name}");
        assert!(
            mapping["instances"]["primary"].is_string()
                && mapping["instances"]["replica"].is_string(),
            "{mapping}"
        );
        if mapping["instances"]["replica"] == *id && mapping["instances"]["primary"] != *id {
            created_during_outage += 1;
        }
    }
    assert!(created_during_outage > 0, "some collections were created while the primary was down");
    wait_until("the primary is the write target again", Duration::from_secs(20), || {
        proxy.instance_status("primary")["state"] == "healthy"
    });
}

both_backends!(primary_outage_is_invisible_and_healed);
