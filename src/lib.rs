//! chroma-ha: a high-availability proxy for ChromaDB.
//!
//! Clients speak Chroma's HTTP API v2 to the proxy; it sends writes to the primary and spreads
//! reads over the replicas, and re-sends a request to the next instance inside the same client
//! request when one dies or hangs.
//!
//! # Layout
//!
//! - [`config`]: flags, env vars and TOML file, validated into one `Config`.
//! - [`instance`]: typed instance ids, names and roles.
//! - [`actors::health`]: `HealthActor`, one per instance: probes, passive mark-down, overrides.
//! - [`actors::router`]: `RouterActor`: the ordered candidates for each read or write.
//! - [`chroma::routes`]: Chroma's route table: read, write, or refused.
//! - [`chroma::headers`]: which headers cross the proxy.
//! - [`upstream`]: one call to one instance, its failure classified for failover.
//! - [`http`]: actix-web server; [`http::proxy`] is the failover loop, [`http::service`] the
//!   status endpoints, [`http::admin`] the admin endpoints.
//! - [`stats`]: lock-free request counters.

pub mod actors;
pub mod chroma;
pub mod config;
pub mod http;
pub mod instance;
pub mod stats;
pub mod upstream;
pub mod wal;
