//! `chroma-ha check`, the monitoring plugin, against a live stack in each state: healthy (0), a
//! replica down with a backlog (1, then 2 past the threshold), nothing usable (2), an answer that
//! is not chroma-ha's (3), the proxy down (3). Exit codes and perfdata are what a Nagios or
//! Icinga server reads. `chroma-ha status` prints the same figures for a person.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Chroma, DB, Proxy, post, wait_until};

/// Runs the plugin against `url`: its exit code and its one line.
fn check(url: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .args(["check", "--url", url, "--timeout", "5s"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    (out.status.code().unwrap(), stdout.trim().to_string())
}

#[test]
fn check_reports_each_state_with_its_exit_code() {
    let mut primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let mut proxy = Proxy::start(&primary, &[&replica], &[("CHECK_INTERVAL", "1")]);
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "checked"}));
    let id = created.body["id"].as_str().unwrap().to_string();
    wait_until("nothing pending", Duration::from_secs(10), || {
        proxy.status()["write_ahead_log"]["pending_writes"] == 0
    });

    let (code, line) = check(&url, &[]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("CHROMA-HA OK - 2/2 instances usable"), "{line}");
    let (code, summary) = status(&url);
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("2 of 2 instances usable"), "{summary}");
    assert!(summary.contains("\nreplica      healthy"), "{summary}");
    assert!(summary.contains("WAL sqlite: 0 pending"), "{summary}");
    assert!(line.contains("| pending_writes=0;0;10 failed_replays=0;0;2"), "{line}");

    replica.kill9();
    wait_until("the replica is down", Duration::from_secs(10), || {
        proxy.instance_status("replica")["healthy"] == false
    });
    let add = |n: usize| {
        let body = json!({"ids": [format!("r{n}")], "embeddings": [[n as f64, 1.0]]});
        assert_eq!(post(&format!("{url}{DB}/collections/{id}/add"), body).status, 201);
    };
    (0..3).for_each(add);
    let (code, line) = check(&url, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("CHROMA-HA WARNING - 1/2 instances usable"), "{line}");
    assert!(line.contains("replica unhealthy"), "{line}");
    assert!(line.contains("| pending_writes=3;0;10 "), "{line}");
    let (code, line) = check(&url, &["--pending-warning", "5"]);
    assert_eq!(code, 1, "still a warning: the replica is down: {line}");
    assert!(line.contains("pending_writes=3;5;10"), "{line}");

    (3..11).for_each(add);
    let (code, line) = check(&url, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("11 pending writes") && line.contains("pending_writes=11;0;10"),
        "{line}"
    );

    primary.kill9();
    wait_until("the primary is down", Duration::from_secs(10), || {
        proxy.instance_status("primary")["healthy"] == false
    });
    let (code, line) = check(&url, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("0/2 instances usable; no usable Chroma instance"), "{line}");

    primary.restart();
    let (code, line) = check(&primary.url(), &[]);
    assert_eq!(code, 3, "Chroma itself is not chroma-ha: {line}");
    assert!(line.starts_with("CHROMA-HA UNKNOWN - "), "{line}");

    proxy.kill9();
    let (code, line) = check(&url, &[]);
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("CHROMA-HA UNKNOWN - ") && line.contains("/status"), "{line}");
    assert_eq!(status(&url).0, 1, "status cannot read a dead proxy");
}

/// Runs `chroma-ha status` against `url`: its exit code and what it printed.
fn status(url: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .args(["status", "--url", url])
        .output()
        .unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}
