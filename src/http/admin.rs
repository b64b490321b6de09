//! Admin endpoints under `/admin`, behind `Authorization: Bearer $ADMIN_TOKEN`: list instances,
//! force an instance's health for a while, clear the override.
//!
//! Never acts before the token is checked, and never logs the token or echoes it back.

use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use log::warn;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::service::snapshots;
use super::{AppState, InstanceHandle};
use crate::actors::health::{ClearForce, ForceHealth};
use crate::actors::mapping::Record;
use crate::actors::replay::RetryFailed;
use crate::chroma::ids::{CanonicalId, InstanceCollectionId};
use crate::chroma::routes::is_collection_id;

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
        .route("/admin/wal/retry", web::post().to(retry_replays));
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
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
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
    for (instance, local) in [("primary", &body.primary_id), ("replica", &body.replica_id)] {
        let instance = self::instance(&state, instance)?.spec.id;
        let record = Record {
            canonical: canonical.clone(),
            tenant: body.tenant.clone(),
            database: body.database.clone(),
            name: body.collection_name.clone(),
            instance,
            local: InstanceCollectionId(local.clone()),
        };
        state
            .mapping
            .send(record)
            .await
            .map_err(|e| ApiError::Internal(format!("mapping actor unavailable: {e}")))?
            .map_err(|e| ApiError::WalUnavailable(e.to_string()))?;
    }
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

async fn failed_replays(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let store = state.store.clone();
    let failed = web::block(move || store.failed(1_000))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::WalUnavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "failed": failed })))
}

async fn retry_replays(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let count = state
        .replay
        .send(RetryFailed)
        .await
        .map_err(|e| ApiError::Internal(format!("replay actor unavailable: {e}")))?
        .map_err(|e| ApiError::WalUnavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "requeued": count })))
}

/// Body of `POST /admin/instances/{name}/health`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    healthy: bool,
    duration_seconds: f64,
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn instance<'a>(state: &'a AppState, name: &str) -> Result<&'a InstanceHandle, ApiError> {
    state.instance(name).ok_or_else(|| {
        let known: Vec<&str> = state.instances.iter().map(|i| i.spec.name.as_str()).collect();
        ApiError::NotFound(format!("no instance named `{name}` (known: {})", known.join(", ")))
    })
}

async fn list_instances(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    Ok(HttpResponse::Ok().json(json!({"instances": snapshots(&state).await?})))
}

async fn force_health(
    req: HttpRequest,
    name: web::Path<String>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let instance = instance(&state, &name)?;
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
        .map_err(|e| ApiError::Internal(format!("health actor unavailable: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({
        "instance": instance.spec.name,
        "healthy": body.healthy,
        "forced_until": until,
    })))
}

async fn clear_health(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let instance = instance(&state, &name)?;
    let cleared = instance
        .health
        .send(ClearForce)
        .await
        .map_err(|e| ApiError::Internal(format!("health actor unavailable: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"instance": instance.spec.name, "cleared": cleared})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
