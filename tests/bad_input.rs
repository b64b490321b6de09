//! Bad input, table-driven: every case gets a clear 4xx with a JSON `{"error", "message"}`,
//! leaves no WAL entry (or a `rejected` one when Chroma itself judged the request), and the
//! proxy keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chroma_ha::chroma::errors::ErrorName;
use serde_json::json;
use support::{DB, Stack, WalBackend, get, post, try_request, wait_until};

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// Whether Chroma judges it (so a `rejected` entry is logged), or the proxy alone.
    chroma_judges: bool,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: String,
    body: &[u8],
    chroma_judges: bool,
) -> Case {
    Case {
        name,
        method,
        path,
        headers: vec![("content-type", "application/json")],
        body: body.to_vec(),
        chroma_judges,
    }
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let Stack { proxy, primary, replica, wal } = Stack::start(WalBackend::sqlite(), &[]);
    let url = proxy.url();
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "target"}));
    let id = created.body["id"].as_str().unwrap().to_string();
    wait_until("the collection reached the replica", Duration::from_secs(10), || {
        replica.collection_names() == ["target"]
    });
    let c = format!("{DB}/collections/{id}");
    let unknown = "7f1b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    let big = vec![b'x'; 41 * 1024 * 1024];
    let mut cases = vec![
        case("malformed JSON", "POST", format!("{c}/add"), b"{\"ids\": [", true),
        case(
            "wrong JSON types",
            "POST",
            format!("{c}/add"),
            br#"{"ids": "a", "embeddings": 7}"#,
            true,
        ),
        case(
            "missing required field",
            "POST",
            format!("{c}/upsert"),
            br#"{"embeddings": [[1.0]]}"#,
            true,
        ),
        case("non-UTF-8 bytes", "POST", format!("{c}/add"), &[0xff, 0xfe, 0x00, 0x9f], true),
        case("unknown route, write", "POST", "/api/v2/frobnicate".into(), b"{}", false),
        case("unknown route outside the API", "GET", "/nothing-here".into(), b"", false),
        case(
            "malformed collection id",
            "POST",
            format!("{DB}/collections/not-a-uuid-at-all/add"),
            b"{}",
            false,
        ),
        case(
            "a name where an id belongs",
            "POST",
            format!("{DB}/collections/target/query"),
            b"{}",
            false,
        ),
        case(
            "unknown collection id",
            "POST",
            format!("{DB}/collections/{unknown}/add"),
            br#"{"ids": ["a"], "embeddings": [[1.0]]}"#,
            false,
        ),
        case("oversized body", "POST", format!("{c}/add"), &big, false),
        case("admin without a body", "POST", "/admin/instances/primary/health".into(), b"", false),
    ];
    let mut twice = case(
        "duplicated Idempotency-Key",
        "POST",
        format!("{c}/add"),
        br#"{"ids": ["k"], "embeddings": [[1.0]]}"#,
        false,
    );
    twice.headers.extend([("idempotency-key", "one"), ("idempotency-key", "two")]);
    cases.push(twice);

    for case in &cases {
        let before = wal.query("SELECT count(*) FROM wal_entries")[0].clone();
        let answer = try_request(
            case.method,
            &format!("{url}{}", case.path),
            &case.headers,
            Some(&case.body),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!((400..500).contains(&answer.status), "{}: {answer:?}", case.name);
        assert!(
            answer.body["message"].is_string()
                && ErrorName::ALL.iter().any(|n| answer.body["error"] == n.as_str()),
            "{}: {}",
            case.name,
            answer.body
        );
        let after = wal.query("SELECT count(*) FROM wal_entries")[0].clone();
        if case.chroma_judges {
            let last = wal.query("SELECT state FROM wal_entries ORDER BY seq DESC LIMIT 1");
            assert_eq!(last, ["rejected"], "{}: Chroma's refusal is logged as rejected", case.name);
        } else {
            assert_eq!(before, after, "{}: nothing logged", case.name);
        }
        assert_eq!(
            get(&format!("{url}/api/v2/heartbeat")).status,
            200,
            "still serving after {}",
            case.name
        );
    }

    // A body shorter than its Content-Length: the proxy answers or closes, and keeps serving.
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "POST {c}/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"ids\":"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(get(&format!("{url}/api/v2/heartbeat")).status, 200);

    // `/metrics` counted the refusals (an unknown write route and two bad ids at least).
    let metrics = get(&format!("{url}/metrics"));
    assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = metrics.body.as_str().expect("metrics are text");
    let value = |series: &str| -> f64 {
        let line =
            text.lines().find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')));
        line.and_then(|l| l.rsplit_once(' ')).and_then(|(_, v)| v.parse().ok()).expect(series)
    };
    assert!(value("chroma_ha_refused_total") >= 3.0, "{text}");
    // Each refusal is a 4xx answer of chroma_ha_requests_total{kind,code}.
    let refusals: f64 = text
        .lines()
        .filter(|l| l.starts_with("chroma_ha_requests_total{") && l.contains("code=\"4"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert!(refusals >= value("chroma_ha_refused_total"), "{text}");
    for instance in ["primary", "replica"] {
        assert_eq!(value(&format!("chroma_ha_instance_up{{instance=\"{instance}\"}}")), 1.0);
    }

    // Nothing reached the instances: the collection is empty on both.
    for instance in [&primary, &replica] {
        let count = get(&format!("{}{DB}/collections/target", instance.url())).body["id"].clone();
        let count =
            get(&format!("{}{DB}/collections/{}/count", instance.url(), count.as_str().unwrap()))
                .body;
        assert_eq!(count, json!(0), "{}", instance.name);
    }
}
