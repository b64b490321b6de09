//! Raw append throughput of the WAL writer (group commit) at 1, 16 and 64 concurrent
//! appenders, against the store named by DATABASE_URL. Run by scripts/bench.sh, or:
//!
//!     DATABASE_URL=/tmp/wal.sqlite cargo bench --bench wal_append
//!
//! Prints one line per concurrency: appends/s, p50 and p99 latency of one append.

use std::time::{Duration, Instant};

use actix::{Arbiter, Supervisor};
use actix_web::web::Bytes;
use chroma_ha::actors::wal_writer::{Append, WalWriterActor};
use chroma_ha::config::DatabaseUrl;
use chroma_ha::instance::InstanceName;
use chroma_ha::policy::Scope;
use chroma_ha::wal::models::WriteRecord;
use chroma_ha::wal::store::{Appended, WalStore};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn record(n: usize) -> WriteRecord {
    let body = format!(
        r#"{{"ids":["bench-{n}"],"embeddings":[[0.1,0.2,0.3,0.4]],"documents":["a small record, as a client adds it"]}}"#
    );
    WriteRecord {
        txn_id: uuid::Uuid::now_v7().to_string(),
        idempotency_key: None,
        kind: "add",
        method: "POST".into(),
        path: "/api/v2/tenants/default_tenant/databases/default_database/collections/5f1b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b/add".into(),
        body: Bytes::from(body),
        scope: Scope::Collection("5f1b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into()),
    }
}

fn main() {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "/tmp/chroma-ha-bench-wal.sqlite".into());
    let seconds: u64 =
        std::env::var("BENCH_DURATION").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let database = if url.starts_with("postgres") {
        DatabaseUrl::Postgres(url.clone())
    } else {
        DatabaseUrl::Sqlite(url.clone().into())
    };
    let store = WalStore::open(
        &database,
        vec![InstanceName::new("primary".into()), InstanceName::new("replica".into())],
    )
    .expect("open the WAL store");
    println!("backend {}", store.backend());
    actix::System::new().block_on(async move {
        let lease = store.lease().expect("read the lease");
        let epoch = store
            .take_lease("wal-append-bench", "http://127.0.0.1:1", &lease, Duration::from_secs(60))
            .expect("take the lease")
            .expect("the lease is free");
        store.hold(epoch);
        let head = store.head_seq().expect("head");
        let writer = Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            WalWriterActor::new(store, Duration::from_secs(86_400))
        });
        let mut next = (head.0 as usize + 1) * 1_000;
        for appenders in CONCURRENCY {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..appenders)
                .map(|a| {
                    let writer = writer.clone();
                    let base = next + a * 10_000_000;
                    actix::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut n = base;
                        while Instant::now() < deadline {
                            let started = Instant::now();
                            match writer.send(Append(record(n))).await {
                                Ok(Ok(Appended::Logged(_))) => latencies.push(started.elapsed()),
                                other => panic!("append failed: {other:?}"),
                            }
                            n += 1;
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            next += 100_000_000;
            latencies.sort();
            let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
            println!(
                "appenders {appenders:>2}: {:>8.0} appends/s  p50 {:.3} ms  p99 {:.3} ms  ({} appends)",
                latencies.len() as f64 / seconds as f64,
                pct(0.5),
                pct(0.99),
                latencies.len()
            );
        }
    });
}
