//! Verification and repair (DESIGN 13) against real Chroma servers: differences made straight
//! on the replica (a record changed, one deleted, an extra one, a collection's metadata, extra
//! collections) are each named by the check, `chroma-ha verify` exits 1 on them and 0 on
//! identical instances; a repair fixes them while a client writes the same ids, and the client's
//! last writes are what both instances hold; a protected extra collection is never deleted;
//! reads are paced by VERIFY_RATE.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Chroma, DB, Proxy, get, post, request, try_request, wait_until};

const TOKEN: &str = "verify-admin-token-0123456789";

fn settled(proxy: &Proxy) {
    wait_until("nothing pending", Duration::from_secs(30), || {
        proxy.status()["write_ahead_log"]["pending_writes"] == 0
    });
}

/// Runs `chroma-ha verify|repair` against the proxy: exit code and stdout.
fn cli(proxy: &Proxy, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .env("ADMIN_TOKEN", TOKEN)
        .args(&args[..1])
        .args(["--url", &proxy.url()])
        .args(&args[1..])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("chroma-ha {args:?}: {:?}\n{stdout}{stderr}", out.status.code());
    (out.status.code().unwrap(), stdout)
}

fn admin(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> support::Answer {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let auth = format!("Bearer {TOKEN}");
    let url = format!("{}{path}", proxy.url());
    try_request(method, &url, &[("authorization", &auth)], bytes.as_deref()).unwrap()
}

/// Starts a check through the API and answers the finished job.
fn verified(proxy: &Proxy, body: Value) -> Value {
    let started = admin(proxy, "POST", "/admin/verify", Some(body));
    assert_eq!(started.status, 202, "{:?}", started.body);
    let since = started.body["started"]["started_at"].clone();
    let mut last = Value::Null;
    wait_until("the check finishes", Duration::from_secs(120), || {
        last = admin(proxy, "GET", "/admin/verify", None).body["last"].clone();
        last["started_at"] == since
    });
    last
}

fn record(id: &str, doc: &str, n: f64) -> (String, Vec<f64>, String, Value) {
    (id.to_string(), vec![n, 1.0, 2.0], doc.to_string(), json!({"n": n}))
}

fn add(url: &str, collection: &str, records: &[(String, Vec<f64>, String, Value)], op: &str) {
    let body = json!({
        "ids": records.iter().map(|r| &r.0).collect::<Vec<_>>(),
        "embeddings": records.iter().map(|r| &r.1).collect::<Vec<_>>(),
        "documents": records.iter().map(|r| &r.2).collect::<Vec<_>>(),
        "metadatas": records.iter().map(|r| &r.3).collect::<Vec<_>>(),
    });
    let answer = post(&format!("{url}{DB}/collections/{collection}/{op}"), body);
    assert!(answer.status < 300, "{op}: {:?}", answer.body);
}

fn collection_id(url: &str, name: &str) -> String {
    let answer = get(&format!("{url}{DB}/collections/{name}"));
    assert_eq!(answer.status, 200, "{name}: {:?}", answer.body);
    answer.body["id"].as_str().unwrap().to_string()
}

/// The documents of `ids` on an instance, by id.
fn documents(url: &str, collection: &str, ids: &[String]) -> Vec<Option<String>> {
    let id = collection_id(url, collection);
    let answer = post(
        &format!("{url}{DB}/collections/{id}/get"),
        json!({"ids": ids, "include": ["documents"]}),
    );
    let got: Vec<String> = serde_json::from_value(answer.body["ids"].clone()).unwrap();
    ids.iter()
        .map(|want| {
            got.iter()
                .position(|g| g == want)
                .and_then(|i| answer.body["documents"][i].as_str().map(str::to_string))
        })
        .collect()
}

fn replica_report<'a>(job: &'a Value, collection: &str) -> &'a Value {
    job["instances"][0]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collection"] == collection)
        .unwrap_or_else(|| panic!("{collection} not in {job}"))
}

