//! The effects of applying writes on collection identity: persisting and publishing the
//! identity changes [`super::translate`] works out, and discovering the ids of a collection the
//! proxy did not see created.
//!
//! Its only requests are the reads of discovery; it never sends a write, and never changes the
//! mapping table but through the mapping cache actor.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::Addr;
use serde_json::Value;

use crate::actors::mapping::{MappingCacheActor, Persist};
use crate::chroma::routes::Route;
use crate::identity::{CanonicalId, IdentityChange, InstanceCollectionId, MappingTable, Placement};
use crate::instance::InstanceSpec;
use crate::policy::Scope;
use crate::progress::Progress;
use crate::wal::store::WalError;

/// Pause after a failed discovery before client requests for that collection try it again.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(1);

/// Collections whose discovery failed recently (an instance could not be asked). Requests for
/// them are forwarded unchanged until the pause has passed, instead of each one asking every
/// instance again and logging again.
pub struct DiscoveryBackoff {
    pause: Duration,
    failed: Mutex<HashMap<String, Instant>>,
}

impl DiscoveryBackoff {
    /// Retries a failed discovery after `pause` ([`DISCOVERY_RETRY`] in the proxy).
    pub fn new(pause: Duration) -> Self {
        Self { pause, failed: Mutex::default() }
    }

    /// Whether discovery of collection `id` may be tried now.
    pub fn due(&self, id: &str) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(id).is_none_or(|at| at.elapsed() >= self.pause)
    }

    /// Discovery of collection `id` failed just now. Expired failures are dropped here, off
    /// the request path.
    pub fn failed(&self, id: &str) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.retain(|_, at| at.elapsed() < self.pause);
        failed.insert(id.to_string(), Instant::now());
    }
}

/// Persists and publishes identity changes, in order; answers the first error.
pub async fn record_changes(
    changes: Vec<IdentityChange>,
    mapping: &Addr<MappingCacheActor>,
) -> Result<(), WalError> {
    let unavailable = |e: actix::MailboxError| {
        WalError::Unavailable(format!("the collection mapping writer did not answer: {e}"))
    };
    for change in changes {
        mapping.send(Persist(change)).await.map_err(unavailable)??;
    }
    Ok(())
}

/// The collection object at `url`, `None` on 404; anything else is an error, never "missing".
async fn fetch(client: &awc::Client, url: String) -> Result<Option<Value>, DiscoveryError> {
    let failed = |e: String| DiscoveryError::Instance(format!("GET {url}: {e}"));
    let mut response = client.get(&url).send().await.map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status == actix_web::http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(failed(format!("answered {status}")));
    }
    response.json::<Value>().await.map(Some).map_err(|e| failed(e.to_string()))
}

/// Finds canonical collection `canonical` on one instance the table says lacks it, by its name,
/// and records its id there; answers whether it was found. Replay asks this before refusing an
/// entry for a collection "not on this instance": the instance has applied every entry before
/// it, so a collection of that name there is that collection, and its mapping was lost (its
/// create ran, but the store was down when its id was to be recorded: fault schedule seed 5).
pub async fn locate(
    client: &awc::Client,
    spec: &InstanceSpec,
    table: &MappingTable,
    canonical: &str,
    mapping: &Addr<MappingCacheActor>,
) -> Result<bool, DiscoveryError> {
    let Some((tenant, database, name)) = table.describe(canonical) else { return Ok(false) };
    let url =
        format!("{}/api/v2/tenants/{tenant}/databases/{database}/collections/{name}", spec.url);
    let Some(found) = fetch(client, url).await? else { return Ok(false) };
    let Some(local) = found["id"].as_str() else { return Ok(false) };
    let change = IdentityChange::Placed(Placement {
        canonical: CanonicalId(canonical.to_string()),
        tenant,
        database,
        name,
        instance: spec.id,
        local: InstanceCollectionId(local.to_string()),
    });
    record_changes(vec![change], mapping).await?;
    Ok(true)
}

/// Why a collection could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// An instance could not be asked, or answered something other than the collection or
    /// 404 (a 401, a 5xx, a timeout): reported as what it is, never as a missing collection.
    #[error("{0}")]
    Instance(String),
    /// The mapping could not be persisted.
    #[error(transparent)]
    Store(#[from] WalError),
}

/// Maps a collection the proxy did not see created (it predates the proxy, or was created
/// behind its back): the instance that knows `id` gives its name, every other instance its own
/// id for that name. Canonical is `id`, the one clients already use. Instances without the
/// collection stay unmapped (requests for it will not be sent there). Answers whether any
/// instance has it; an error when an instance could not be asked.
///
/// An instance that still owes collection writes of that database is not looked up by name:
/// an owed delete and create of the name may stand between what it holds now and the
/// collection `id` names (fault schedule seed 2 mapped a replica's old generation, which the
/// owed delete then removed). Replay maps it by name when it reaches the collection's writes,
/// in log order.
pub async fn discover(
    client: &awc::Client,
    specs: &[InstanceSpec],
    route: &Route,
    id: &str,
    (mapping, progress): (&Addr<MappingCacheActor>, &Progress),
) -> Result<bool, DiscoveryError> {
    let Some((tenant, database)) = route.database.as_deref().and_then(|d| d.split_once('/')) else {
        return Err(DiscoveryError::Instance("no database in the path".into()));
    };
    let base = format!("/api/v2/tenants/{tenant}/databases/{database}/collections");
    let get = |url: String| fetch(client, url);
    let mut known = None;
    for spec in specs {
        if let Some(c) = get(format!("{}{base}/by-id/{id}", spec.url)).await? {
            known = Some((spec.id, c["name"].as_str().unwrap_or_default().to_string()));
            break;
        }
    }
    let Some((owner, name)) = known else { return Ok(false) };
    let mut changes = Vec::new();
    for spec in specs {
        let names_settled = progress
            .is_current(spec.id, &[Scope::Global, Scope::Database(format!("{tenant}/{database}"))]);
        let local = if spec.id == owner {
            Some(id.to_string())
        } else if !names_settled {
            None
        } else {
            let found = get(format!("{}{base}/{name}", spec.url)).await?;
            found.and_then(|c| c["id"].as_str().map(str::to_string))
        };
        if let Some(local) = local {
            changes.push(IdentityChange::Placed(Placement {
                canonical: CanonicalId(id.to_string()),
                tenant: tenant.to_string(),
                database: database.to_string(),
                name: name.clone(),
                instance: spec.id,
                local: InstanceCollectionId(local),
            }));
        }
    }
    record_changes(changes, mapping).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "11111111-2222-3333-4444-555555555555";
    const R: &str = "99999999-8888-7777-6666-555555555555";

    #[test]
    fn a_failed_discovery_is_not_retried_at_once() {
        let backoff = DiscoveryBackoff::new(Duration::from_secs(3600));
        assert!(backoff.due(C));
        backoff.failed(C);
        assert!(!backoff.due(C), "retried only after the pause");
        assert!(backoff.due(R), "other collections are not held back");
        let no_pause = DiscoveryBackoff::new(Duration::ZERO);
        no_pause.failed(C);
        assert!(no_pause.due(C), "due again once the pause has passed");
    }
}
