//! Collection identity across instances. Chroma gives one collection a different UUID on every
//! instance; clients see one canonical id, the UUID from the instance where it was first
//! created. [`MappingTable`] holds the mapping in memory for every thread; paths and response
//! bodies are translated here.
//!
//! The table is written only by the mapping cache actor (which persists it first); everything
//! else reads. Never sends a canonical id to an instance that knows the collection by another.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use serde::Serialize;
use serde_json::Value;

use crate::instance::InstanceId;

/// A collection id as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CanonicalId(pub String);

/// A collection id as one instance knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceCollectionId(pub String);

impl fmt::Display for CanonicalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One collection: its name and its id on every instance that has it.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionMapping {
    pub canonical_id: CanonicalId,
    pub tenant: String,
    pub database: String,
    pub name: String,
    /// Per instance (index = `InstanceId`): its id there, if it has the collection.
    pub instance_ids: Vec<Option<InstanceCollectionId>>,
}

/// What a canonical id is on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// The instance knows the collection under this id.
    Known(InstanceCollectionId),
    /// The collection is known, but not (yet) on this instance.
    Missing,
    /// Not a collection the proxy has seen created; forwarded unchanged.
    Unknown,
}

#[derive(Default)]
struct Maps {
    by_canonical: HashMap<CanonicalId, CollectionMapping>,
    by_instance_id: HashMap<(InstanceId, String), CanonicalId>,
}

/// Every collection's ids, readable from any thread.
pub struct MappingTable {
    instances: usize,
    maps: RwLock<Maps>,
}

impl MappingTable {
    /// An empty table for this many instances.
    pub fn new(instances: usize) -> Self {
        Self { instances, maps: RwLock::new(Maps::default()) }
    }

    fn read<R>(&self, f: impl FnOnce(&Maps) -> R) -> R {
        f(&self.maps.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write<R>(&self, f: impl FnOnce(&mut Maps) -> R) -> R {
        f(&mut self.maps.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// The id of canonical collection `id` on `instance`.
    pub fn to_instance(&self, id: &str, instance: InstanceId) -> Translation {
        self.read(|m| match m.by_canonical.get(&CanonicalId(id.to_string())) {
            None => Translation::Unknown,
            Some(c) => match c.instance_ids.get(instance.0).cloned().flatten() {
                Some(local) => Translation::Known(local),
                None => Translation::Missing,
            },
        })
    }

    /// The canonical id of `instance`'s collection `id`, if the proxy knows it.
    pub fn to_canonical(&self, instance: InstanceId, id: &str) -> Option<CanonicalId> {
        self.read(|m| m.by_instance_id.get(&(instance, id.to_string())).cloned())
    }

    /// The canonical id of the collection with this name.
    pub fn by_name(&self, tenant: &str, database: &str, name: &str) -> Option<CanonicalId> {
        self.read(|m| {
            m.by_canonical
                .values()
                .find(|c| c.name == name && c.database == database && c.tenant == tenant)
                .map(|c| c.canonical_id.clone())
        })
    }

    /// Records that `instance` knows `canonical` (named `name`) as `local`.
    pub fn set(
        &self,
        canonical: &CanonicalId,
        (tenant, database, name): (&str, &str, &str),
        instance: InstanceId,
        local: &InstanceCollectionId,
    ) {
        let instances = self.instances;
        self.write(|m| {
            let entry =
                m.by_canonical.entry(canonical.clone()).or_insert_with(|| CollectionMapping {
                    canonical_id: canonical.clone(),
                    tenant: tenant.to_string(),
                    database: database.to_string(),
                    name: name.to_string(),
                    instance_ids: vec![None; instances],
                });
            entry.name = name.to_string();
            if let Some(old) = entry.instance_ids[instance.0].replace(local.clone()) {
                m.by_instance_id.remove(&(instance, old.0));
            }
            m.by_instance_id.insert((instance, local.0.clone()), canonical.clone());
        });
    }

    /// `instance` no longer has `canonical` (it applied its deletion).
    pub fn forget(&self, canonical: &CanonicalId, instance: InstanceId) {
        self.write(|m| {
            let Some(entry) = m.by_canonical.get_mut(canonical) else { return };
            if let Some(old) = entry.instance_ids[instance.0].take() {
                m.by_instance_id.remove(&(instance, old.0));
            }
            if entry.instance_ids.iter().all(Option::is_none) {
                m.by_canonical.remove(canonical);
            }
        });
    }

    /// `instance` has no collections any more (it applied a reset).
    pub fn forget_instance(&self, instance: InstanceId) {
        let canonicals: Vec<CanonicalId> = self.read(|m| m.by_canonical.keys().cloned().collect());
        for canonical in canonicals {
            self.forget(&canonical, instance);
        }
    }

    /// Every mapping, sorted by name.
    pub fn snapshot(&self) -> Vec<CollectionMapping> {
        let mut all: Vec<CollectionMapping> =
            self.read(|m| m.by_canonical.values().cloned().collect());
        all.sort_by(|a, b| {
            (&a.tenant, &a.database, &a.name).cmp(&(&b.tenant, &b.database, &b.name))
        });
        all
    }
}

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

    const NAMES: (&str, &str, &str) = ("t", "d", "docs");

    #[test]
    fn translation_both_ways() {
        let table = MappingTable::new(2);
        let canonical = CanonicalId("c-1".into());
        assert_eq!(table.to_instance("c-1", InstanceId(1)), Translation::Unknown);
        table.set(&canonical, NAMES, InstanceId(0), &InstanceCollectionId("c-1".into()));
        assert_eq!(table.to_instance("c-1", InstanceId(1)), Translation::Missing);
        table.set(&canonical, NAMES, InstanceId(1), &InstanceCollectionId("r-9".into()));
        assert_eq!(
            table.to_instance("c-1", InstanceId(1)),
            Translation::Known(InstanceCollectionId("r-9".into()))
        );
        assert_eq!(table.to_canonical(InstanceId(1), "r-9"), Some(canonical.clone()));
        assert_eq!(table.by_name("t", "d", "docs"), Some(canonical.clone()));
        table.forget(&canonical, InstanceId(1));
        assert_eq!(table.to_canonical(InstanceId(1), "r-9"), None);
        table.forget_instance(InstanceId(0));
        assert!(table.snapshot().is_empty());
    }

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
