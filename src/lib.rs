//! chroma-ha: a high-availability proxy for ChromaDB.
//!
//! Clients speak Chroma's HTTP API v2 to the proxy; it sends writes to the primary and spreads
//! reads over the replicas, and re-sends a request to the next instance inside the same client
//! request when one dies or hangs.
//!
//! # Layout
//!
//! - [`config`]: flags, env vars and TOML file, validated into one `Config`.
//! - [`remote`]: `chroma-ha check` (the monitoring plugin) and `chroma-ha status`.
//! - [`audit`]: `chroma-ha verify` and `chroma-ha repair`, clients of the admin API.
//! - [`app`]: the composition root: opens the WAL, starts the actors, binds the server.
//! - [`auth`]: tokens, roles, and what each may do (DESIGN 14).
//! - [`instance`]: typed instance ids, names and roles.
//! - [`actors::health`]: `HealthActor`, one per instance: probes, passive mark-down, overrides.
//! - [`actors::router`]: `RouterActor`: the ordered candidates for each read or write.
//! - [`chroma::routes`]: Chroma's route table: read, write, or refused.
//! - [`chroma::headers`]: which headers cross the proxy.
//! - [`upstream`]: one call to one instance, its failure classified for failover and its answer
//!   taken whole or, for a big record read, streamed; every client to instances is built there.
//! - [`tls`]: the listener's certificate and key, and how `https://` instances are verified.
//! - [`http`]: actix-web handlers; [`http::proxy`] is the failover loop, [`http::service`] the
//!   status endpoints, [`http::admin`] the admin endpoints.
//! - [`stats`]: request counters, histograms and scrape-time gauges for `/metrics`.
//! - [`events`]: the last transitions (down, up, overrides, failovers) for `/events`.
//! - [`wal`]: the write-ahead log store (diesel, PostgreSQL or SQLite).
//! - [`actors::wal_writer`]: `WalWriterActor`, the log's only writer, in group commits.
//! - [`actors::retention`]: `RetentionActor`, deletes what every instance has applied.
//! - [`actors::replay`]: `ReplayActor`, applies the log to instances that lack entries.
//! - [`actors::mapping`]: `MappingCacheActor`, persists collection identities.
//! - [`identity`]: canonical collection ids, and each collection's id and name per instance.
//! - [`chroma::ids`]: where collection ids are in Chroma's paths and answers.
//! - [`apply`]: one logged write as one instance must receive it ([`apply::translate`], pure),
//!   and the identity changes its answer implies, recorded by [`apply::effects`].
//! - [`progress`]: what each instance still owes, for read-your-writes routing.
//! - [`policy`]: read or write, the scopes of progress, the claims of writes and how they nest.
//! - [`ordering`]: writes whose claims conflict pass through the proxy one at a time.
//! - [`leadership`]: who leads the proxies sharing the log, read on every request;
//!   [`actors::lease`]: `LeaseActor`, which takes and renews the lease and fences the log.
//! - [`http::follow`]: a follower's requests, forwarded to the leader.
//! - [`memory`]: returns freed memory to the system every few seconds.
//! - [`seed`]: what seeding has done, per instance; [`actors::seeder`]: `SeederActor`, which
//!   holds an instance that comes up until its data is checked, and seeds an empty one.
//! - [`calls`]: the proxy's own calls to one instance (verification, repair, seeding).
//! - [`verify`]: record and chunk hashes, diffs and reports of verification (pure);
//!   [`actors::verifier`]: `VerifierActor`, which checks instances and repairs one, under the
//!   write claims.

pub mod actors;
pub mod app;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod chroma;
pub mod config;
pub mod events;
pub mod http;
pub mod identity;
pub mod instance;
pub mod leadership;
pub mod memory;
pub mod ordering;
pub mod policy;
pub mod progress;
pub mod remote;
pub mod seed;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod wal;
