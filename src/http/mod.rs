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
    /// The routing actor.
    pub router: Addr<RouterActor>,
    /// Request counters.
    pub stats: Stats,
    /// Bearer token of the admin endpoints, if enabled.
    pub admin_token: Option<String>,
    /// When the proxy started.
    pub started: Instant,
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
    let roles = specs.iter().map(|s| s.role).collect();
    let ratio = config.read_replica_ratio;
    let router = Supervisor::start(move |_| RouterActor::new(roles, ratio));
    let settings = ProbeSettings::from_interval(config.check_interval);
    let stats = Stats::new(specs.len());
    let instances = specs
        .into_iter()
        .map(|spec| {
            let subscribers = vec![router.clone().recipient()];
            let judged = spec.clone();
            let health =
                Supervisor::start(move |_| HealthActor::new(judged, settings, subscribers));
            InstanceHandle { spec, health }
        })
        .collect();
    let state = web::Data::new(AppState {
        instances,
        router,
        stats,
        admin_token: config.admin_token.clone(),
        started: Instant::now(),
    });
    let timeout = config.request_timeout;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(Upstream::new(timeout)))
            .configure(service::routes)
            .configure(admin::routes)
            .default_service(web::to(proxy::forward))
    })
    .shutdown_timeout(config.shutdown_grace.as_secs_f64().ceil() as u64)
    .bind(config.listen_addr)?
    .run();
    Ok(server)
}
