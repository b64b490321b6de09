//! The actix-web layer: the proxy, service and admin handlers and the state they share. The
//! composition root that starts everything is [`crate::app`].
//!
//! Handlers ask the router where a request goes; they never decide health or routing
//! themselves, and never start actors or open the store.

pub mod admin;
pub mod error;
pub mod execute;
pub mod proxy;
pub mod service;
pub mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Supervisor};
use actix_web::{HttpRequest, HttpResponse, web};
use log::error;

use self::error::ApiError;
use crate::chroma::headers::keep_response_header;
use crate::stats::bump;
use crate::upstream::UpstreamResponse;

use crate::actors::health::HealthActor;
use crate::actors::mapping::MappingCacheActor;
use crate::actors::replay::{ReplayActor, ReplayCounters};
use crate::actors::router::RouterActor;
use crate::actors::wal_writer::WalWriterActor;
use crate::apply::DiscoveryBackoff;
use crate::chroma::ids::MappingTable;
use crate::instance::InstanceSpec;
use crate::ordering::WriteOrder;
use crate::progress::Progress;
use crate::stats::Stats;
use crate::upstream::Upstream;
use crate::wal::store::WalStore;

/// One instance as the HTTP layer sees it: what it is and who judges its health.
pub struct InstanceHandle {
    /// Configuration of the instance.
    pub spec: InstanceSpec,
    /// Its health actor.
    pub health: Addr<HealthActor>,
}

/// State shared by every worker.
pub struct AppState {
    /// Every instance, indexed by `InstanceId`.
    pub instances: Vec<InstanceHandle>,
    /// Request counters.
    pub stats: Stats,
    /// Bearer token of the admin endpoints, if enabled.
    pub admin_token: Option<String>,
    /// When the proxy started.
    pub started: Instant,
    /// Share of reads sent to replicas, for the routers.
    pub read_replica_ratio: f64,
    /// The log's only writer.
    pub wal: Addr<WalWriterActor>,
    /// The log, for blocking reads (status, transactions) on actix's blocking pool.
    pub store: WalStore,
    /// What every instance still owes, per scope.
    pub progress: Arc<Progress>,
    /// Collection ids on every instance.
    pub table: Arc<MappingTable>,
    /// Collections whose discovery failed recently.
    pub discovery: DiscoveryBackoff,
    /// The writer of collection identities.
    pub mapping: Addr<MappingCacheActor>,
    /// The replayer, woken by new entries.
    pub replay: Addr<ReplayActor>,
    /// Replay figures for status.
    pub replay_counters: Arc<ReplayCounters>,
    /// One writer per scope at a time.
    pub order: WriteOrder,
    /// Collection names that cannot be deleted through the proxy.
    pub protected_collections: Vec<String>,
    /// Longest wait for one upstream answer, or for a target to catch up.
    pub request_timeout: Duration,
}

impl AppState {
    /// Finds an instance by its name.
    pub fn instance(&self, name: &str) -> Option<&InstanceHandle> {
        self.instances.iter().find(|i| i.spec.name.as_str() == name)
    }

    /// Specs of every instance, in order.
    pub fn specs(&self) -> Vec<InstanceSpec> {
        self.instances.iter().map(|i| i.spec.clone()).collect()
    }
}

/// Parts each worker thread owns: awc clients are not `Send`, and a router on the worker's
/// own thread answers without waking another CPU.
pub struct Worker {
    /// HTTP client to the instances.
    pub upstream: Upstream,
    /// This worker's router.
    pub router: Addr<RouterActor>,
}

impl Worker {
    /// Starts this thread's router and client; runs inside each worker.
    pub fn start(state: &AppState, timeout: Duration) -> Self {
        let roles = state.instances.iter().map(|i| i.spec.role).collect();
        let health = state.instances.iter().map(|i| i.health.clone().recipient()).collect();
        let ratio = state.read_replica_ratio;
        let progress = state.progress.clone();
        let router = Supervisor::start(move |_| RouterActor::new(roles, health, progress, ratio));
        Self { upstream: Upstream::new(timeout), router }
    }
}

/// Registers every route: Chroma's API first, under a static prefix, so its requests never try
/// the other routes' patterns; then the service and admin endpoints.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/api").default_service(web::to(proxy::forward)))
        .configure(service::routes)
        .configure(admin::routes)
        .default_service(web::to(proxy::forward));
}

/// The request's path and query string, as the client sent it.
pub fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or(req.path(), |p| p.as_str())
}

/// The 503 for a request no instance could serve, logged with every instance's reason.
pub fn unavailable(state: &AppState, req: &HttpRequest, detail: String) -> ApiError {
    bump(&state.stats.unavailable);
    error!("{} {}: no usable Chroma instance ({detail})", req.method(), req.path());
    ApiError::Unavailable(detail)
}

/// The client's answer: Chroma's status, end-to-end headers and body.
pub fn respond(answer: UpstreamResponse) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    for (name, value) in answer.headers.iter().filter(|(name, _)| keep_response_header(name)) {
        response.append_header((name.clone(), value.clone()));
    }
    response.body(answer.body)
}
