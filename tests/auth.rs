//! Tokens at the proxy (DESIGN 14), against real Chroma servers and the official Python and JS
//! clients:
//! roles, tenants and databases, `auth/identity`, refusals that reach nothing, credentials that
//! never reach an instance, per-token idempotency keys, the admin endpoints, and a token file
//! reloaded on SIGHUP.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Chroma, Proxy, get, node, python, python_result, try_request, wait_until};
use tempfile::TempDir;

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const TENANT: &str = "acme-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const NEW: &str = "new-token-0123456789abcdef";

fn entry(name: &str, token: &str, role: &str, tenant: &str, databases: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\nrole = \"{role}\"\ntenant = \"{tenant}\"\ndatabases = {databases}\n"
    )
}

fn write_tokens(path: &Path, entries: &[String]) {
    std::fs::write(path, entries.concat()).unwrap();
}

fn all_tokens() -> Vec<String> {
    vec![
        entry("reader", READ, "read", "default_tenant", r#"["*"]"#),
        entry("writer", WRITE, "write", "default_tenant", r#"["*"]"#),
        entry("acme", TENANT, "write", "acme", r#"["sales"]"#),
        entry("root", ADMIN, "admin", "*", r#"["*"]"#),
    ]
}

/// One request with a bearer token; every status is an answer.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> support::Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    try_request(method, url, &headers, body.as_deref()).unwrap()
}

/// A proxy in front of `primary` and `replicas` reading its tokens from a file, with every token
/// of [`all_tokens`]; the file's directory lives as long as the proxy.
fn proxy_with_tokens(
    primary: &Chroma,
    replicas: &[&Chroma],
    settings: &[(&str, &str)],
) -> (Proxy, PathBuf, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens, &all_tokens());
    let mut env = vec![("AUTH_TOKENS_FILE", tokens.to_str().unwrap())];
    env.extend_from_slice(settings);
    (Proxy::start(primary, replicas, &env), tokens, dir)
}

fn head_seq(proxy: &Proxy) -> i64 {
    proxy.status()["write_ahead_log"]["head_seq"].as_i64().unwrap()
}

#[test]
fn tokens_decide_who_may_do_what() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let (proxy, _, _dir) = proxy_with_tokens(&primary, &[&replica], &[("READ_REPLICA_RATIO", "0")]);
    let url = proxy.url();
    let log = proxy.log();
    assert!(log.contains("auth: tokens: 4 (reader, writer, acme, root)"), "{log}");

    // Tenants and databases for the scoped token, made by the admin token.
    for tenant in ["acme", "other"] {
        let made = call(
            "POST",
            &format!("{url}/api/v2/tenants"),
            Some(ADMIN),
            Some(json!({"name": tenant})),
        );
        assert_eq!(made.status, 200, "{made:?}");
        let db = call(
            "POST",
            &format!("{url}/api/v2/tenants/{tenant}/databases"),
            Some(ADMIN),
            Some(json!({"name": "sales"})),
        );
        assert_eq!(db.status, 200, "{db:?}");
    }
    // A write token may not create a tenant; nothing is logged for it.
    let before = head_seq(&proxy);
    let refused =
        call("POST", &format!("{url}/api/v2/tenants"), Some(WRITE), Some(json!({"name": "x"})));
    assert_eq!((refused.status, refused.body["error"].as_str()), (403, Some("AuthorizationError")));
    assert_eq!(head_seq(&proxy), before, "a refused write is never logged");

    // Every Chroma route without a token: 401, with Chroma's error shape.
    for (method, path) in [
        ("GET", "/api/v2/heartbeat"),
        ("GET", "/api/v2/auth/identity"),
        ("GET", "/api/v2/tenants/default_tenant/databases/default_database/collections"),
        ("POST", "/api/v2/tenants/default_tenant/databases/default_database/collections"),
        ("POST", "/api/v2/reset"),
        ("GET", "/api/v2/no-such-route"),
    ] {
        let answer = call(method, &format!("{url}{path}"), None, Some(json!({"name": "n"})));
        assert_eq!(answer.status, 401, "{method} {path}: {answer:?}");
        assert_eq!(answer.body["error"], "AuthError", "{method} {path}");
    }

    // The official client: both transports, read/write/admin roles, tenants, identity.
    let result = python_result(&python(
        "auth_client.py",
        &[&url, &primary.url(), READ, WRITE, TENANT, ADMIN],
    ));
    assert_eq!(result["ok"], true);
    // And the official JS client (which the reset above left an empty store for).
    let result = python_result(&node("auth_client.cjs", &[&url, &primary.url(), READ, WRITE]));
    assert_eq!(result["ok"], true);

    // The identity the proxy answers, and per-token idempotency keys.
    let identity = call("GET", &format!("{url}/api/v2/auth/identity"), Some(TENANT), None);
    assert_eq!(identity.body, json!({"user_id": "acme", "tenant": "acme", "databases": ["sales"]}));
    let create =
        format!("{url}/api/v2/tenants/default_tenant/databases/default_database/collections");
    let keyed = |token: &str| {
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str()), ("idempotency-key", "same-key")];
        let body = serde_json::to_vec(&json!({"name": format!("keyed-{}", &token[..4])})).unwrap();
        try_request("POST", &create, &headers, Some(&body)).unwrap()
    };
    let first = keyed(WRITE);
    let second = keyed(ADMIN);
    assert_eq!((first.status, second.status), (200, 200), "{first:?} {second:?}");
    assert_eq!(second.header("idempotent-replayed"), None, "another token's key is its own");
    assert_ne!(first.body["id"], second.body["id"]);
    let names = primary.collection_names();
    assert!(
        names.contains(&"keyed-writ".into()) && names.contains(&"keyed-admi".into()),
        "{names:?}"
    );

    // Admin endpoints: ADMIN_TOKEN is unset here, the unrestricted admin token opens them.
    let admin = format!("{url}/admin/instances");
    assert_eq!(call("GET", &admin, Some(ADMIN), None).status, 200);
    assert_eq!(call("GET", &admin, Some(WRITE), None).status, 403);
    assert_eq!(call("GET", &admin, None, None).status, 401);
    assert_eq!(call("GET", &format!("{url}/collection/mappings"), Some(READ), None).status, 403);
    assert_eq!(get(&format!("{url}/status")).status, 200, "status stays open for monitoring");

    // Refusals are counted per reason, and no token was ever logged.
    let denied = &proxy.status()["auth"]["denied"];
    assert!(denied["missing"].as_u64().unwrap() >= 6, "{denied}");
    assert!(denied["role"].as_u64().unwrap() >= 5, "{denied}");
    assert!(denied["tenant"].as_u64().unwrap() >= 2, "{denied}");
    let metrics = get(&format!("{url}/metrics")).body;
    let series = |reason: &str| -> u64 {
        let name = format!("chroma_ha_auth_denied_total{{reason=\"{reason}\"}} ");
        let text = metrics.as_str().unwrap();
        let line = text.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{text}"));
        line[name.len()..].trim().parse().unwrap()
    };
    for reason in ["missing", "role", "tenant"] {
        assert_eq!(series(reason), denied[reason].as_u64().unwrap(), "{reason}: metrics = status");
    }
    let log = proxy.log();
    for token in [READ, WRITE, TENANT, ADMIN] {
        assert!(!log.contains(token), "a token reached the log");
    }
}

