//! Admin endpoints: disabled without ADMIN_TOKEN (403), 401 with a wrong token, 200 with the
//! right one; a forced-down primary sends writes to the replica until the override expires.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Chroma, DB, Proxy, post, try_request, wait_until};

const TOKEN: &str = "test-admin-token";

fn admin(
    proxy: &Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> support::Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    try_request(method, &format!("{}{path}", proxy.url()), &headers, bytes.as_deref()).unwrap()
}

#[test]
fn admin_is_disabled_without_a_token() {
    // No instance needs to run for this: nothing is forwarded.
    let env = [("PRIMARY_URL".to_string(), format!("http://127.0.0.1:{}", support::free_port()))];
    let proxy = Proxy::start_with_env(&env);
    for (method, path) in [("GET", "/admin/instances"), ("POST", "/admin/instances/primary/health")]
    {
        let answer = admin(
            &proxy,
            method,
            path,
            Some("anything"),
            Some(json!({"healthy": false, "duration_seconds": 3})),
        );
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.body["error"], "AuthorizationError");
        assert!(answer.body["message"].as_str().unwrap().contains("ADMIN_TOKEN"));
    }
}

#[test]
fn admin_checks_the_token_and_the_body() {
    let env = [
        ("PRIMARY_URL".to_string(), format!("http://127.0.0.1:{}", support::free_port())),
        ("ADMIN_TOKEN".to_string(), TOKEN.to_string()),
    ];
    let proxy = Proxy::start_with_env(&env);
    assert_eq!(admin(&proxy, "GET", "/admin/instances", None, None).status, 401);
    let wrong = admin(&proxy, "GET", "/admin/instances", Some("nope"), None);
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (401, Some("AuthError")));
    let right = admin(&proxy, "GET", "/admin/instances", Some(TOKEN), None);
    assert_eq!(right.status, 200);
    assert_eq!(right.body["instances"][0]["name"], "primary");

    for bad in [
        json!({"healthy": "no", "duration_seconds": 3}),
        json!({"healthy": false}),
        json!({"healthy": false, "duration_seconds": -1}),
        json!({"healthy": false, "duration_seconds": 3, "extra": 1}),
    ] {
        let answer = admin(
            &proxy,
            "POST",
            "/admin/instances/primary/health",
            Some(TOKEN),
            Some(bad.clone()),
        );
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
        assert_eq!(answer.body["error"], "InvalidArgumentError");
    }
    let unknown = admin(
        &proxy,
        "POST",
        "/admin/instances/nobody/health",
        Some(TOKEN),
        Some(json!({"healthy": false, "duration_seconds": 3})),
    );
    assert_eq!(unknown.status, 404);
    assert!(!proxy.log().contains(TOKEN), "the token never reaches the log");
}

#[test]
fn forced_down_primary_sends_writes_to_the_replica_until_it_expires() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy =
        Proxy::start(&primary, &[&replica], &[("ADMIN_TOKEN", TOKEN), ("CHECK_INTERVAL", "1")]);
    let create = |name: &str| {
        let answer = post(&format!("{}{DB}/collections", proxy.url()), json!({"name": name}));
        assert_eq!(answer.status, 200, "{answer:?}");
    };

    let forced = admin(
        &proxy,
        "POST",
        "/admin/instances/primary/health",
        Some(TOKEN),
        Some(json!({"healthy": false, "duration_seconds": 3})),
    );
    let forced_at = Instant::now();
    assert_eq!(forced.status, 200, "{forced:?}");
    assert!(forced.body["forced_until"].is_string());
    let status = proxy.instance_status("primary");
    assert_eq!(
        (status["state"].as_str(), status["healthy"].as_bool()),
        (Some("forced_down"), Some(false))
    );

    create("during-override");
    assert!(replica.collection_names().contains(&"during-override".to_string()));
    assert!(!primary.collection_names().contains(&"during-override".to_string()));

    wait_until("the override expires by itself", Duration::from_secs(5), || {
        proxy.instance_status("primary")["state"] == "healthy"
    });
    assert!(forced_at.elapsed() >= Duration::from_millis(2900), "not before its 3 s");
    create("after-override");
    assert!(primary.collection_names().contains(&"after-override".to_string()));

    // DELETE clears an override early.
    admin(
        &proxy,
        "POST",
        "/admin/instances/primary/health",
        Some(TOKEN),
        Some(json!({"healthy": false, "duration_seconds": 60})),
    );
    let cleared = admin(&proxy, "DELETE", "/admin/instances/primary/health", Some(TOKEN), None);
    assert_eq!((cleared.status, cleared.body["cleared"].as_bool()), (200, Some(true)));
    assert_eq!(proxy.instance_status("primary")["state"], "healthy");
    let log = proxy.log();
    assert!(
        log.contains("forced DOWN by admin") && log.contains("expired") && log.contains("cleared")
    );
}
