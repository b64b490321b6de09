//! The route classifier on any method and path: it never panics, and what it extracts is
//! really in the path (a collection id it reports is a UUID segment of the path, a database is
//! `tenant/database` from the path or from a CRN), and only non-GET requests are writes. Every
//! segment is a collection id exactly when it has the hyphenated 8-4-4-4-12 hex shape (the
//! hand-written check `uuid::Uuid::try_parse` replaced: no other UUID form is let in).
#![no_main]

use actix_web::http::Method;
use chroma_ha::chroma::routes::{classify, is_collection_id};
use chroma_ha::policy::{Access, Scope};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO"];

/// The shape check `is_collection_id` had before it used `uuid`.
fn hyphenated_uuid_shape(segment: &str) -> bool {
    let hyphen = |i| matches!(i, 8 | 13 | 18 | 23);
    segment.len() == 36
        && segment
            .bytes()
            .enumerate()
            .all(|(i, b)| if hyphen(i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

fuzz_target!(|input: (u8, &str)| {
    let (m, path) = input;
    let method = Method::from_bytes(METHODS[m as usize % METHODS.len()].as_bytes()).unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    for segment in &segments {
        assert_eq!(is_collection_id(segment), hyphenated_uuid_shape(segment), "{segment:?}");
    }
    let Ok(route) = classify(&method, path) else { return };
    if let Some(collection) = &route.collection {
        assert!(segments.contains(&collection.as_str()), "{collection} not in {path}");
    }
    if let Some(id) = route.collection_id() {
        assert!(is_collection_id(id));
    }
    if let Some(database) = &route.database {
        // From `/tenants/{t}/databases/{d}/...`, or from a CRN `{t}:{d}:{name}`.
        let (tenant, db) = database.split_once('/').expect("tenant/database");
        let in_segments = segments.windows(3).any(|w| w[0] == tenant && w[2] == db);
        let crn = format!("{tenant}:{db}");
        let in_crn = segments.last().is_some_and(|s| s.starts_with(&crn));
        assert!(in_segments || in_crn, "{database:?} in {path:?}");
    }
    if method == Method::GET {
        assert!(Access::of(route.op) == Access::Read, "GET {path} is a write");
    }
    let scopes = Scope::of_read(&route);
    assert_eq!(scopes[0], Scope::Global);
    if let Scope::Collection(id) = Scope::of_write(&route) {
        assert!(is_collection_id(&id));
    }
    let _ = route.op.name();
});
