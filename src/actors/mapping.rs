//! MappingCacheActor: the only writer of collection identities. Each change is persisted in
//! the WAL database first, then published to the in-memory [`MappingTable`] every thread reads.
//!
//! Changes are applied one at a time, in the order they arrive: a change is persisted and
//! published before the next one starts, so a create and a delete of one collection cannot
//! land in the other order. It never publishes a mapping it could not persist, and never
//! blocks its thread on the database (persistence runs on actix's blocking pool).

use std::sync::Arc;

use actix::prelude::*;
use log::info;

use crate::identity::{CanonicalId, IdentityChange, InstanceCollectionId, MappingTable, Placement};
use crate::instance::{InstanceId, InstanceName};
use crate::wal::models::{MappingRow, now_ms};
use crate::wal::store::{WalError, WalStore};

/// Persist one identity change, then publish it to the table.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), WalError>")]
pub struct Persist(pub IdentityChange);

/// Persists and publishes collection identities.
pub struct MappingCacheActor {
    store: WalStore,
    table: Arc<MappingTable>,
    names: Vec<InstanceName>,
}

impl MappingCacheActor {
    /// A writer of `table`, persisting to `store`; `names` indexed by `InstanceId`.
    pub fn new(store: WalStore, table: Arc<MappingTable>, names: Vec<InstanceName>) -> Self {
        Self { store, table, names }
    }
}

/// Fills `table` from the persisted mappings; run once at startup, before serving.
pub fn load(
    store: &WalStore,
    table: &MappingTable,
    names: &[InstanceName],
) -> Result<usize, WalError> {
    let rows = store.mappings()?;
    for row in &rows {
        if let Some(i) = names.iter().position(|n| *n == row.instance) {
            table.apply(&IdentityChange::Placed(Placement {
                canonical: CanonicalId(row.canonical_id.clone()),
                tenant: row.tenant.clone(),
                database: row.database_name.clone(),
                name: row.name.clone(),
                instance: InstanceId(i),
                local: InstanceCollectionId(row.instance_id.clone()),
            }));
        }
    }
    Ok(rows.len())
}

impl Actor for MappingCacheActor {
    type Context = Context<Self>;
}

impl Supervised for MappingCacheActor {}

impl Handler<Persist> for MappingCacheActor {
    type Result = AtomicResponse<Self, Result<(), WalError>>;

    fn handle(&mut self, Persist(change): Persist, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let persist = match &change {
            IdentityChange::Placed(p) => {
                let row = MappingRow {
                    canonical_id: p.canonical.0.clone(),
                    instance: self.names[p.instance.0].clone(),
                    instance_id: p.local.0.clone(),
                    tenant: p.tenant.clone(),
                    database_name: p.database.clone(),
                    name: p.name.clone(),
                    updated_ms: now_ms(),
                };
                actix_web::rt::task::spawn_blocking(move || store.save_mapping(&row))
            }
            IdentityChange::Dropped { instance, canonical } => {
                let instance = self.names[instance.0].clone();
                let canonical = canonical.as_ref().map(|c| c.0.clone());
                actix_web::rt::task::spawn_blocking(move || {
                    store.delete_mappings(&instance, canonical.as_deref())
                })
            }
        };
        AtomicResponse::new(Box::pin(persist.into_actor(self).map(move |saved, act, _| {
            saved.map_err(|e| WalError::Unavailable(e.to_string()))??;
            act.table.apply(&change);
            if let IdentityChange::Placed(p) = &change
                && p.canonical.0 != p.local.0
            {
                info!(
                    "collection {}/{}/{}: canonical id {} is {} on {}",
                    p.tenant, p.database, p.name, p.canonical, p.local.0, act.names[p.instance.0]
                );
            }
            Ok(())
        })))
    }
}
