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

use crate::chroma::ids::{CanonicalId, InstanceCollectionId, MappingTable};
use crate::instance::{InstanceId, InstanceName};
use crate::wal::models::{MappingRow, now_ms};
use crate::wal::store::{WalError, WalStore};

/// `instance` knows canonical collection `canonical` as `local`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), WalError>")]
pub struct Record {
    pub canonical: CanonicalId,
    pub tenant: String,
    pub database: String,
    pub name: String,
    pub instance: InstanceId,
    pub local: InstanceCollectionId,
}

/// `instance` no longer has `canonical` (it applied the deletion), or, with `None`, no
/// collection at all (it applied a reset).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), WalError>")]
pub struct Forget {
    pub instance: InstanceId,
    pub canonical: Option<CanonicalId>,
}

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
            table.set(
                &CanonicalId(row.canonical_id.clone()),
                (&row.tenant, &row.database_name, &row.name),
                InstanceId(i),
                &InstanceCollectionId(row.instance_id.clone()),
            );
        }
    }
    Ok(rows.len())
}

impl Actor for MappingCacheActor {
    type Context = Context<Self>;
}

impl Supervised for MappingCacheActor {}

impl Handler<Record> for MappingCacheActor {
    type Result = AtomicResponse<Self, Result<(), WalError>>;

    fn handle(&mut self, msg: Record, _: &mut Context<Self>) -> Self::Result {
        let row = MappingRow {
            canonical_id: msg.canonical.0.clone(),
            instance: self.names[msg.instance.0].clone(),
            instance_id: msg.local.0.clone(),
            tenant: msg.tenant.clone(),
            database_name: msg.database.clone(),
            name: msg.name.clone(),
            updated_ms: now_ms(),
        };
        let store = self.store.clone();
        let persist = actix_web::rt::task::spawn_blocking(move || store.save_mapping(&row));
        AtomicResponse::new(Box::pin(persist.into_actor(self).map(move |saved, act, _| {
            saved.map_err(|e| WalError::Unavailable(e.to_string()))??;
            act.table.set(
                &msg.canonical,
                (&msg.tenant, &msg.database, &msg.name),
                msg.instance,
                &msg.local,
            );
            if msg.canonical.0 != msg.local.0 {
                info!(
                    "collection {}/{}/{}: canonical id {} is {} on {}",
                    msg.tenant,
                    msg.database,
                    msg.name,
                    msg.canonical,
                    msg.local.0,
                    act.names[msg.instance.0]
                );
            }
            Ok(())
        })))
    }
}

impl Handler<Forget> for MappingCacheActor {
    type Result = AtomicResponse<Self, Result<(), WalError>>;

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let instance = self.names[msg.instance.0].clone();
        let canonical = msg.canonical.clone();
        let persist = actix_web::rt::task::spawn_blocking(move || {
            store.delete_mappings(&instance, canonical.as_ref().map(|c| c.0.as_str()))
        });
        AtomicResponse::new(Box::pin(persist.into_actor(self).map(move |deleted, act, _| {
            deleted.map_err(|e| WalError::Unavailable(e.to_string()))??;
            match &msg.canonical {
                Some(canonical) => act.table.forget(canonical, msg.instance),
                None => act.table.forget_instance(msg.instance),
            }
            Ok(())
        })))
    }
}
