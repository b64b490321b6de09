//! Service endpoints: `/health`, `/status` and `/metrics`.
//!
//! Read-only: these handlers never change health, routing or counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, Worker};
use crate::actors::health::{GetHealth, HealthSnapshot};
use crate::actors::router::CountUsable;
use crate::wal::store::{Backlog, WalStatus};

/// Registers the service routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(metrics))
        .route("/wal/status", web::get().to(wal_status))
        .route("/transactions/{id}", web::get().to(transaction))
        .route("/collection/mappings", web::get().to(mappings));
}

/// The `write_ahead_log` block and every instance's backlog, read on the blocking pool.
async fn wal_block(state: &AppState) -> Result<(WalStatus, Vec<Backlog>), ApiError> {
    let store = state.store.clone();
    let counters = state.replay_counters.clone();
    web::block(move || {
        let active = counters.active.load(Ordering::Relaxed) > 0;
        store.status(counters.total.load(Ordering::Relaxed), active)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("WAL status task failed: {e}")))?
    .map_err(|e| ApiError::WalUnavailable(e.to_string()))
}

async fn mappings(state: web::Data<AppState>) -> HttpResponse {
    let names: Vec<&str> = state.instances.iter().map(|i| i.spec.name.as_str()).collect();
    let collections: Vec<Value> = state
        .table
        .snapshot()
        .into_iter()
        .map(|c| {
            let ids: serde_json::Map<String, Value> = names
                .iter()
                .zip(&c.instance_ids)
                .map(|(name, id)| (name.to_string(), json!(id)))
                .collect();
            json!({
                "canonical_id": c.canonical_id,
                "tenant": c.tenant,
                "database": c.database,
                "name": c.name,
                "instances": ids,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "collections": collections }))
}

async fn wal_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (status, backlogs) = wal_block(&state).await?;
    let mut body = serde_json::to_value(status).unwrap_or_default();
    body["instances"] = serde_json::to_value(backlogs).unwrap_or_default();
    Ok(HttpResponse::Ok().json(body))
}

async fn transaction(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let lookup = id.clone();
    let view = web::block(move || store.transaction(&lookup))
        .await
        .map_err(|e| ApiError::Internal(format!("transaction lookup failed: {e}")))?
        .map_err(|e| ApiError::WalUnavailable(e.to_string()))?;
    match view {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::NotFound(format!("no transaction `{id}` in the write-ahead log"))),
    }
}

/// 200 `healthy` when every instance is usable, 200 `degraded` when some are, 503 when none is.
async fn health(
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ApiError> {
    let usable = worker
        .router
        .send(CountUsable)
        .await
        .map_err(|e| ApiError::Internal(format!("router unavailable: {e}")))?;
    Ok(match usable {
        0 => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"})),
        n if n == state.instances.len() => HttpResponse::Ok().json(json!({"status": "healthy"})),
        _ => HttpResponse::Ok().json(json!({"status": "degraded"})),
    })
}

/// Health of every instance, from their health actors.
pub async fn snapshots(state: &AppState) -> Result<Vec<HealthSnapshot>, ApiError> {
    let answers = join_all(state.instances.iter().map(|i| i.health.send(GetHealth))).await;
    answers
        .into_iter()
        .zip(&state.instances)
        .map(|(answer, instance)| {
            answer.ok().flatten().ok_or_else(|| {
                ApiError::Internal(format!("health actor of {} did not answer", instance.spec.name))
            })
        })
        .collect()
}

async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snapshots = snapshots(&state).await?;
    // The status page stays up while the WAL store is down, and says why.
    let (wal, backlogs) = match wal_block(&state).await {
        Ok((status, backlogs)) => (serde_json::to_value(status).unwrap_or_default(), backlogs),
        Err(e) => (json!({"backend": state.store.backend(), "error": e.to_string()}), Vec::new()),
    };
    let owed = state.progress.backlogs();
    let instances: Vec<Value> = snapshots
        .iter()
        .zip(owed)
        .map(|(snapshot, owed)| {
            let mut entry = serde_json::to_value(snapshot).unwrap_or_default();
            let backlog = backlogs.iter().find(|b| b.instance == snapshot.name);
            if snapshot.healthy && snapshot.state == "healthy" && owed > 0 {
                entry["state"] = json!("catching_up");
            }
            entry["applied_seq"] = json!(backlog.map(|b| b.applied_seq));
            entry["replication_lag"] = json!({
                "entries": owed,
                "seconds": backlog.and_then(|b| b.oldest_seconds),
            });
            entry
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "service": "chroma-ha",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "healthy_instances": snapshots.iter().filter(|i| i.healthy).count(),
        "instances": instances,
        "write_ahead_log": wal,
        "stats": state.stats.snapshot(&state.specs()),
    })))
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let instances = snapshots(&state).await?;
    let stats = state.stats.snapshot(&state.specs());
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP chroma_ha_{name} {help}\n# TYPE chroma_ha_{name} counter");
        let _ = writeln!(out, "chroma_ha_{name} {value}");
    };
    counter("requests_total", "Proxied requests received.", stats.requests);
    counter("reads_total", "Requests classified as reads.", stats.reads);
    counter("writes_total", "Requests classified as writes.", stats.writes);
    counter("failovers_total", "Requests re-sent to another instance.", stats.failovers);
    counter("refused_total", "Requests refused by the proxy.", stats.refused);
    counter(
        "unavailable_total",
        "Requests answered 503 for want of a usable instance.",
        stats.unavailable,
    );
    let _ = writeln!(out, "# HELP chroma_ha_instance_up Whether requests may go to the instance.");
    let _ = writeln!(out, "# TYPE chroma_ha_instance_up gauge");
    for i in &instances {
        let _ = writeln!(
            out,
            "chroma_ha_instance_up{{instance=\"{}\"}} {}",
            i.name,
            u8::from(i.healthy)
        );
    }
    let _ =
        writeln!(out, "# HELP chroma_ha_instance_requests_total Requests an instance answered.");
    let _ = writeln!(out, "# TYPE chroma_ha_instance_requests_total counter");
    for c in &stats.instances {
        for (kind, value) in [("read", c.reads), ("write", c.writes)] {
            let _ = writeln!(
                out,
                "chroma_ha_instance_requests_total{{instance=\"{}\",kind=\"{kind}\"}} {value}",
                c.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP chroma_ha_instance_failures_total Failed upstream calls to an instance."
    );
    let _ = writeln!(out, "# TYPE chroma_ha_instance_failures_total counter");
    for c in &stats.instances {
        let _ = writeln!(
            out,
            "chroma_ha_instance_failures_total{{instance=\"{}\"}} {}",
            c.name, c.failures
        );
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out))
}
