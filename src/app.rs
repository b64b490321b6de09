//! The composition root: opens and recovers the WAL, loads replication state, starts the
//! actors, then binds the HTTP server and serves until SIGTERM or Ctrl-C.
//!
//! Wiring only: nothing here handles a request, routes one, or decides health.

use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, Arbiter, Supervisor};
use actix_web::{App, HttpServer, web};
use log::{info, warn};

use crate::actors::health::{HealthActor, ProbeSettings};
use crate::actors::mapping::{self, MappingCacheActor};
use crate::actors::replay::{ReplayActor, ReplayCounters, ReplayParts};
use crate::actors::retention::RetentionActor;
use crate::actors::wal_writer::{Drain, WalWriterActor};
use crate::apply::effects::{DISCOVERY_RETRY, DiscoveryBackoff};
use prometheus_client::metrics::counter::Counter;

use crate::auth::Tokens;
use crate::config::Config;
use crate::events::Events;
use crate::http::gate::{self, Gate};
use crate::http::log_reader::LogReader;
use crate::http::{self, Cluster, Identities, InstanceHandle, Worker, WritePath};
use crate::identity::MappingTable;
use crate::instance::{InstanceId, InstanceName, InstanceSpec};
use crate::ordering::WriteOrder;
use crate::progress::Progress;
use crate::stats::Stats;
use crate::tls::Tls;
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

/// Opens and recovers the WAL, then starts its writer on a thread of its own.
fn start_wal(
    config: &Config,
    specs: &[InstanceSpec],
) -> Result<(WalStore, Addr<WalWriterActor>), WalError> {
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let store = WalStore::open(&config.database_url, names)?;
    let (queued, dropped) = store.recover()?;
    if queued > 0 {
        warn!(
            "recovery: {queued} writes had no recorded outcome (the proxy stopped mid-write); they are queued for replay to every instance"
        );
    }
    if dropped > 0 {
        warn!("recovery: dropped {dropped} backlog rows of instances no longer configured");
    }
    let head = store.head_seq()?;
    info!("write-ahead log: {} ({}), head at seq {head}", store.backend(), config.database_url);
    let writer_store = store.clone();
    let ttl = config.idempotency_ttl;
    let wal = Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        WalWriterActor::new(writer_store, head, ttl)
    });
    let (retained, retention, key_ttl) =
        (store.clone(), config.wal_retention, config.idempotency_ttl);
    Supervisor::start(move |_| RetentionActor::new(retained, retention, key_ttl));
    Ok((store, wal))
}

/// Loads collection identities and what every instance owes from the log.
fn load_replication_state(
    store: &WalStore,
    specs: &[InstanceSpec],
) -> Result<(Arc<MappingTable>, Arc<Progress>), WalError> {
    let names: Vec<InstanceName> = specs.iter().map(|s| s.name.clone()).collect();
    let table = Arc::new(MappingTable::new(specs.len()));
    let mappings = mapping::load(store, &table, &names)?;
    let progress = Arc::new(Progress::new(specs.len()));
    let mut owed = 0;
    for (instance, scope, count) in store.owed()? {
        if let Some(i) = names.iter().position(|n| *n == instance) {
            progress.owe(InstanceId(i), &scope, count);
            owed += count;
        }
    }
    info!("replication state: {mappings} collection ids, {owed} entries owed by instances");
    Ok((table, progress))
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

/// Runs the proxy until SIGTERM or Ctrl-C: in-flight requests drain for SHUTDOWN_GRACE, then
/// the WAL writer commits the last outcomes. `tls` is what [`Tls::load`] made of `config`'s
/// files. Must run inside an actix `System`.
pub async fn serve(config: &Config, tokens: Tokens, tls: Tls) -> Result<(), ServeError> {
    let specs = config.instances();
    let (store, wal) = start_wal(config, &specs)?;
    let (table, progress) = load_replication_state(&store, &specs)?;
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let (mapping_store, mapping_table) = (store.clone(), table.clone());
    let mapping =
        Supervisor::start(move |_| MappingCacheActor::new(mapping_store, mapping_table, names));
    let settings = ProbeSettings::from_interval(config.check_interval);
    let stats = Stats::new(&specs);
    let events = Arc::new(Events::default());
    let instances: Vec<InstanceHandle> = specs
        .iter()
        .map(|spec| {
            let judged = spec.clone();
            let tls = tls.upstream.clone();
            let events = events.clone();
            let health = Supervisor::start(move |_| {
                HealthActor::new(judged, settings, &tls, events.clone())
            });
            InstanceHandle { spec: spec.clone(), health }
        })
        .collect();
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
    };
    let replay = Supervisor::start(move |_| ReplayActor::new(parts));
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
    });
    let log = web::Data::new(LogReader::new(store, replay_counters));
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
            .configure(http::routes)
    })
    .shutdown_timeout(config.shutdown_grace.as_secs_f64().ceil() as u64);
    let (server, scheme) = match tls.listener {
        Some(listener) => (server.bind_rustls_0_23(config.listen_addr, listener)?, "https"),
        None => (server.bind(config.listen_addr)?, "http"),
    };
    // The bound address, which differs from LISTEN_ADDR when that asks for port 0.
    for addr in server.addrs() {
        info!("listening on {scheme}://{addr}");
    }
    let server = server.run();
    server.await?;
    if let Err(e) = wal
        .send(Drain)
        .await
        .map(|r| r.map_err(|e| e.to_string()))
        .unwrap_or_else(|e| Err(e.to_string()))
    {
        warn!(
            "shutdown: the last write outcomes could not be committed ({e}); recovery will queue those writes"
        );
    }
    Ok(())
}
