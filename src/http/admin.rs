//! Admin endpoints under `/admin`, behind `Authorization: Bearer $ADMIN_TOKEN`: list instances,
//! force an instance's health for a while, clear the override.
//!
//! Never acts before the token is checked, and never logs the token or echoes it back.

use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::service::snapshots;
use super::{AppState, InstanceHandle};
use crate::actors::health::{ClearForce, ForceHealth};

/// Longest override: a forgotten one must not outlive a day.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(86_400);

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/instances", web::get().to(list_instances)).service(
        web::resource("/admin/instances/{name}/health")
            .route(web::post().to(force_health))
            .route(web::delete().to(clear_health)),
    );
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
