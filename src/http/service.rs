//! Service endpoints: `/health`, `/status`, `/metrics`, `/events` and the `/dashboard` page.
//!
//! Read-only: these handlers never change health, routing or counters. `/health`, `/status` and
//! `/metrics` are open (monitoring reads them); what names tenants' data is behind the gate.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::error::ApiError;
use super::gate::Gate;
use super::log_reader::LogReader;
use super::{Cluster, Identities, Verifier, Worker};
use crate::actors::health::HealthSnapshot;
use crate::actors::lease::role;
use crate::actors::router::CountUsable;
use crate::chroma::routes::classify;
use crate::leadership::Standing;
use crate::stats::{self, InstanceSample, WalSample};
use crate::wal::store::{Backlog, WalStatus};

/// Registers the service routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(metrics))
        .route("/events", web::get().to(events))
        .route("/dashboard", web::get().to(dashboard))
        .route("/wal/status", web::get().to(wal_status))
        .route("/transactions/{id}", web::get().to(transaction))
        .route("/collection/mappings", web::get().to(mappings));
}

/// Every collection's ids; with tokens declared, for admins only (it names every tenant's
/// collections).
async fn mappings(
    req: HttpRequest,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    ids: web::Data<Identities>,
) -> Result<HttpResponse, ApiError> {
    if !gate.is_open() {
        gate.admin(&req)?;
    }
    let names: Vec<&str> = cluster.instances.iter().map(|i| i.spec.name.as_str()).collect();
    let collections: Vec<Value> = ids
        .table
        .snapshot()
        .into_iter()
        .map(|c| {
            let on: serde_json::Map<String, Value> = names
                .iter()
                .zip(&c.instances)
                .map(|(name, local)| (name.to_string(), json!(local.as_ref().map(|l| &l.id))))
                .collect();
            let named: serde_json::Map<String, Value> = names
                .iter()
                .zip(&c.instances)
                .filter_map(|(name, local)| Some((name.to_string(), json!(local.as_ref()?.name))))
                .collect();
            json!({
                "canonical_id": c.canonical_id,
                "tenant": c.tenant,
                "database": c.database,
                "name": c.name(),
                "instances": on,
                "names": named,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "collections": collections })))
}

async fn wal_status(log: web::Data<LogReader>) -> Result<HttpResponse, ApiError> {
    let (status, backlogs) = log.status().await?;
    let mut body = serde_json::to_value(status).unwrap_or_default();
    body["instances"] = serde_json::to_value(backlogs).unwrap_or_default();
    Ok(HttpResponse::Ok().json(body))
}

/// One write's outcome; with tokens declared, for a token that may read where it wrote.
async fn transaction(
    req: HttpRequest,
    gate: web::Data<Gate>,
    log: web::Data<LogReader>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = gate.caller(&req)?;
    match log.transaction(id.clone()).await? {
        Some(view) => {
            if let Some(caller) = caller {
                let path = view.path.split('?').next().unwrap_or_default();
                let route = classify(&Method::GET, path)?;
                gate.authorize(&caller, &route, b"")?;
            }
            Ok(HttpResponse::Ok().json(view))
        }
        None => Err(ApiError::NotFound(format!("no transaction `{id}` in the write-ahead log"))),
    }
}

