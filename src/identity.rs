//! Collection identity across instances. Chroma gives one collection a different UUID on every
//! instance; clients see one canonical id, the UUID from the instance where it was first
//! created. [`MappingTable`] holds, for every collection, its id and its name on each instance
//! that has it; [`IdentityChange`] is what an applied write, a discovery or an operator changes.
//!
//! Proxy state, not Chroma's API: the table is written only by the mapping cache actor (which
//! persists each change first); everything else reads. Never answers a canonical id for an
//! instance that knows the collection by another, and never looks a name up on the wrong
//! instance (a rename travels to each instance in log order).

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use serde::Serialize;

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

/// A collection on one instance: its id and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Local {
    pub id: InstanceCollectionId,
    pub name: String,
}

/// Where one collection is on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub canonical: CanonicalId,
    pub tenant: String,
    pub database: String,
    /// Its name on `instance`.
    pub name: String,
    pub instance: InstanceId,
    pub local: InstanceCollectionId,
}

/// A change of collection identity, applied in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityChange {
    /// The instance has the collection (created, forked, renamed, discovered, set by hand).
    Placed(Placement),
    /// The instance dropped `canonical`, or, with `None`, every collection (a reset).
    Dropped { instance: InstanceId, canonical: Option<CanonicalId> },
}

/// One collection: its id and name on every instance that has it.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionMapping {
    pub canonical_id: CanonicalId,
    pub tenant: String,
    pub database: String,
    /// Per instance (index = `InstanceId`): the collection there, if it has it.
    pub instances: Vec<Option<Local>>,
}

impl CollectionMapping {
    /// Its name on the first instance that has it (the primary, normally).
    pub fn name(&self) -> &str {
        self.instances.iter().flatten().next().map_or("", |l| l.name.as_str())
    }

    fn in_database(&self, tenant: &str, database: &str) -> bool {
        self.tenant == tenant && self.database == database
    }
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

    /// Forgets every collection, before the table is loaded again from the log (a new leader).
    pub fn clear(&self) {
        self.write(|m| *m = Maps::default());
    }

    /// The id of canonical collection `id` on `instance`.
    pub fn to_instance(&self, id: &str, instance: InstanceId) -> Translation {
        self.read(|m| match m.by_canonical.get(&CanonicalId(id.to_string())) {
            None => Translation::Unknown,
            Some(c) => match c.instances.get(instance.0).cloned().flatten() {
                Some(local) => Translation::Known(local.id),
                None => Translation::Missing,
            },
        })
    }

    /// The canonical id of `instance`'s collection `id`, if the proxy knows it.
    pub fn to_canonical(&self, instance: InstanceId, id: &str) -> Option<CanonicalId> {
        self.read(|m| m.by_instance_id.get(&(instance, id.to_string())).cloned())
    }

    /// The first collection `matches` accepts.
    fn find(&self, matches: impl Fn(&CollectionMapping) -> bool) -> Option<CanonicalId> {
        self.read(|m| m.by_canonical.values().find(|c| matches(c)).map(|c| c.canonical_id.clone()))
    }

    /// The canonical id of the collection `instance` has under this name.
    pub fn by_name_on(
        &self,
        instance: InstanceId,
        (tenant, database, name): (&str, &str, &str),
    ) -> Option<CanonicalId> {
        self.find(|c| {
            c.in_database(tenant, database)
                && c.instances.get(instance.0).cloned().flatten().is_some_and(|l| l.name == name)
        })
    }

    /// The canonical id of a collection one of `created_on` has under this name and `instance`
    /// lacks: the one a create of that name on `instance` joins. `created_on` are the instances
    /// that applied that create: another instance may still hold an older collection of the
    /// name, which a delete it owes will remove.
    pub fn lacked_by(
        &self,
        instance: InstanceId,
        (tenant, database, name): (&str, &str, &str),
        created_on: &[InstanceId],
    ) -> Option<CanonicalId> {
        self.find(|c| {
            c.in_database(tenant, database)
                && c.instances.get(instance.0).is_some_and(Option::is_none)
                && created_on.iter().any(|on| {
                    c.instances.get(on.0).cloned().flatten().is_some_and(|l| l.name == name)
                })
        })
    }

    /// Tenant, database and name of canonical collection `id` (its name on the first instance
    /// that has it).
    pub fn describe(&self, id: &str) -> Option<(String, String, String)> {
        self.read(|m| {
            let c = m.by_canonical.get(&CanonicalId(id.to_string()))?;
            Some((c.tenant.clone(), c.database.clone(), c.name().to_string()))
        })
    }

    /// Canonical ids of the collections of one database.
    pub fn in_database(&self, tenant: &str, database: &str) -> Vec<CanonicalId> {
        self.read(|m| {
            m.by_canonical
                .values()
                .filter(|c| c.in_database(tenant, database))
                .map(|c| c.canonical_id.clone())
                .collect()
        })
    }

