//! The composition root: binds the listener, opens the WAL, starts the actors (the lease keeper
//! last: leading, it recovers the log and loads replication state), then serves until SIGTERM or
//! Ctrl-C, and hands the lease over.
//!
//! Wiring only: nothing here handles a request, routes one, or decides health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, Arbiter, Supervisor};
use actix_web::{App, HttpServer, web};
use log::{info, warn};

use crate::actors::health::{DataGate, HealthActor, ProbeSettings, WatchData};
use crate::actors::lease::{Duties, FirstLook, LeaseActor, Release};
use crate::actors::mapping::MappingCacheActor;
use crate::actors::replay::{ReplayActor, ReplayCounters, ReplayParts};
use crate::actors::retention::RetentionActor;
use crate::actors::seeder::{FirstCheck, SeederActor, SeederParts};
use crate::actors::wal_writer::{Drain, WalWriterActor};
use crate::apply::effects::{DISCOVERY_RETRY, DiscoveryBackoff};
use prometheus_client::metrics::counter::Counter;

use crate::actors::verifier::{VerifierActor, VerifierParts};
use crate::auth::Tokens;
use crate::config::Config;
use crate::events::Events;
use crate::http::gate::{self, Gate};
use crate::http::log_reader::LogReader;
use crate::http::{self, Cluster, Identities, InstanceHandle, Verifier, Worker, WritePath};
use crate::identity::MappingTable;
use crate::instance::{InstanceName, InstanceSpec};
use crate::leadership::{Leadership, Peer};
use crate::ordering::WriteOrder;
use crate::progress::Progress;
use crate::seed::SeedBoard;
use crate::stats::Stats;
use crate::tls::Tls;
use crate::verify::Verification;
use crate::wal::store::{WalError, WalStore};

/// Why the proxy could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The WAL store could not be opened or migrated.
    #[error("cannot open the write-ahead log (DATABASE_URL): {0}")]
    Wal(#[from] WalError),
    /// The listening socket could not be bound or the server failed.
    #[error("cannot serve on LISTEN_ADDR: {0}")]
    Listen(#[from] std::io::Error),
}

/// Opens the WAL (migrating it), then starts its writer on a thread of its own and retention.
/// Recovery waits for the lease: only the leader recovers.
fn start_wal(
    config: &Config,
    specs: &[InstanceSpec],
    leadership: &Arc<Leadership>,
) -> Result<(WalStore, Addr<WalWriterActor>), WalError> {
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let store = WalStore::open(&config.database_url, names)?;
    info!("write-ahead log: {} ({})", store.backend(), config.database_url);
    let writer_store = store.clone();
    let ttl = config.idempotency_ttl;
    let wal = Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        WalWriterActor::new(writer_store, ttl)
    });
    let (retained, retention, key_ttl) =
        (store.clone(), config.wal_retention, config.idempotency_ttl);
    let leads = leadership.clone();
    Supervisor::start(move |_| RetentionActor::new(retained, retention, key_ttl, leads));
    Ok((store, wal))
}

/// This proxy as the others reach it: PROXY_ID and ADVERTISE_URL, or the host name and the
/// URL of the address actually bound.
fn identify(config: &Config, bound: SocketAddr, scheme: &str) -> Peer {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    Peer {
        id: config.proxy_id.clone().unwrap_or_else(|| format!("{host}:{}", bound.port())),
        url: config.advertise_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}")),
    }
}

/// The gate with the tokens loaded at startup, re-read on every SIGHUP.
fn start_gate(config: &Config, tokens: Tokens, denied: Vec<Counter>) -> Gate {
    info!("auth: tokens: {}", gate::describe(&tokens));
    if tokens.is_empty() && !config.listen_addr.ip().is_loopback() {
        warn!(
            "auth: no tokens are declared and LISTEN_ADDR {} is not a loopback address: anyone who can reach it may read, write and reset every tenant",
            config.listen_addr
        );
    }
    Gate::new(tokens, config.admin_token.as_deref(), config.token_sources(), denied)
}

/// Re-reads the tokens on every SIGHUP, for as long as the proxy runs.
fn reload_on_sighup(gate: web::Data<Gate>) {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            actix_web::rt::spawn(async move {
                while hangups.recv().await.is_some() {
                    gate.reload();
                }
            });
        }
        Err(e) => warn!("auth: SIGHUP will not reload the tokens: {e}"),
    }
}