/// One malformed-credential case: what it is, its headers, its URL.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// Auth cases of the bad-input table: each a 4xx with Chroma's JSON error, nothing forwarded.
#[test]
fn malformed_credentials_are_refused() {
    let primary = Chroma::start("primary");
    let (proxy, _, _dir) = proxy_with_tokens(&primary, &[], &[]);
    let heartbeat = format!("{}/api/v2/heartbeat", proxy.url());
    let bearer = format!("Bearer {READ}");
    let cases: Vec<Case> = vec![
        ("empty bearer", vec![("authorization", "Bearer ")], heartbeat.clone()),
        ("not bearer", vec![("authorization", "Basic dXNlcjpwYXNz")], heartbeat.clone()),
        (
            "duplicated header",
            vec![("x-chroma-token", READ), ("x-chroma-token", READ)],
            heartbeat.clone(),
        ),
        (
            "both headers",
            vec![("authorization", &bearer), ("x-chroma-token", READ)],
            heartbeat.clone(),
        ),
        ("token in the query", vec![], format!("{heartbeat}?token={READ}")),
        (
            "token in the query too",
            vec![("authorization", &bearer)],
            format!("{heartbeat}?access_token={READ}"),
        ),
        ("unknown token", vec![("x-chroma-token", "unknown-token-0123456789")], heartbeat.clone()),
    ];
    for (what, headers, url) in &cases {
        let answer = try_request("GET", url, headers, None).unwrap();
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert_eq!(answer.body["error"], "AuthError", "{what}");
        assert!(answer.body["message"].as_str().is_some_and(|m| !m.contains(READ)), "{what}");
    }
    // A non-ASCII token (raw bytes; ureq would refuse to send it, so through a socket).
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    socket
        .write_all(b"GET /api/v2/heartbeat HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\xc3\xa9\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"AuthError\""), "{answer}");
    assert_eq!(proxy.served("primary", "reads"), 0, "nothing was forwarded");
}

#[test]
fn a_reloaded_token_file_takes_effect_without_a_restart() {
    let primary = Chroma::start("primary");
    let (proxy, tokens, _dir) = proxy_with_tokens(&primary, &[], &[]);
    let heartbeat = format!("{}/api/v2/heartbeat", proxy.url());
    assert_eq!(call("GET", &heartbeat, Some(READ), None).status, 200);
    assert_eq!(call("GET", &heartbeat, Some(NEW), None).status, 401);

    // A bad file keeps the tokens in force.
    std::fs::write(&tokens, "[[tokens]]\nname = \"broken\"\n").unwrap();
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    wait_until("the reload error is logged", Duration::from_secs(10), || {
        proxy
            .log()
            .contains("tokens not reloaded, the previous ones stay in force: AUTH_TOKENS_FILE")
    });
    assert_eq!(call("GET", &heartbeat, Some(READ), None).status, 200);

    let mut changed = all_tokens();
    changed.remove(0);
    changed.push(entry("newcomer", NEW, "read", "default_tenant", r#"["*"]"#));
    write_tokens(&tokens, &changed);
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    wait_until("the new token works", Duration::from_secs(10), || {
        call("GET", &heartbeat, Some(NEW), None).status == 200
    });
    assert_eq!(call("GET", &heartbeat, Some(READ), None).status, 401, "a removed token stops");
    assert!(proxy.log().contains("auth: tokens reloaded: 4 (writer, acme, root, newcomer)"));
}