/// 200 `healthy` when every instance is usable, 200 `degraded` when some are, 503 when none is.
async fn health(
    cluster: web::Data<Cluster>,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ApiError> {
    let usable = worker.router.send(CountUsable).await.map_err(ApiError::actor("router"))?;
    Ok(match usable {
        0 => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"})),
        n if n == cluster.instances.len() => HttpResponse::Ok().json(json!({"status": "healthy"})),
        _ => HttpResponse::Ok().json(json!({"status": "degraded"})),
    })
}

/// Health, replication progress and the log, read once for `/status` or `/metrics`.
struct Observed {
    snapshots: Vec<HealthSnapshot>,
    /// The log's block, or why the store could not be read (the page stays up and says so).
    wal: Result<WalStatus, ApiError>,
    backlogs: Vec<Backlog>,
    /// Entries each instance owes, in configuration order.
    owed: Vec<i64>,
}

impl Observed {
    async fn read(cluster: &Cluster, log: &LogReader) -> Result<Self, ApiError> {
        let snapshots = cluster.snapshots().await?;
        let (wal, backlogs) = match log.status().await {
            Ok((status, backlogs)) => (Ok(status), backlogs),
            Err(e) => (Err(e), Vec::new()),
        };
        // The leader's own count is current to the request; a follower's is not kept, and the
        // log's is what it shows.
        let owed = match cluster.leadership.view().standing {
            Standing::Following => cluster
                .instances
                .iter()
                .map(|i| {
                    let backlog = backlogs.iter().find(|b| b.instance == i.spec.name);
                    backlog.map_or(0, |b| b.entries)
                })
                .collect(),
            _ => cluster.progress.backlogs(),
        };
        Ok(Self { snapshots, wal, backlogs, owed })
    }

    /// Each instance: its health, its state (a usable instance that owes entries is
    /// `catching_up`), what it owes and its backlog row.
    fn instances(
        &self,
    ) -> impl Iterator<Item = (&HealthSnapshot, &'static str, i64, Option<&Backlog>)> {
        self.snapshots.iter().zip(&self.owed).map(|(snapshot, owed)| {
            let state = if snapshot.healthy && snapshot.state == "healthy" && *owed > 0 {
                "catching_up"
            } else {
                snapshot.state
            };
            let backlog = self.backlogs.iter().find(|b| b.instance == snapshot.name);
            (snapshot, state, *owed, backlog)
        })
    }
}

/// The `proxy` block of `/status`: this proxy, its role, the lease, the leader, and (on the
/// leader) the followers heard from.
async fn proxy_block(cluster: &Cluster, log: &LogReader) -> Value {
    let (view, me) = (cluster.leadership.view(), cluster.leadership.me());
    let mut block = json!({
        "id": me.id,
        "url": me.url,
        "role": role(&view),
        "epoch": view.epoch,
        "lease_lapsed": view.standing == Standing::Lapsed,
        "leader": view.leader,
    });
    if role(&view) == "leader" {
        block["followers"] = match log.members().await {
            Ok(members) => {
                json!(members.into_iter().filter(|m| m.proxy_id != me.id).collect::<Vec<_>>())
            }
            Err(e) => json!({"error": e.to_string()}),
        };
    }
    block
}

async fn status(
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    log: web::Data<LogReader>,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    let observed = Observed::read(&cluster, &log).await?;
    let proxy = proxy_block(&cluster, &log).await;
    let wal = match &observed.wal {
        Ok(status) => serde_json::to_value(status).unwrap_or_default(),
        Err(e) => json!({"backend": log.backend(), "error": e.to_string()}),
    };
    let instances: Vec<Value> = observed
        .instances()
        .enumerate()
        .map(|(i, (snapshot, state, owed, backlog))| {
            let mut entry = serde_json::to_value(snapshot).unwrap_or_default();
            entry["state"] = json!(state);
            entry["seeding"] = json!(cluster.seeds.get(i));
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
        "uptime_seconds": cluster.started.elapsed().as_secs(),
        "proxy": proxy,
        "healthy_instances": observed.snapshots.iter().filter(|i| i.healthy).count(),
        "instances": instances,
        "write_ahead_log": wal,
        "verification": verification_block(&verifier),
        "stats": cluster.stats.snapshot(&cluster.specs()),
        "auth": {
            "mode": gate.mode(),
            "denied": gate.denials().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        },
    })))
}

/// The `verification` block: the job running (its progress) and the last one, each with only
/// the collections that differ.
fn verification_block(verifier: &Verifier) -> Value {
    let (running, last) = verifier.state.read();
    json!({
        "running": running.map(|job| job.summary()),
        "last": last.map(|job| job.summary()),
    })
}

/// The live dashboard: one page compiled into the binary, refreshing itself from `/status` and
/// `/events`; it loads nothing from anywhere else (its security policy forbids it).
async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ))
        .insert_header(("cache-control", "no-store"))
        .body(include_str!("dashboard.html"))
}

/// The last transitions, newest first (no request paths: they would name tenants' data).
async fn events(cluster: web::Data<Cluster>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "events": cluster.events.recent() }))
}

/// Every series of [`crate::stats`], its gauges sampled from the same figures as `/status`.
async fn metrics(
    cluster: web::Data<Cluster>,
    log: web::Data<LogReader>,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    let observed = Observed::read(&cluster, &log).await?;
    let divergent = verifier.state.divergent_records();
    let instances: Vec<InstanceSample> = observed
        .instances()
        .map(|(snapshot, state, owed, backlog)| InstanceSample {
            up: snapshot.healthy,
            state,
            lag_entries: owed,
            lag_seconds: backlog.and_then(|b| b.oldest_seconds).unwrap_or(0.0),
            divergent_records: divergent
                .iter()
                .find(|(name, _)| *name == snapshot.name.as_str())
                .map_or(0, |(_, n)| *n as i64),
        })
        .collect();
    let wal = observed.wal.as_ref().ok().map(|w| WalSample {
        pending_writes: w.pending_writes,
        failed_replays: w.failed_replays,
        oldest_pending_seconds: w.oldest_pending.unwrap_or(0.0),
    });
    let view = cluster.leadership.view();
    let leads = matches!(view.standing, Standing::Leading { .. });
    let text = cluster
        .stats
        .encode(&instances, wal.as_ref(), (&cluster.leadership.me().id, leads, view.epoch))
        .map_err(|e| ApiError::Internal(format!("encoding metrics failed: {e}")))?;
    Ok(HttpResponse::Ok().content_type(stats::CONTENT_TYPE).body(text))
}
