//! Admin endpoints under `/admin`, behind ADMIN_TOKEN or an admin token for every tenant
//! ([`Gate::admin`]): list instances, force an instance's health for a while, clear the
//! override, repair a mapping, list, retry and skip failed replays, start a verification or a
//! repair of an instance and show its progress (on the leader only: a follower refuses them
//! with 503 naming the leader, since the job runs where the write order is).
//!
//! Never acts before the token is checked, and never logs the token or echoes it back.

use std::time::Duration;

use actix::Addr;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use log::warn;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::gate::Gate;
use super::log_reader::LogReader;
use super::{Cluster, Identities, Verifier};
use crate::actors::health::{ClearForce, ForceHealth};
use crate::actors::replay::{ReplayActor, RetryFailed, Skip};
use crate::actors::verifier::Start;
use crate::apply::effects::record_changes;
use crate::chroma::routes::is_collection_id;
use crate::identity::{CanonicalId, IdentityChange, InstanceCollectionId, Placement};
use crate::instance::Role;
use crate::verify::{Filter, Job};
use crate::wal::models::Seq;

/// Longest override: a forgotten one must not outlive a day.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(86_400);

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/instances", web::get().to(list_instances))
        .service(
            web::resource("/admin/instances/{name}/health")
                .route(web::post().to(force_health))
                .route(web::delete().to(clear_health)),
        )
        .route("/admin/create_mapping", web::post().to(create_mapping))
        .route("/admin/wal/failed", web::get().to(failed_replays))
        .route("/admin/wal/retry", web::post().to(retry_replays))
        .route("/admin/wal/skip", web::post().to(skip_replay))
        .service(
            web::resource("/admin/verify")
                .route(web::post().to(start_verify))
                .route(web::get().to(verify_status)),
        )
        .service(
            web::resource("/admin/repair")
                .route(web::post().to(start_repair))
                .route(web::get().to(verify_status)),
        );
}

/// Body of `POST /admin/create_mapping` (the seed deployment's shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingBody {
    collection_name: String,
    primary_id: String,
    replica_id: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default = "default_database")]
    database: String,
}

fn default_tenant() -> String {
    "default_tenant".to_string()
}

fn default_database() -> String {
    "default_database".to_string()
}

/// Repairs one collection's ids by hand: canonical = the primary's id.
async fn create_mapping(
    req: HttpRequest,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    ids: web::Data<Identities>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let body: MappingBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"collection_name\", \"primary_id\", \"replica_id\"}}: {e}"
        ))
    })?;
    for id in [&body.primary_id, &body.replica_id] {
        if !is_collection_id(id) {
            return Err(ApiError::BadRequest(format!("`{id}` is not a collection id (a UUID)")));
        }
    }
    if body.collection_name.is_empty() {
        return Err(ApiError::BadRequest("collection_name must not be empty".into()));
    }
    let canonical = CanonicalId(body.primary_id.clone());
    let mut changes = Vec::new();
    for (instance, local) in [("primary", &body.primary_id), ("replica", &body.replica_id)] {
        changes.push(IdentityChange::Placed(Placement {
            canonical: canonical.clone(),
            tenant: body.tenant.clone(),
            database: body.database.clone(),
            name: body.collection_name.clone(),
            instance: cluster.named(instance)?.spec.id,
            local: InstanceCollectionId(local.clone()),
        }));
    }
    record_changes(changes, &ids.mapping).await?;
    warn!(
        "admin: mapping of collection {} set by hand: primary {}, replica {}",
        body.collection_name, body.primary_id, body.replica_id
    );
    Ok(HttpResponse::Ok().json(json!({
        "collection_name": body.collection_name,
        "canonical_id": canonical,
        "primary_id": body.primary_id,
        "replica_id": body.replica_id,
    })))
}

/// Page size of `GET /admin/wal/failed` when the query names none, and the largest allowed.
const FAILED_PAGE: i64 = 100;
const FAILED_PAGE_MAX: i64 = 1_000;

/// Query of `GET /admin/wal/failed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    after: i64,
    /// At most this many.
    limit: Option<i64>,
}

/// One page of failed replays, oldest first; `next_after` pages on.
async fn failed_replays(
    req: HttpRequest,
    gate: web::Data<Gate>,
    log: web::Data<LogReader>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let query = web::Query::<FailedQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("expected ?after=SEQ&limit=N: {e}")))?;
    let limit = query.limit.unwrap_or(FAILED_PAGE);
    if !(1..=FAILED_PAGE_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {FAILED_PAGE_MAX}")));
    }
    let failed = log.failed(Seq(query.after), limit).await?;
    let next_after = (failed.len() as i64 == limit).then(|| failed.last().map(|f| f.seq)).flatten();
    Ok(HttpResponse::Ok().json(json!({ "failed": failed, "next_after": next_after })))
}

/// Body of `POST /admin/wal/retry`: both optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    seq: Option<i64>,
    instance: Option<String>,
}

async fn retry_replays(
    req: HttpRequest,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    replay: web::Data<Addr<ReplayActor>>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let body: RetryBody = if body.is_empty() {
        RetryBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "expected no body, or {{\"seq\": number, \"instance\": name}} (both optional): {e}"
            ))
        })?
    };
    let instance = match &body.instance {
        Some(name) => Some(cluster.named(name)?.spec.id),
        None => None,
    };
    let count = replay
        .send(RetryFailed { seq: body.seq.map(Seq), instance })
        .await
        .map_err(ApiError::actor("replay actor"))??;
    Ok(HttpResponse::Ok().json(json!({ "requeued": count })))
}