fn ids(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn verify_names_each_difference_and_repair_fixes_them_under_client_writes() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("ADMIN_TOKEN", TOKEN), ("VERIFY_INTERVAL", "0"), ("CHECK_INTERVAL", "1")],
    );
    let url = proxy.url();
    let created =
        post(&format!("{url}{DB}/collections"), json!({"name": "docs", "metadata": {"v": 1}}));
    assert_eq!(created.status, 200, "{:?}", created.body);
    let docs = created.body["id"].as_str().unwrap().to_string();
    for start in (0..3000).step_by(1000) {
        let records: Vec<_> = (start..start + 1000)
            .map(|i| record(&format!("r{i:04}"), &format!("doc {i}"), i as f64))
            .collect();
        add(&url, &docs, &records, "add");
    }
    settled(&proxy);

    // Bad input is a clear 4xx; identical instances pass.
    let bad = admin(&proxy, "POST", "/admin/verify", Some(json!({"colection": "docs"})));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let unknown = admin(&proxy, "POST", "/admin/repair", Some(json!({"instance": "nope"})));
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let source = admin(&proxy, "POST", "/admin/repair", Some(json!({"instance": "primary"})));
    assert_eq!(source.status, 400, "{:?}", source.body);
    let anonymous = try_request("POST", &format!("{url}/admin/verify"), &[], None).unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(cli(&proxy, &["verify"]).0, 0, "identical instances");

    // Differences made straight on the replica: a record changed, 2,001 deleted, one extra,
    // the metadata, two extra collections (one protected).
    let r = replica.url();
    let on_replica = collection_id(&r, "docs");
    add(&r, &on_replica, &[record("r0001", "changed behind the proxy", 1.0)], "update");
    let lost: Vec<String> =
        std::iter::once(2).chain(1000..3000).map(|i| format!("r{i:04}")).collect();
    let deleted = post(&format!("{r}{DB}/collections/{on_replica}/delete"), json!({"ids": lost}));
    assert_eq!(deleted.status, 200);
    add(&r, &on_replica, &[record("x-extra", "only here", 9.0)], "add");
    let modified = request(
        "PUT",
        &format!("{r}{DB}/collections/{on_replica}"),
        Some(json!({"new_metadata": {"v": 2}})),
    );
    assert_eq!(modified.status, 200, "{:?}", modified.body);
    for name in ["stray", "global"] {
        assert_eq!(post(&format!("{r}{DB}/collections"), json!({"name": name})).status, 200);
    }
    // And a database made straight on the primary, which the replica lacks altogether.
    let p = primary.url();
    let archive = "/api/v2/tenants/default_tenant/databases/archive";
    let made =
        post(&format!("{p}/api/v2/tenants/default_tenant/databases"), json!({"name": "archive"}));
    assert_eq!(made.status, 200, "{:?}", made.body);
    let kept = post(&format!("{p}{archive}/collections"), json!({"name": "kept"}));
    let kept_id = kept.body["id"].as_str().unwrap();
    let body = json!({"ids": ["k1", "k2"], "embeddings": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]});
    assert_eq!(post(&format!("{p}{archive}/collections/{kept_id}/add"), body).status, 201);

    let job = verified(&proxy, json!({}));
    assert_eq!(job["source"], "primary");
    let report = replica_report(&job, "docs");
    assert_eq!(ids(&report["ids"]["different"]), ["r0001"], "{report}");
    let missing = ids(&report["ids"]["missing"]);
    assert_eq!(missing.len(), 100, "at most 100 ids of each kind");
    assert_eq!(&missing[..2], ["r0002", "r1000"], "{report}");
    assert_eq!(ids(&report["ids"]["extra"]), ["x-extra"], "{report}");
    assert!(ids(&report["problems"]).contains(&"metadata"), "{report}");
    let counts = (report["source_count"].as_u64(), report["count"].as_u64());
    assert_eq!(counts, (Some(3000), Some(1000)));
    assert_eq!(report["divergent_records"], 2003);
    assert_eq!(report["divergent_chunks"], 4, "3,001 ids sorted: x-extra is in a fourth chunk");
    for extra in ["stray", "global"] {
        assert_eq!(ids(&replica_report(&job, extra)["problems"]), ["extra"]);
    }
    assert_eq!(ids(&replica_report(&job, "kept")["problems"]), ["missing"]);
    let status = proxy.status();
    assert_eq!(status["verification"]["last"]["instances"][0]["divergent_records"], 2003);
    let metrics = get(&format!("{url}/metrics")).body;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("chroma_ha_divergent_records{instance=\"replica\"} 2003"),
        "{metrics}"
    );
    let (code, table) = cli(&proxy, &["verify", "--collection", "docs"]);
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("differs: metadata, records"), "{table}");

    // A client writes ids the repair fixes (missing on the replica, or changed there) before,
    // during and after the repair.
    const CLIENT_IDS: [&str; 5] = ["r0000", "r0001", "r1500", "r2500", "r2999"];
    let stop = Arc::new(AtomicBool::new(false));
    let rounds_done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, url, docs, done) =
            (stop.clone(), url.clone(), docs.clone(), rounds_done.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) || round < done.load(Ordering::SeqCst) + 3 {
                round += 1;
                let batch: Vec<_> = CLIENT_IDS
                    .iter()
                    .map(|id| record(id, &format!("client {id} round {round}"), round as f64))
                    .collect();
                add(&url, &docs, &batch, "upsert");
                if !stop.load(Ordering::SeqCst) {
                    done.store(round, Ordering::SeqCst);
                }
            }
            round
        })
    };
    wait_until("the client writes", Duration::from_secs(30), || {
        rounds_done.load(Ordering::SeqCst) >= 3
    });
    let before = rounds_done.load(Ordering::SeqCst);
    let (code, table) = cli(&proxy, &["repair", "--instance", "replica", "--delete-extra"]);
    let during = rounds_done.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    println!("client rounds: {before} before the repair, {during} by its end, {rounds} in all");
    assert!(during > before, "the client wrote during the repair");
    assert_eq!(code, 1, "the protected extra collection remains: {table}");
    assert!(table.contains("protected"), "{table}");
    assert!(table.contains("metadata set"), "{table}");
    settled(&proxy);
    let written: Vec<String> = CLIENT_IDS.iter().map(|s| s.to_string()).collect();
    let last: Vec<Option<String>> =
        written.iter().map(|id| Some(format!("client {id} round {rounds}"))).collect();
    assert_eq!(
        documents(&primary.url(), "docs", &written),
        last,
        "the client's writes, on the primary"
    );
    assert_eq!(documents(&r, "docs", &written), last, "and on the repaired replica");
    let repaired = documents(&r, "docs", &["r0002".into(), "r1999".into(), "x-extra".into()]);
    assert_eq!(repaired, [Some("doc 2".into()), Some("doc 1999".into()), None]);
    let count =
        |u: &str| get(&format!("{u}{DB}/collections/{}/count", collection_id(u, "docs"))).body;
    assert_eq!(count(&r), json!(3000));
    let kept = get(&format!("{r}{archive}/collections/kept"));
    assert_eq!(kept.status, 200, "the missing database and collection are made: {:?}", kept.body);
    let kept_count =
        get(&format!("{r}{archive}/collections/{}/count", kept.body["id"].as_str().unwrap()));
    assert_eq!(kept_count.body, json!(2));
    let names = replica.collection_names();
    assert!(names.contains(&"global".to_string()), "a protected collection is never deleted");
    assert!(!names.contains(&"stray".to_string()), "an extra one is, with delete_extra");

    // With the protected stray gone by hand, the instances are identical again.
    let gone = request("DELETE", &format!("{r}{DB}/collections/global"), None);
    assert_eq!(gone.status, 200);
    let (code, table) = cli(&proxy, &["verify"]);
    assert_eq!(code, 0, "{table}");
}