    /// Applies one change.
    pub fn apply(&self, change: &IdentityChange) {
        match change {
            IdentityChange::Placed(placement) => self.place(placement),
            IdentityChange::Dropped { instance, canonical: Some(canonical) } => {
                self.forget(canonical, *instance)
            }
            IdentityChange::Dropped { instance, canonical: None } => {
                self.forget_instance(*instance)
            }
        }
    }

    fn place(&self, p: &Placement) {
        let instances = self.instances;
        self.write(|m| {
            let entry =
                m.by_canonical.entry(p.canonical.clone()).or_insert_with(|| CollectionMapping {
                    canonical_id: p.canonical.clone(),
                    tenant: p.tenant.clone(),
                    database: p.database.clone(),
                    instances: vec![None; instances],
                });
            let local = Local { id: p.local.clone(), name: p.name.clone() };
            if let Some(old) = entry.instances[p.instance.0].replace(local) {
                m.by_instance_id.remove(&(p.instance, old.id.0));
            }
            m.by_instance_id.insert((p.instance, p.local.0.clone()), p.canonical.clone());
        });
    }

    fn forget(&self, canonical: &CanonicalId, instance: InstanceId) {
        self.write(|m| {
            let Some(entry) = m.by_canonical.get_mut(canonical) else { return };
            if let Some(old) = entry.instances[instance.0].take() {
                m.by_instance_id.remove(&(instance, old.id.0));
            }
            if entry.instances.iter().all(Option::is_none) {
                m.by_canonical.remove(canonical);
            }
        });
    }

    fn forget_instance(&self, instance: InstanceId) {
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
            (&a.tenant, &a.database, a.name()).cmp(&(&b.tenant, &b.database, b.name()))
        });
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: (&str, &str) = ("t", "d");

    fn placed(canonical: &str, instance: usize, local: &str, name: &str) -> IdentityChange {
        IdentityChange::Placed(Placement {
            canonical: CanonicalId(canonical.into()),
            tenant: DB.0.into(),
            database: DB.1.into(),
            name: name.into(),
            instance: InstanceId(instance),
            local: InstanceCollectionId(local.into()),
        })
    }

    #[test]
    fn translation_both_ways() {
        let table = MappingTable::new(2);
        let canonical = CanonicalId("c-1".into());
        assert_eq!(table.to_instance("c-1", InstanceId(1)), Translation::Unknown);
        table.apply(&placed("c-1", 0, "c-1", "docs"));
        assert_eq!(table.to_instance("c-1", InstanceId(1)), Translation::Missing);
        table.apply(&placed("c-1", 1, "r-9", "docs"));
        assert_eq!(
            table.to_instance("c-1", InstanceId(1)),
            Translation::Known(InstanceCollectionId("r-9".into()))
        );
        assert_eq!(table.to_canonical(InstanceId(1), "r-9"), Some(canonical.clone()));
        assert_eq!(table.in_database("t", "d"), vec![canonical.clone()]);
        assert!(table.in_database("t", "other").is_empty());
        let dropped =
            IdentityChange::Dropped { instance: InstanceId(1), canonical: Some(canonical) };
        table.apply(&dropped);
        assert_eq!(table.to_canonical(InstanceId(1), "r-9"), None);
        table.apply(&IdentityChange::Dropped { instance: InstanceId(0), canonical: None });
        assert!(table.snapshot().is_empty());
    }

    /// A rename applied on the primary and still owed by the replica: each instance's name is
    /// looked up on that instance.
    #[test]
    fn names_are_per_instance() {
        let table = MappingTable::new(2);
        table.apply(&placed("c-1", 0, "c-1", "new"));
        table.apply(&placed("c-1", 1, "r-9", "old"));
        let canonical = Some(CanonicalId("c-1".into()));
        assert_eq!(table.by_name_on(InstanceId(0), ("t", "d", "new")), canonical);
        assert_eq!(table.by_name_on(InstanceId(1), ("t", "d", "new")), None);
        assert_eq!(table.by_name_on(InstanceId(1), ("t", "d", "old")), canonical);
        assert_eq!(table.snapshot()[0].name(), "new");

        let fresh = MappingTable::new(2);
        fresh.apply(&placed("c-1", 0, "c-1", "docs"));
        let created_on = [InstanceId(0)];
        assert_eq!(fresh.lacked_by(InstanceId(1), ("t", "d", "docs"), &created_on), canonical);
        assert_eq!(fresh.lacked_by(InstanceId(0), ("t", "d", "docs"), &created_on), None);
        assert_eq!(fresh.lacked_by(InstanceId(1), ("t", "other", "docs"), &created_on), None);
        // Instance 0 holds a collection of that name, but has not applied this create: an
        // older generation, which a delete it owes will remove.
        assert_eq!(fresh.lacked_by(InstanceId(1), ("t", "d", "docs"), &[]), None);
    }
}
