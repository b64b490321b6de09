//! Collection ids in Chroma's paths and answers: where they are and how to rewrite them. The
//! mapping between instances is the proxy's own state, in [`crate::identity`].
//!
//! Pure functions over paths and JSON values: never holds state, and never changes anything but
//! the ids it is asked to change.

use serde_json::Value;

/// `path` with the path segment `from` replaced by `to` (the query string is kept).
pub fn rewrite_path(path_and_query: &str, from: &str, to: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = String::with_capacity(path_and_query.len() + to.len());
    for (n, segment) in path.split('/').enumerate() {
        if n > 0 {
            out.push('/');
        }
        out.push_str(if segment == from { to } else { segment });
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A JSON collection object: it has an `id`, a `name` and a `configuration_json`.
fn is_collection(v: &Value) -> bool {
    v.get("id").is_some_and(Value::is_string)
        && v.get("name").is_some()
        && v.get("configuration_json").is_some()
}

/// The collection objects in a response body (one object, or a list of them).
pub fn collections_in(body: &Value) -> Vec<&Value> {
    match body {
        Value::Array(items) => items.iter().filter(|v| is_collection(v)).collect(),
        v if is_collection(v) => vec![v],
        _ => Vec::new(),
    }
}

/// Replaces every collection object's `id` in `body` by `canonical(id)` when that is known.
/// Answers whether anything changed.
pub fn rewrite_collection_ids(
    body: &mut Value,
    canonical: impl Fn(&str) -> Option<String>,
) -> bool {
    let mut changed = false;
    let mut fix = |v: &mut Value| {
        if is_collection(v) {
            let id = v["id"].as_str().unwrap_or_default().to_string();
            if let Some(c) = canonical(&id).filter(|c| *c != id) {
                v["id"] = Value::String(c);
                changed = true;
            }
        }
    };
    match body {
        Value::Array(items) => items.iter_mut().for_each(&mut fix),
        v => fix(v),
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_keep_everything_but_the_id() {
        let p = "/api/v2/tenants/t/databases/d/collections/c-1/query?limit=3";
        assert_eq!(
            rewrite_path(p, "c-1", "r-9"),
            "/api/v2/tenants/t/databases/d/collections/r-9/query?limit=3"
        );
        assert_eq!(rewrite_path("/a/c-10/b", "c-1", "x"), "/a/c-10/b");
    }

    #[test]
    fn response_ids_become_canonical() {
        let collection =
            |id: &str| json!({"id": id, "name": "docs", "configuration_json": {}, "tenant": "t"});
        let mut list = json!([collection("r-9"), collection("other")]);
        let changed =
            rewrite_collection_ids(&mut list, |id| (id == "r-9").then(|| "c-1".to_string()));
        assert!(changed);
        assert_eq!(list[0]["id"], "c-1");
        assert_eq!(list[1]["id"], "other");
        let mut records = json!({"ids": ["r-9"]});
        assert!(!rewrite_collection_ids(&mut records, |_| Some("c-1".into())));
        assert_eq!(collections_in(&json!(collection("x"))).len(), 1);
    }
}
