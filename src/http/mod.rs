//! The actix-web layer: starts the actors, then serves the proxy, service and admin endpoints.
//!
//! Handlers ask the router where a request goes; they never decide health or routing themselves.

pub mod admin;
pub mod error;
pub mod proxy;
pub mod service;

use std::time::Instant;

use actix::{Addr, Supervisor};
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

use crate::actors::health::{HealthActor, ProbeSettings};
use crate::actors::router::RouterActor;
use crate::config::Config;
use crate::instance::InstanceSpec;
use crate::stats::Stats;
use crate::upstream::Upstream;

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
    fn start(state: &AppState, timeout: std::time::Duration) -> Self {
        let roles = state.instances.iter().map(|i| i.spec.role).collect();
        let health = state
            .instances
            .iter()
            .map(|i| i.health.clone().recipient())
            .collect();
        let ratio = state.read_replica_ratio;
        let router = Supervisor::start(move |_| RouterActor::new(roles, health, ratio));
        Self {
            upstream: Upstream::new(timeout),
            router,
        }
    }
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

/// Starts the actors and binds the server; must run inside an actix `System`.
/// The server drains in-flight requests for SHUTDOWN_GRACE after SIGTERM or Ctrl-C.
pub fn start(config: &Config) -> std::io::Result<Server> {
    let specs = config.instances();
    let settings = ProbeSettings::from_interval(config.check_interval);
    let stats = Stats::new(specs.len());
    let instances = specs
        .into_iter()
        .map(|spec| {
            let judged = spec.clone();
            let health = Supervisor::start(move |_| HealthActor::new(judged, settings));
            InstanceHandle { spec, health }
        })
        .collect();
    let state = web::Data::new(AppState {
        instances,
        stats,
        admin_token: config.admin_token.clone(),
        started: Instant::now(),
        read_replica_ratio: config.read_replica_ratio,
    });
    let timeout = config.request_timeout;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(Worker::start(&state, timeout)))
            .configure(service::routes)
            .configure(admin::routes)
            .default_service(web::to(proxy::forward))
    })
    .shutdown_timeout(config.shutdown_grace.as_secs_f64().ceil() as u64)
    .bind(config.listen_addr)?
    .run();
    Ok(server)
}
