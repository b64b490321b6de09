//! Collection-id rewriting of request paths and response bodies on any input: it never
//! panics, changes nothing but the ids it is asked to change (the query string and every other
//! segment or field stay), and rewriting back restores the original.
#![no_main]

use actix_web::http::Method;
use actix_web::web::Bytes;
use chroma_ha::apply::translate::{canonical_answer, prepare};
use chroma_ha::chroma::ids::{collections_in, rewrite_collection_ids, rewrite_path};
use chroma_ha::identity::{
    CanonicalId, IdentityChange, InstanceCollectionId, MappingTable, Placement,
};
use chroma_ha::chroma::routes::classify;
use chroma_ha::instance::InstanceId;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CANONICAL: &str = "11111111-2222-3333-4444-555555555555";
const LOCAL: &str = "99999999-8888-7777-6666-555555555555";

fn split(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

fn plain(segment: &str) -> bool {
    !segment.is_empty() && !segment.contains(['/', '?'])
}

fuzz_target!(|input: (&str, &str, &str, &[u8], bool)| {
    let (path, from, to, body, replay) = input;

    // Paths: only whole segments equal to `from` change, and the change can be undone.
    let out = rewrite_path(path, from, to);
    let ((p_in, q_in), (p_out, q_out)) = (split(path), split(&out));
    if from == to {
        assert_eq!(out, path);
    }
    if plain(from) && plain(to) {
        assert_eq!(q_in, q_out, "query string changed");
        assert_eq!(p_in.split('/').count(), p_out.split('/').count());
        if !p_in.split('/').any(|s| s == to) {
            assert_eq!(rewrite_path(&out, to, from), path, "not reversible");
        }
    }

    // Bodies: only collection ids change, and mapping back restores the body.
    if let Ok(original) = serde_json::from_slice::<Value>(body) {
        let mut value = original.clone();
        let changed = rewrite_collection_ids(&mut value, |id| (id == from).then(|| to.into()));
        assert_eq!(changed, value != original);
        if changed && !collections_in(&original).iter().any(|c| c["id"] == to) {
            rewrite_collection_ids(&mut value, |id| (id == to).then(|| from.into()));
            assert_eq!(value, original, "not reversible");
        }
    }

    // The translation the write path and replay use, with one collection mapped.
    let table = MappingTable::new(2);
    for (instance, local) in [(0, CANONICAL), (1, LOCAL)] {
        table.apply(&IdentityChange::Placed(Placement {
            canonical: CanonicalId(CANONICAL.into()),
            tenant: "t".into(),
            database: "d".into(),
            name: "c".into(),
            instance: InstanceId(instance),
            local: InstanceCollectionId(local.into()),
        }));
    }
    let method = if replay { Method::POST } else { Method::GET };
    let Ok(route) = classify(&method, split(path).0) else { return };
    let bytes = Bytes::copy_from_slice(body);
    let prepared = prepare(&route, path, &bytes, InstanceId(1), &table, replay).unwrap();
    if route.collection_id() == Some(CANONICAL) {
        let segments: Vec<&str> = split(&prepared.path).0.split('/').collect();
        assert!(!segments.contains(&CANONICAL) && segments.contains(&LOCAL), "{}", prepared.path);
    }
    let answer = canonical_answer(&route, bytes.clone(), InstanceId(1), &table);
    if let (true, Ok(value)) = (route.returns_collections, serde_json::from_slice::<Value>(&answer)) {
        assert!(collections_in(&value).iter().all(|c| c["id"] != LOCAL), "local id leaked");
    }
});