/// The listening socket, as actix-server would open it: address reuse, a backlog of 1,024.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Longest wait, at startup, for the seeder's first look at the instances' data.
const FIRST_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the seeder, has every health actor tell it when its instance comes up, and waits
/// (at most [`FIRST_CHECK_WAIT`]) for its first look at every instance, so that no request is
/// served by an instance whose data is not known to be there.
async fn start_seeder(
    config: &Config,
    (cluster, ids, writes): (&web::Data<Cluster>, &web::Data<Identities>, &web::Data<WritePath>),
    store: &WalStore,
    tls: &crate::tls::UpstreamTls,
) {
    let parts = SeederParts {
        cluster: cluster.clone(),
        ids: ids.clone(),
        writes: writes.clone(),
        store: store.clone(),
        board: cluster.seeds.clone(),
        rate: config.seed_rate,
        tls: tls.clone(),
    };
    let seeder = Supervisor::start(move |_| SeederActor::new(parts));
    for instance in &cluster.instances {
        instance.health.do_send(WatchData(seeder.clone().recipient()));
    }
    if actix_web::rt::time::timeout(FIRST_CHECK_WAIT, seeder.send(FirstCheck)).await.is_err() {
        warn!(
            "seeding: the first look at the instances' data took over {FIRST_CHECK_WAIT:?}; those not looked at yet serve nothing until it ends"
        );
    }
}

/// What a shutdown hands over: the writes in flight, the log's writer, the lease.
#[derive(Clone)]
struct Handover {
    leadership: Arc<Leadership>,
    writes: web::Data<WritePath>,
    wal: Addr<WalWriterActor>,
    lease: Addr<LeaseActor>,
    grace: std::time::Duration,
}

impl Handover {
    /// New requests wait for the next leader; the writes in flight finish (within
    /// SHUTDOWN_GRACE); their outcomes are committed; then the lease is released, so that
    /// another proxy leads at once. Safe to run twice.
    async fn run(&self) {
        self.leadership.drain();
        let deadline = Instant::now() + self.grace;
        while self.writes.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
            && Instant::now() < deadline
        {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let drained = self.wal.send(Drain).await;
        if let Err(e) =
            drained.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))
        {
            warn!(
                "shutdown: the last write outcomes could not be committed ({e}); recovery will queue those writes"
            );
        }
        let _ = self.lease.send(Release).await;
    }
}

/// On SIGTERM or Ctrl-C (SIGINT): stops accepting, hands over (see [`Handover::run`]), and lets
/// the server finish its connections.
fn stop_on_signal(server: actix_web::dev::ServerHandle, handover: Handover) {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("shutdown: SIGTERM and SIGINT cannot be caught; the proxy stops only when killed");
        return;
    };
    actix_web::rt::spawn(async move {
        let which =
            match futures_util::future::select(Box::pin(term.recv()), Box::pin(interrupt.recv()))
                .await
            {
                futures_util::future::Either::Left(_) => "SIGTERM",
                futures_util::future::Either::Right(_) => "SIGINT",
            };
        info!("{which}: no new connections; draining in-flight requests");
        let stopped = actix_web::rt::spawn(server.stop(true));
        handover.run().await;
        let _ = stopped.await;
    });
}