/// Body of `POST /admin/wal/skip`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipBody {
    seq: i64,
    instance: String,
    reason: String,
}

/// Marks one entry resolved on one instance without applying it, logged with the reason.
async fn skip_replay(
    req: HttpRequest,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    replay: web::Data<Addr<ReplayActor>>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let body: SkipBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"seq\": number, \"instance\": name, \"reason\": text}}: {e}"
        ))
    })?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason must say why the entry is skipped".into()));
    }
    let instance = cluster.named(&body.instance)?.spec.id;
    let skipped = replay
        .send(Skip { seq: Seq(body.seq), instance, reason: body.reason.clone() })
        .await
        .map_err(ApiError::actor("replay actor"))??;
    if !skipped {
        return Err(ApiError::NotFound(format!(
            "entry {} is not owed by {}: nothing to skip",
            body.seq, body.instance
        )));
    }
    Ok(HttpResponse::Ok()
        .json(json!({"seq": body.seq, "instance": body.instance, "skipped": true})))
}

/// Body of `POST /admin/instances/{name}/health`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    healthy: bool,
    duration_seconds: f64,
}

async fn list_instances(
    req: HttpRequest,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let instances: Vec<serde_json::Value> = cluster
        .snapshots()
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, snapshot)| {
            let mut entry = json!(snapshot);
            entry["seeding"] = json!(cluster.seeds.get(i));
            entry
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"instances": instances})))
}

async fn force_health(
    req: HttpRequest,
    name: web::Path<String>,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let instance = cluster.named(&name)?;
    let body: ForceBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"healthy\": bool, \"duration_seconds\": number}}: {e}"
        ))
    })?;
    let duration = Duration::try_from_secs_f64(body.duration_seconds)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_OVERRIDE)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "duration_seconds must be above 0 and at most {}",
                MAX_OVERRIDE.as_secs()
            ))
        })?;
    let until = instance
        .health
        .send(ForceHealth { healthy: body.healthy, duration })
        .await
        .map_err(ApiError::actor("health actor"))?;
    Ok(HttpResponse::Ok().json(json!({
        "instance": instance.spec.name,
        "healthy": body.healthy,
        "forced_until": until,
    })))
}

async fn clear_health(
    req: HttpRequest,
    name: web::Path<String>,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let instance = cluster.named(&name)?;
    let cleared =
        instance.health.send(ClearForce).await.map_err(ApiError::actor("health actor"))?;
    Ok(HttpResponse::Ok().json(json!({"instance": instance.spec.name, "cleared": cleared})))
}

/// Body of `POST /admin/repair`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepairBody {
    instance: String,
    tenant: Option<String>,
    database: Option<String>,
    collection: Option<String>,
    #[serde(default)]
    delete_extra: bool,
}

/// Refuses a job on a follower: it runs where the write order is, on the leader.
fn on_the_leader(cluster: &Cluster) -> Result<(), ApiError> {
    if cluster.leadership.may_execute() {
        return Ok(());
    }
    let leader = cluster.leadership.view().leader.filter(|l| l.id != cluster.leadership.me().id);
    Err(ApiError::NotLeader(match leader {
        Some(leader) => format!(
            "verification and repair run on the leader proxy only: send this to {} ({})",
            leader.url, leader.id
        ),
        None => "verification and repair run on the leader proxy only, and none leads now".into(),
    }))
}

async fn begin(verifier: &Verifier, job: Job) -> Result<HttpResponse, ApiError> {
    verifier
        .actor
        .send(Start(job.clone()))
        .await
        .map_err(ApiError::actor("verifier"))?
        .map_err(ApiError::Conflict)?;
    Ok(HttpResponse::Accepted().json(json!({ "started": job })))
}

/// Starts a check of every instance against the source: body empty, or
/// `{"tenant", "database", "collection"}` (each optional).
async fn start_verify(
    req: HttpRequest,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let filter: Filter = if body.iter().all(u8::is_ascii_whitespace) {
        Filter::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "expected an empty body or {{\"tenant\", \"database\", \"collection\"}} (each optional): {e}"
            ))
        })?
    };
    on_the_leader(&cluster)?;
    begin(&verifier, Job::new("verify", filter, None, false)).await
}

/// Starts a repair of one instance from the source: `{"instance", "tenant", "database",
/// "collection", "delete_extra"}` (all but `instance` optional).
async fn start_repair(
    req: HttpRequest,
    body: Bytes,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    let body: RepairBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"instance\", \"tenant\", \"database\", \"collection\", \"delete_extra\"}} (all but instance optional): {e}"
        ))
    })?;
    let instance = cluster.named(&body.instance)?;
    let healthy = cluster.snapshots().await?.get(instance.spec.id.0).is_some_and(|s| s.healthy);
    if instance.spec.role == Role::Primary && healthy {
        return Err(ApiError::BadRequest(format!(
            "`{}` is the source of the comparison (the usable primary): repair a replica",
            body.instance
        )));
    }
    on_the_leader(&cluster)?;
    let filter =
        Filter { tenant: body.tenant, database: body.database, collection: body.collection };
    begin(&verifier, Job::new("repair", filter, Some(body.instance), body.delete_extra)).await
}

/// The job running (with its progress) and the last one finished.
async fn verify_status(
    req: HttpRequest,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    gate.admin(&req)?;
    on_the_leader(&cluster)?;
    let (running, last) = verifier.state.read();
    Ok(HttpResponse::Ok().json(json!({ "running": running, "last": last })))
}
