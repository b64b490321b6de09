//! TLS (issue 15): the proxy serving HTTPS to the official Python client, an `https://` replica
//! behind a TLS-terminating stand-in in front of a real Chroma server (reads, writes, replay
//! after a `kill -9`), and certificates verified (an untrusted one is refused). Every certificate
//! is made here; TLS settings that cannot work are in tests/config_errors.rs.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{Value, json};
use support::tls::{TestCa, TlsFront, ca};
use support::{
    Chroma, DB, Proxy, fingerprint, get, post, python, python_result,
    replica_outage_under_workload, wait_identical, wait_until,
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

    let (url, direct, ca_file) = (proxy.url(), primary.url(), served.ca.to_str().unwrap());
    let args = [url.as_str(), &direct, "tls-ops", "--ca", ca_file, "--keep"];
    let result = python_result(&python("normal_ops.py", &args));
    assert_eq!(result["ids"].as_array().unwrap().len(), 18, "{result}");

    let print = wait_identical(&[&primary, &replica], Duration::from_secs(60));
    assert_eq!(print["tls-ops"]["ids"], result["ids"], "both instances hold what the client left");
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

    // The replica's Chroma killed behind the stand-in while the workload writes, then back.
    replica_outage_under_workload(&proxy, &primary, &mut replica, "tls");

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
