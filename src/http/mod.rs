//! The actix-web layer: the proxy, service and admin handlers and the narrow handles they take.
//! The composition root that starts everything is [`crate::app`].
//!
//! Each handler takes only the handles it uses: [`Cluster`] (the instances and what the
//! failover loop judges them by), [`Identities`] (collection ids), [`WritePath`] (the log's
//! writer and the write order), [`log_reader::LogReader`] (the one reader of the log),
//! [`gate::Gate`] (who may pass) and the worker's own [`Worker`]. Handlers ask the router where a request goes; they never
//! decide health or routing themselves, and never start actors or open the store.

pub mod admin;
pub mod error;
pub mod execute;
pub mod follow;
pub mod gate;
pub mod log_reader;
pub mod proxy;
pub mod service;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::{Addr, Supervisor};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;

use self::error::ApiError;
use crate::actors::health::{GetHealth, HealthActor, HealthSnapshot};
use crate::actors::mapping::MappingCacheActor;
use crate::actors::replay::ReplayActor;
use crate::actors::router::RouterActor;
use crate::actors::wal_writer::WalWriterActor;
use crate::apply::effects::DiscoveryBackoff;
use crate::chroma::headers::keep_response_header;
use crate::events::Events;
use crate::identity::MappingTable;
use crate::instance::InstanceSpec;
use crate::leadership::Leadership;
use crate::ordering::WriteOrder;
use crate::progress::Progress;
use crate::stats::{Stats, bump};
use crate::tls::UpstreamTls;
use crate::upstream::{Body, Upstream, UpstreamResponse};

/// One instance as the HTTP layer sees it: what it is and who judges its health.
pub struct InstanceHandle {
    /// Configuration of the instance.
    pub spec: InstanceSpec,
    /// Its health actor.
    pub health: Addr<HealthActor>,
}

/// The instances, and what the failover loop judges them by.
pub struct Cluster {
    /// Every instance, indexed by `InstanceId`.
    pub instances: Vec<InstanceHandle>,
    /// Request counters.
    pub stats: Stats,
    /// What every instance still owes, per scope.
    pub progress: Arc<Progress>,
    /// Share of reads sent to replicas, for the routers.
    pub read_replica_ratio: f64,
    /// Longest wait for one upstream answer to a read, or for a target to catch up.
    pub request_timeout: Duration,
    /// Longest wait for one upstream answer to a write.
    pub write_timeout: Duration,
    /// Record answers declared larger than this many bytes are streamed (STREAM_THRESHOLD).
    pub stream_threshold: u64,
    /// When the proxy started.
    pub started: Instant,
    /// Recent transitions, for `/events`.
    pub events: Arc<Events>,
    /// Who leads the proxies sharing the log; writes are executed only while this one does.
    pub leadership: Arc<Leadership>,
    /// What seeding has done, per instance.
    pub seeds: Arc<crate::seed::SeedBoard>,
}

impl Cluster {
    /// Finds an instance by its name.
    pub fn instance(&self, name: &str) -> Option<&InstanceHandle> {
        self.instances.iter().find(|i| i.spec.name.as_str() == name)
    }

    /// Finds an instance by its name, or says which names exist.
    pub fn named(&self, name: &str) -> Result<&InstanceHandle, ApiError> {
        self.instance(name).ok_or_else(|| {
            let known: Vec<&str> = self.instances.iter().map(|i| i.spec.name.as_str()).collect();
            ApiError::NotFound(format!("no instance named `{name}` (known: {})", known.join(", ")))
        })
    }

    /// Specs of every instance, in order.
    pub fn specs(&self) -> Vec<InstanceSpec> {
        self.instances.iter().map(|i| i.spec.clone()).collect()
    }

    /// Health of every instance, from their health actors.
    pub async fn snapshots(&self) -> Result<Vec<HealthSnapshot>, ApiError> {
        let answers = join_all(self.instances.iter().map(|i| i.health.send(GetHealth))).await;
        answers
            .into_iter()
            .zip(&self.instances)
            .map(|(answer, instance)| {
                answer.ok().flatten().ok_or_else(|| {
                    ApiError::Internal(format!(
                        "health actor of {} did not answer",
                        instance.spec.name
                    ))
                })
            })
            .collect()
    }

    /// The 503 for a request no instance could serve, logged with every instance's reason.
    pub fn unavailable(&self, req: &HttpRequest, detail: String) -> ApiError {
        bump(&self.stats.unavailable);
        log::error!("{} {}: no usable Chroma instance ({detail})", req.method(), req.path());
        ApiError::Unavailable(detail)
    }
}

/// Collection identities: the table every thread reads, the writer that changes it, and the
/// collections whose discovery failed recently.
pub struct Identities {
    /// Collection ids on every instance.
    pub table: Arc<MappingTable>,
    /// The writer of collection identities.
    pub mapping: Addr<MappingCacheActor>,
    /// Collections whose discovery failed recently.
    pub discovery: DiscoveryBackoff,
}

/// What a write needs beyond the cluster and the identities.
pub struct WritePath {
    /// The log's only writer.
    pub wal: Addr<WalWriterActor>,
    /// Writes whose claims conflict run one at a time.
    pub order: WriteOrder,
    /// The replayer, woken by new entries.
    pub replay: Addr<ReplayActor>,
    /// Collection names that cannot be deleted through the proxy.
    pub protected_collections: Vec<String>,
    /// Writes past their leadership check and not finished: a shutdown waits for them before
    /// it hands the lease over.
    pub in_flight: AtomicUsize,
}

impl WritePath {
    /// Counts a write in flight until the guard drops.
    pub fn started(&self) -> impl Drop + '_ {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }
}

/// Verification and repair: the actor that runs them and what they found.
pub struct Verifier {
    /// Runs checks and repairs.
    pub actor: Addr<crate::actors::verifier::VerifierActor>,
    /// The job running and the last one finished.
    pub state: Arc<crate::verify::Verification>,
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
    /// Starts this thread's router and client (with `tls` for `https://` instances); runs
    /// inside each worker.
    pub fn start(cluster: &Cluster, tls: &UpstreamTls) -> Self {
        let roles = cluster.instances.iter().map(|i| i.spec.role).collect();
        let health = cluster.instances.iter().map(|i| i.health.clone().recipient()).collect();
        let ratio = cluster.read_replica_ratio;
        let progress = cluster.progress.clone();
        let router = Supervisor::start(move |_| RouterActor::new(roles, health, progress, ratio));
        let upstream = Upstream::new(tls, cluster.request_timeout, cluster.stream_threshold);
        Self { upstream, router }
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

/// The client's answer: Chroma's status, end-to-end headers and body. A streamed body passes
/// on as it arrives, chunked: one that breaks off ends without its last chunk, so that no client
/// takes what it got for the whole answer.
pub fn respond(answer: UpstreamResponse<impl Into<Body>>) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    for (name, value) in answer.headers.iter().filter(|(name, _)| keep_response_header(name)) {
        response.append_header((name.clone(), value.clone()));
    }
    match answer.body.into() {
        Body::Whole(bytes) => response.body(bytes),
        Body::Stream(chunks) => response.streaming(chunks),
    }
}