/// Runs the proxy until SIGTERM or Ctrl-C: in-flight requests drain for SHUTDOWN_GRACE, then
/// the WAL writer commits the last outcomes. `tls` is what [`Tls::load`] made of `config`'s
/// files. Must run inside an actix `System`.
pub async fn serve(config: &Config, tokens: Tokens, tls: Tls) -> Result<(), ServeError> {
    // Bound first: the proxy's default id and URL name the port actually bound.
    let listener = listen(config.listen_addr)?;
    let bound = listener.local_addr()?;
    let scheme = if tls.listener.is_some() { "https" } else { "http" };
    let me = identify(config, bound, scheme);
    info!("proxy {} (reached at {}), lease {:?}", me.id, me.url, config.lease_ttl);
    let leadership = Arc::new(Leadership::new(me));
    let specs = config.instances();
    let (store, wal) = start_wal(config, &specs, &leadership)?;
    let names: Vec<InstanceName> = specs.iter().map(|s| s.name.clone()).collect();
    let table = Arc::new(MappingTable::new(specs.len()));
    let progress = Arc::new(Progress::new(specs.len()));
    let (mapping_store, mapping_table, mapping_names) =
        (store.clone(), table.clone(), names.clone());
    let mapping = Supervisor::start(move |_| {
        MappingCacheActor::new(mapping_store, mapping_table, mapping_names)
    });
    let settings = ProbeSettings::from_interval(config.check_interval);
    let stats = Stats::new(&specs);
    let events = Arc::new(Events::default());
    // With seeding on, an instance serves only once the seeder has looked at its data.
    let first_gate = if config.seed_empty_instances { DataGate::Checking } else { DataGate::Open };
    let instances: Vec<InstanceHandle> = specs
        .iter()
        .map(|spec| {
            let judged = spec.clone();
            let tls = tls.upstream.clone();
            let events = events.clone();
            let health = Supervisor::start(move |_| {
                HealthActor::new(judged, settings, &tls, (events.clone(), first_gate))
            });
            InstanceHandle { spec: spec.clone(), health }
        })
        .collect();
    let specs_len = specs.len();
    let replay_counters = Arc::new(ReplayCounters::default());
    let parts = ReplayParts {
        store: store.clone(),
        specs,
        table: table.clone(),
        progress: progress.clone(),
        mapping: mapping.clone(),
        health: instances.iter().map(|i| i.health.clone()).collect(),
        counters: replay_counters.clone(),
        max_retries: config.max_replay_retries,
        write_timeout: config.write_timeout,
        tls: tls.upstream.clone(),
        leadership: leadership.clone(),
    };
    let replay = Supervisor::start(move |_| ReplayActor::new(parts));
    let duties =
        Duties { table: table.clone(), progress: progress.clone(), names, replay: replay.clone() };
    let (lease_store, leads, lease_events, ttl) =
        (store.clone(), leadership.clone(), events.clone(), config.lease_ttl);
    let lease = Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        LeaseActor::new(lease_store, leads, ttl, duties, lease_events)
    });
    // The first look at the lease is over before the first request: a lone proxy leads from
    // its first request on.
    let _ = lease.send(FirstLook).await;
    let cluster = web::Data::new(Cluster {
        instances,
        stats,
        progress,
        read_replica_ratio: config.read_replica_ratio,
        request_timeout: config.request_timeout,
        write_timeout: config.write_timeout,
        stream_threshold: config.stream_threshold,
        started: Instant::now(),
        events,
        leadership,
        seeds: Arc::new(SeedBoard::new(specs_len)),
    });
    let ids = web::Data::new(Identities {
        table,
        mapping,
        discovery: DiscoveryBackoff::new(DISCOVERY_RETRY),
    });
    let writes = web::Data::new(WritePath {
        wal: wal.clone(),
        order: WriteOrder::default(),
        replay: replay.clone(),
        protected_collections: config.protected_collections.clone(),
        in_flight: Default::default(),
    });
    let handover = Handover {
        leadership: cluster.leadership.clone(),
        writes: writes.clone(),
        wal,
        lease,
        grace: config.shutdown_grace,
    };
    let state = Arc::new(Verification::default());
    let parts = VerifierParts {
        cluster: cluster.clone(),
        ids: ids.clone(),
        writes: writes.clone(),
        state: state.clone(),
        rate: config.verify_rate,
        interval: config.verify_interval,
        tls: tls.upstream.clone(),
    };
    let actor = Supervisor::start(move |_| VerifierActor::new(parts));
    let verifier = web::Data::new(Verifier { actor, state });
    if config.seed_empty_instances {
        start_seeder(config, (&cluster, &ids, &writes), &store, &tls.upstream).await;
    }
    let log = web::Data::new(LogReader::new(store, replay_counters, config.lease_ttl));
    let gate = web::Data::new(start_gate(config, tokens, cluster.stats.denied.clone()));
    let replay = web::Data::new(replay);
    reload_on_sighup(gate.clone());
    let upstream_tls = tls.upstream;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Worker::start(&cluster, &upstream_tls)))
            .app_data(cluster.clone())
            .app_data(ids.clone())
            .app_data(writes.clone())
            .app_data(log.clone())
            .app_data(gate.clone())
            .app_data(replay.clone())
            .app_data(verifier.clone())
            .configure(http::routes)
    })
    .shutdown_timeout(config.shutdown_grace.as_secs_f64().ceil() as u64);
    let server = match tls.listener {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    info!("listening on {scheme}://{bound}");
    crate::memory::release_periodically();
    // Signals are handled here, not by the server, which would stop the whole system with it:
    // the log's writer and the lease keeper still have work once requests are drained.
    let server = server.disable_signals().run();
    stop_on_signal(server.handle(), handover.clone());
    server.await?;
    handover.run().await;
    Ok(())
}
