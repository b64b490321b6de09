//! The proxy's own errors use Chroma's error names, so the official client raises its usual
//! exception types (`chromadb.errors`): checked through the client's own error mapping, against
//! a real stack, and with Chroma's `test_multithreaded_get_or_create` run through the proxy.

mod support;

use chroma_ha::chroma::errors::ErrorName;
use support::{Chroma, Proxy, python, python_result};

#[test]
fn proxy_errors_map_to_the_official_clients_exceptions() {
    let primary = Chroma::start("primary");
    let replica = Chroma::start("replica");
    let proxy = Proxy::start(&primary, &[&replica], &[("ADMIN_TOKEN", "admin-secret")]);
    let result = python_result(&python("error_names.py", &[&proxy.url(), "admin-secret"]));

    let known: Vec<&str> =
        result["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for name in ErrorName::ALL {
        assert!(known.contains(&name.as_str()), "{} is not in chromadb.errors", name.as_str());
    }
    for (condition, exception) in [
        ("unknown collection id", "NotFoundError"),
        ("malformed collection id", "InvalidArgumentError"),
        ("unknown write route", "NotFoundError"),
        ("body too large", "ChromaError"),
        ("protected collection", "AuthorizationError"),
        ("admin without token", "ChromaAuthError"),
        ("admin with a wrong token", "ChromaAuthError"),
        ("bad admin body", "InvalidArgumentError"),
        ("idempotency key reused", "InvalidArgumentError"),
    ] {
        assert_eq!(result[condition], exception, "{condition}: {result}");
    }
    assert_eq!(result["multithreaded"], "ok", "{result}");
}

/// With no instance usable, a write whose answer the client needs is refused with the name the
/// client raises `InternalError` for.
#[test]
fn no_usable_instance_is_an_internal_error() {
    let mut primary = Chroma::start("primary");
    let proxy = Proxy::start(&primary, &[], &[]);
    primary.kill9();
    let answer = support::post(
        &format!("{}{}/collections", proxy.url(), support::DB),
        serde_json::json!({"name": "nowhere"}),
    );
    assert_eq!((answer.status, answer.body["error"].as_str()), (503, Some("InternalError")));
}