#[test]
fn verification_reads_at_most_verify_rate_records_a_second() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(
        &primary,
        &[&replica],
        &[("ADMIN_TOKEN", TOKEN), ("VERIFY_INTERVAL", "0"), ("VERIFY_RATE", "5000")],
    );
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "big"}));
    let big = created.body["id"].as_str().unwrap().to_string();
    const N: usize = 20_000;
    for start in (0..N).step_by(1000) {
        let batch: Vec<_> = (start..start + 1000)
            .map(|i| record(&format!("id{i:06}"), &format!("document {i}"), i as f64))
            .collect();
        add(&url, &big, &batch, "add");
    }
    settled(&proxy);

    let queries = |for_how_long: Duration| {
        let deadline = Instant::now() + for_how_long;
        let mut n = 0;
        while Instant::now() < deadline {
            let answer = post(
                &format!("{url}{DB}/collections/{big}/query"),
                json!({"query_embeddings": [[n as f64, 1.0, 2.0]], "n_results": 5}),
            );
            assert_eq!(answer.status, 200);
            n += 1;
        }
        n as f64 / for_how_long.as_secs_f64()
    };
    let idle = queries(Duration::from_secs(3));
    let started = admin(&proxy, "POST", "/admin/verify", Some(json!({})));
    assert_eq!(started.status, 202);
    let during = queries(Duration::from_secs(3));
    let since = started.body["started"]["started_at"].clone();
    let mut job = Value::Null;
    wait_until("the check finishes", Duration::from_secs(120), || {
        job = admin(&proxy, "GET", "/admin/verify", None).body["last"].clone();
        job["started_at"] == since
    });
    let seconds = job["seconds"].as_f64().unwrap();
    let report = replica_report(&job, "big");
    assert_eq!(report["source_count"], N as u64);
    assert!(report["problems"].as_array().unwrap().is_empty(), "{report}");
    println!(
        "BENCH verify: {N} records in {seconds:.2} s at VERIFY_RATE=5000 ({:.0} records verified/s, {} records read over both instances); queries/s: {idle:.1} idle, {during:.1} while verifying",
        N as f64 / seconds,
        job["records_read"]
    );
    assert!(seconds >= 4.0, "20,000 records at 5,000 a second take at least 4 s: {seconds}");
}

