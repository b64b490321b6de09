//! TLS (issue 15): the proxy serving HTTPS to the official Python client, an `https://` replica
//! behind a TLS-terminating stand-in in front of a real Chroma server (reads, writes, replay
//! after a `kill -9`), certificates verified (an untrusted one is refused), and TLS settings
//! that cannot work stopping the binary with exit status 2. Every certificate is made here.

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::tls::{TestCa, TlsFront, ca};
use support::{
    Chroma, DB, Proxy, assert_matches_oracle, fingerprint, get, post, python, python_result,
    spawn_workload, wait_identical, wait_until,
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A collection's record ids on one instance, read straight from it.
fn ids_on(instance: &Chroma, name: &str) -> Value {
    fingerprint(instance)[name]["ids"].clone()
}

#[test]
fn official_client_over_https_with_an_https_replica() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let front = TlsFront::start(&ca().issue(dir.path(), "replica"), replica.port);
    let served = ca().issue(dir.path(), "proxy");
    let proxy = Proxy::start_with_env(&env(&[
        ("PRIMARY_URL", &primary.url()),
        ("REPLICA_URL", &front.url()),
        ("UPSTREAM_CA_FILE", served.ca.to_str().unwrap()),
        ("TLS_CERT_FILE", served.cert.to_str().unwrap()),
        ("TLS_KEY_FILE", served.key.to_str().unwrap()),
        // Every read the replica can serve goes to it, over TLS.
        ("READ_REPLICA_RATIO", "1"),
    ]));
    assert!(proxy.url().starts_with("https://"));
    assert!(proxy.log().contains(&format!("listening on https://127.0.0.1:{}", proxy.port)));

    let ca_file = served.ca.to_str().unwrap();
    let result = python_result(&python("tls_client.py", &[&proxy.url(), ca_file, "tls-ops"]));
    assert_eq!(result["count"], 29, "{result}");

    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_eq!(print["tls-ops"]["ids"], result["ids"], "both instances hold what the client left");
    let records = &print["tls-ops"];
    let four = records["ids"].as_array().unwrap().iter().position(|id| id == "id-4").unwrap();
    assert_eq!(records["documents"][four], "document four", "the update reached both");
    let replica_status = proxy.instance_status("replica");
    assert_eq!(replica_status["url"], front.url());
    assert_eq!(replica_status["healthy"], true, "{replica_status}");
    assert!(proxy.served("replica", "reads") > 0, "reads were served by the https replica");
    assert!(proxy.served("primary", "writes") > 0);

    let plain =
        support::try_request("GET", &format!("http://127.0.0.1:{}/health", proxy.port), &[], None);
    assert!(plain.is_err(), "the listener speaks only TLS: {plain:?}");
}

#[test]
fn an_https_replica_takes_writes_and_is_caught_up_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Chroma::start("primary");
    let mut replica = Chroma::start("replica");
    let files = ca().issue(dir.path(), "replica");
    let front = TlsFront::start(&files, replica.port);
    let proxy = Proxy::start_with_env(&env(&[
        ("PRIMARY_URL", &primary.url()),
        ("REPLICA_URL", &front.url()),
        ("UPSTREAM_CA_FILE", files.ca.to_str().unwrap()),
        ("CHECK_INTERVAL", "1"),
    ]));

    // The replica down (its Chroma killed behind the stand-in) while the workload writes.
    let workload = spawn_workload(&proxy, "tls", 150);
    wait_until("the workload is under way", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= 20
    });
    replica.kill9();
    let before = proxy.served("primary", "writes");
    wait_until("writes go on without the replica", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= before + 40
    });
    let backlog = proxy.instance_status("replica")["replication_lag"]["entries"].as_i64().unwrap();
    assert!(backlog > 0, "the replica owes the writes made while it was down");
    replica.restart();
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &result, "tls-");

    // The primary down: writes are executed on the https replica itself, then replayed to the
    // primary when it returns.
    let answer = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": "tls-failover"}));
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.body["id"].as_str().unwrap().to_string();
    wait_identical(&[&primary, &replica], Duration::from_secs(60));
    primary.kill9();
    let replica_writes = proxy.served("replica", "writes");
    let ids: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 1.0]).collect();
    let add = json!({"ids": ids, "embeddings": embeddings});
    let answer = post(&format!("{}{DB}/collections/{id}/add", proxy.url()), add);
    assert_eq!(answer.status, 201, "{answer:?}");
    assert!(proxy.served("replica", "writes") > replica_writes, "the add ran on the replica");
    assert_eq!(ids_on(&replica, "tls-failover"), json!(ids));
    primary.restart();
    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_eq!(print["tls-failover"]["ids"], json!(ids), "replayed to the primary");
    assert_eq!(proxy.instance_status("replica")["replication_lag"]["entries"], 0);
}

#[test]
fn an_instance_certificate_from_an_untrusted_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stranger = TestCa::new("a CA nobody trusts").issue(dir.path(), "stranger");
    // The handshake fails before any byte reaches the backend, so it need not answer.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = TlsFront::start(&stranger, backend.local_addr().unwrap().port());
    let trusted = ca().issue(dir.path(), "trusted");
    // Against UPSTREAM_CA_FILE (another CA), then against the system's roots.
    for extra in [vec![("UPSTREAM_CA_FILE", trusted.ca.to_str().unwrap())], vec![]] {
        let mut settings = vec![("PRIMARY_URL", front.url()), ("CHECK_INTERVAL", "0.2".into())];
        settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let proxy = Proxy::start_with_env(&env(&settings));
        wait_until("the primary is judged down", Duration::from_secs(30), || {
            proxy.instance_status("primary")["healthy"] == false
        });
        let status = proxy.instance_status("primary");
        let error = status["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("UnknownIssuer"), "refused for its certificate: {status}");
        let answer = get(&format!("{}{DB}/collections", proxy.url()));
        assert_eq!(answer.status, 503, "nothing is read from an unverified instance: {answer:?}");
    }
}

/// Runs the binary with exactly this environment: its exit status and stderr.
fn run(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run chroma-ha");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn tls_settings_that_cannot_work_exit_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca().issue(dir.path(), "proxy");
    let other = ca().issue(dir.path(), "other");
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let primary = ("PRIMARY_URL", "https://127.0.0.1:1");
    let cases: [(&[(&str, &str)], &str, &str); 6] = [
        (&[("TLS_CERT_FILE", cert)], "TLS_KEY_FILE", "required with TLS_CERT_FILE"),
        (&[("TLS_KEY_FILE", key)], "TLS_CERT_FILE", "required with TLS_KEY_FILE"),
        (&[("TLS_CERT_FILE", missing), ("TLS_KEY_FILE", key)], "TLS_CERT_FILE", "cannot read"),
        (&[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", cert)], "TLS_KEY_FILE", "no PEM private key"),
        (
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", other.key.to_str().unwrap())],
            "TLS_KEY_FILE",
            "unusable with TLS_CERT_FILE",
        ),
        (&[("UPSTREAM_CA_FILE", key)], "UPSTREAM_CA_FILE", "no PEM certificate"),
    ];
    let secret: Vec<String> = std::fs::read_to_string(&other.key)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::to_string)
        .collect();
    for (settings, setting, why) in cases {
        let mut all = vec![primary];
        all.extend_from_slice(settings);
        let (code, stderr) = run(&all);
        assert_eq!(code, Some(2), "{settings:?}: {stderr}");
        assert!(stderr.contains(setting) && stderr.contains(why), "{settings:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(secret.iter().all(|line| !stderr.contains(line.as_str())), "key leaked: {stderr}");
    }
}