#[test]
fn a_follower_refuses_verification_and_names_the_leader() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let wal = support::WalBackend::sqlite();
    let db = wal.database_url();
    let settings = |id| {
        vec![
            ("DATABASE_URL", db.clone()),
            ("PROXY_ID", id),
            ("ADMIN_TOKEN", TOKEN.to_string()),
            ("VERIFY_INTERVAL", "0".to_string()),
        ]
    };
    let start = |id: &str| {
        let pairs = settings(id.to_string());
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Proxy::start(&primary, &[&replica], &pairs)
    };
    let leader = start("a");
    wait_until("a leads", Duration::from_secs(10), || leader.status()["proxy"]["role"] == "leader");
    let follower = start("b");
    wait_until("b follows", Duration::from_secs(10), || {
        follower.status()["proxy"]["role"] == "follower"
    });
    for (method, path) in [("POST", "/admin/verify"), ("GET", "/admin/verify")] {
        let refused = admin(&follower, method, path, None);
        assert_eq!(refused.status, 503, "{:?}", refused.body);
        let message = refused.body["message"].as_str().unwrap();
        assert!(message.contains("leader") && message.contains(&leader.url()), "{message}");
    }
    let (code, _) = cli(&follower, &["verify"]);
    assert_eq!(code, 2, "a check that cannot run");
    assert_eq!(cli(&leader, &["verify", "--token", "not-the-admin-token"]).0, 2, "unauthorized");
    assert_eq!(cli(&leader, &["verify"]).0, 0);
}
