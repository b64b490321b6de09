//! The proxy's figures, shared by every HTTP worker and read by `/status` and `/metrics`
//! (DESIGN 15): counters and histograms updated on requests, and gauges sampled at each scrape
//! from health, replication progress and the log.
//!
//! Atomics only on the request path: this module never blocks it and never allocates on it,
//! except once for each new (kind, status code) pair of `chroma_ha_requests_total` (later ones
//! take that family's read lock). Every series
//! is a `prometheus-client` metric registered once, at start; the per-instance ones are taken
//! out of their families then, so a [`bump`] never takes a family's lock or adds a series, and
//! `/metrics` shows every series from the first scrape on.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix_web::http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::auth::DENIAL_REASONS;
use crate::instance::InstanceSpec;

/// The `Content-Type` of [`Stats::encode`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every state `/status` gives an instance, for `chroma_ha_instance_state`.
pub const INSTANCE_STATES: [&str; 7] =
    ["healthy", "catching_up", "checking", "seeding", "unhealthy", "forced_up", "forced_down"];

/// Buckets of the duration histograms: 100 µs to about 15 s, each 2.5 times the last, so that
/// a sub-millisecond WAL append and a multi-second query both land in a bucket of their own.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.5, 14))
}

type Labels<const N: usize> = [(&'static str, String); N];
type FloatGauge = Gauge<f64, AtomicU64>;

/// What a proxied request is, for the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Read = 0,
    Write = 1,
    /// Not a route the proxy knows (refused with 404).
    Unknown = 2,
}

/// The labels of `chroma_ha_requests_total`: built without allocating, on every request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Answer {
    kind: &'static str,
    code: u16,
}

impl RequestKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Unknown => "unknown",
        }
    }
}

/// Proxy-wide figures plus one [`InstanceCounters`] per instance, all in one registry.
#[derive(Debug)]
pub struct Stats {
    /// Proxied requests received (for `/status`; `/metrics` has them by kind and code).
    pub requests: Counter,
    /// Requests classified as reads.
    pub reads: Counter,
    /// Requests classified as writes.
    pub writes: Counter,
    /// Requests refused by the proxy itself (bad input, unknown route, auth).
    pub refused: Counter,
    /// Requests answered 503 because no instance was usable.
    pub unavailable: Counter,
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceCounters>,
    /// Requests refused 401 or 403, per reason, in the order of [`DENIAL_REASONS`].
    pub denied: Vec<Counter>,
    /// Time from a write's arrival at the WAL writer to its entry being durable.
    pub wal_append: Histogram,
    answers: Family<Answer, Counter>,
    /// `chroma_ha_request_seconds`, one per [`RequestKind`], taken out of the family at start.
    durations: [Histogram; 3],
    wal: WalGauges,
    /// Every series above, under the `chroma_ha_` prefix.
    registry: Registry,
}

/// Figures of one instance: its series in the families of [`Stats`]'s registry.
#[derive(Debug)]
pub struct InstanceCounters {
    /// Reads this instance answered.
    pub reads: Counter,
    /// Writes this instance answered.
    pub writes: Counter,
    /// Upstream calls to it that failed (connection, timeout, 5xx).
    pub failures: Counter,
    /// Requests re-sent from it to another instance.
    pub failovers: Counter,
    up: Gauge,
    /// One gauge per [`INSTANCE_STATES`]: 1 for the state it is in.
    states: Vec<Gauge>,
    lag_entries: Gauge,
    lag_seconds: FloatGauge,
    divergent_records: Gauge,
}

#[derive(Debug, Default)]
struct WalGauges {
    /// 1 while this proxy leads (holds the lease, renewed in time), 0 while it follows; labelled
    /// with its PROXY_ID.
    leader: Family<Labels<1>, Gauge>,
    /// The lease's epoch as this proxy last saw it.
    lease_epoch: Gauge,
    store_up: Gauge,
    pending_writes: Gauge,
    failed_replays: Gauge,
    oldest_pending: FloatGauge,
}

/// One instance as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSample {
    /// Whether requests may go to it.
    pub up: bool,
    /// One of [`INSTANCE_STATES`].
    pub state: &'static str,
    /// Entries it still owes.
    pub lag_entries: i64,
    /// Age of the oldest one, in seconds (0 when none).
    pub lag_seconds: f64,
    /// Records that differed from the source in the last verification (0 when none ran).
    pub divergent_records: i64,
}

/// The log as a scrape sees it; `None` when the store could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct WalSample {
    pub pending_writes: i64,
    pub failed_replays: i64,
    pub oldest_pending_seconds: f64,
}

/// Adds one to a counter.
pub fn bump(counter: &Counter) {
    counter.inc();
}

/// A copy of the counters, for JSON output.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub failovers: u64,
    pub refused: u64,
    pub unavailable: u64,
    pub instances: Vec<InstanceCountersSnapshot>,
}

/// A copy of one instance's counters.
#[derive(Debug, Serialize)]
pub struct InstanceCountersSnapshot {
    pub name: String,
    pub reads: u64,
    pub writes: u64,
    pub failures: u64,
    pub failovers: u64,
}

impl Stats {
    /// Zeroed figures for these instances, registered under their names.
    pub fn new(specs: &[InstanceSpec]) -> Self {
        let mut registry = Registry::with_prefix("chroma_ha");
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let reads = counter("reads", "Requests classified as reads");
        let writes = counter("writes", "Requests classified as writes");
        let refused = counter("refused", "Requests refused by the proxy");
        let unavailable =
            counter("unavailable", "Requests answered 503 for want of a usable instance");
        let answers = Family::<Answer, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests by kind (read, write, unknown) and the status code answered",
            answers.clone(),
        );
        let family = Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_buckets,
        );
        registry.register(
            "request_seconds",
            "Time to answer a proxied request, by kind",
            family.clone(),
        );
        let durations = [RequestKind::Read, RequestKind::Write, RequestKind::Unknown]
            .map(|kind| family.get_or_create_owned(&[("kind", kind.as_str().to_string())]));
        let wal_append = duration_buckets();
        registry.register(
            "wal_append_seconds",
            "Time for a write's log entry to be durable (group commit included)",
            wal_append.clone(),
        );
        let wal = WalGauges::default();
        registry.register(
            "leader",
            "1 while this proxy leads the proxies sharing the WAL",
            wal.leader.clone(),
        );
        for (name, help, gauge) in [
            ("lease_epoch", "The leader lease's epoch as this proxy last saw it", &wal.lease_epoch),
            ("wal_store_up", "Whether the WAL store answered the last scrape", &wal.store_up),
            ("wal_pending_writes", "Entries some instance has not applied", &wal.pending_writes),
            ("wal_failed_replays", "Entry/instance pairs given up on", &wal.failed_replays),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "wal_oldest_pending_seconds",
            "Age of the oldest entry some instance has not applied (0 when none)",
            wal.oldest_pending.clone(),
        );
        let refusals = Family::<Labels<1>, Counter>::default();
        registry.register(
            "auth_denied",
            "Requests refused 401 (missing, malformed, unknown token) or 403 (role, tenant, database)",
            refusals.clone(),
        );
        let denied = DENIAL_REASONS
            .iter()
            .map(|reason| refusals.get_or_create_owned(&[("reason", reason.to_string())]))
            .collect();
        let per_instance = InstanceFamilies::register(&mut registry);
        let instances = specs.iter().map(|spec| per_instance.of(&spec.name.to_string())).collect();
        Self {
            requests: Counter::default(),
            reads,
            writes,
            refused,
            unavailable,
            instances,
            denied,
            wal_append,
            answers,
            durations,
            wal,
            registry,
        }
    }

    /// A proxied request of this kind was answered `status` after `took`.
    pub fn answered(&self, kind: RequestKind, status: StatusCode, took: Duration) {
        bump(&self.answers.get_or_create(&Answer { kind: kind.as_str(), code: status.as_u16() }));
        self.durations[kind as usize].observe(took.as_secs_f64());
    }

    /// Reads every counter once.
    pub fn snapshot(&self, specs: &[InstanceSpec]) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.get(),
            reads: self.reads.get(),
            writes: self.writes.get(),
            failovers: self.instances.iter().map(|c| c.failovers.get()).sum(),
            refused: self.refused.get(),
            unavailable: self.unavailable.get(),
            instances: specs
                .iter()
                .zip(&self.instances)
                .map(|(spec, c)| InstanceCountersSnapshot {
                    name: spec.name.to_string(),
                    reads: c.reads.get(),
                    writes: c.writes.get(),
                    failures: c.failures.get(),
                    failovers: c.failovers.get(),
                })
                .collect(),
        }
    }

    /// Every series in the Prometheus text format ([`CONTENT_TYPE`]), the gauges first set from
    /// this scrape's samples (instances in configuration order; whether this proxy leads, and
    /// the lease's epoch).
    pub fn encode(
        &self,
        instances: &[InstanceSample],
        wal: Option<&WalSample>,
        (proxy, leads, epoch): (&str, bool, i64),
    ) -> Result<String, std::fmt::Error> {
        self.wal.leader.get_or_create(&[("proxy", proxy.to_string())]).set(i64::from(leads));
        self.wal.lease_epoch.set(epoch);
        for (counters, sample) in self.instances.iter().zip(instances) {
            counters.up.set(i64::from(sample.up));
            for (state, gauge) in INSTANCE_STATES.iter().zip(&counters.states) {
                gauge.set(i64::from(*state == sample.state));
            }
            counters.lag_entries.set(sample.lag_entries);
            counters.lag_seconds.set(sample.lag_seconds);
            counters.divergent_records.set(sample.divergent_records);
        }
        self.wal.store_up.set(i64::from(wal.is_some()));
        if let Some(wal) = wal {
            self.wal.pending_writes.set(wal.pending_writes);
            self.wal.failed_replays.set(wal.failed_replays);
            self.wal.oldest_pending.set(wal.oldest_pending_seconds);
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The families of the per-instance series.
struct InstanceFamilies {
    up: Family<Labels<1>, Gauge>,
    states: Family<Labels<2>, Gauge>,
    answered: Family<Labels<2>, Counter>,
    failures: Family<Labels<1>, Counter>,
    failovers: Family<Labels<1>, Counter>,
    lag_entries: Family<Labels<1>, Gauge>,
    lag_seconds: Family<Labels<1>, FloatGauge>,
    divergent_records: Family<Labels<1>, Gauge>,
}

impl InstanceFamilies {
    fn register(registry: &mut Registry) -> Self {
        let families = Self {
            up: Family::default(),
            states: Family::default(),
            answered: Family::default(),
            failures: Family::default(),
            failovers: Family::default(),
            lag_entries: Family::default(),
            lag_seconds: Family::default(),
            divergent_records: Family::default(),
        };
        let f = &families;
        registry.register("instance_up", "Whether requests may go to the instance", f.up.clone());
        registry.register(
            "instance_state",
            "1 for the state the instance is in (healthy, catching_up, checking, seeding, unhealthy, forced_up, forced_down)",
            f.states.clone(),
        );
        registry.register("instance_requests", "Requests an instance answered", f.answered.clone());
        registry.register(
            "instance_failures",
            "Failed upstream calls to an instance",
            f.failures.clone(),
        );
        registry.register(
            "failovers",
            "Requests re-sent from this instance to another",
            f.failovers.clone(),
        );
        registry.register(
            "replication_lag_entries",
            "Log entries the instance has not applied yet",
            f.lag_entries.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Age of the oldest entry the instance has not applied (0 when none)",
            f.lag_seconds.clone(),
        );
        registry.register(
            "divergent_records",
            "Records that differed from the source in the last verification",
            f.divergent_records.clone(),
        );
        families
    }

    fn of(&self, name: &str) -> InstanceCounters {
        let instance = || ("instance", name.to_string());
        let kind = |kind: &str| [instance(), ("kind", kind.to_string())];
        InstanceCounters {
            reads: self.answered.get_or_create_owned(&kind("read")),
            writes: self.answered.get_or_create_owned(&kind("write")),
            failures: self.failures.get_or_create_owned(&[instance()]),
            failovers: self.failovers.get_or_create_owned(&[instance()]),
            up: self.up.get_or_create_owned(&[instance()]),
            states: INSTANCE_STATES
                .iter()
                .map(|s| self.states.get_or_create_owned(&[instance(), ("state", s.to_string())]))
                .collect(),
            lag_entries: self.lag_entries.get_or_create_owned(&[instance()]),
            lag_seconds: self.lag_seconds.get_or_create_owned(&[instance()]),
            divergent_records: self.divergent_records.get_or_create_owned(&[instance()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::instance::{InstanceId, InstanceName, Role};

    fn specs() -> Vec<InstanceSpec> {
        [(Role::Primary, "primary"), (Role::Replica, "replica")]
            .into_iter()
            .enumerate()
            .map(|(i, (role, name))| InstanceSpec {
                id: InstanceId(i),
                name: InstanceName::new(name.to_string()),
                role,
                url: "http://127.0.0.1:9".to_string(),
            })
            .collect()
    }

    /// Parses the text format back: series (name and labels, as written) to value, and the
    /// `# TYPE` of every family.
    fn parse(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
        let (mut series, mut types) = (BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') {
                let (name, value) = line.rsplit_once(' ').expect("series value");
                assert!(
                    series.insert(name.to_string(), value.parse().unwrap()).is_none(),
                    "{line}"
                );
            }
        }
        (series, types)
    }

    fn sample(up: bool, state: &'static str, lag: i64) -> InstanceSample {
        InstanceSample {
            up,
            state,
            lag_entries: lag,
            lag_seconds: lag as f64 / 2.0,
            divergent_records: 0,
        }
    }

    #[test]
    fn the_registry_encodes_every_series_by_its_name() {
        let stats = Stats::new(&specs());
        bump(&stats.reads);
        bump(&stats.instances[1].reads);
        bump(&stats.instances[0].failures);
        bump(&stats.instances[0].failures);
        bump(&stats.instances[0].failovers);
        bump(&stats.denied[2]);
        stats.answered(RequestKind::Write, StatusCode::CREATED, Duration::from_millis(3));
        stats.answered(RequestKind::Write, StatusCode::CREATED, Duration::from_millis(30));
        stats.wal_append.observe(0.000_2);
        let instances = [sample(true, "healthy", 0), sample(false, "unhealthy", 4)];
        let wal = WalSample { pending_writes: 4, failed_replays: 1, oldest_pending_seconds: 2.5 };
        let (series, types) = parse(&stats.encode(&instances, Some(&wal), ("a", true, 1)).unwrap());

        let expect = |name: &str, value: f64| {
            assert_eq!(series.get(name), Some(&value), "{name} in {series:#?}");
        };
        expect("chroma_ha_reads_total", 1.0);
        expect("chroma_ha_writes_total", 0.0);
        expect("chroma_ha_requests_total{kind=\"write\",code=\"201\"}", 2.0);
        expect("chroma_ha_request_seconds_count{kind=\"write\"}", 2.0);
        expect("chroma_ha_request_seconds_bucket{kind=\"write\",le=\"0.00390625\"}", 1.0);
        expect("chroma_ha_request_seconds_bucket{kind=\"write\",le=\"+Inf\"}", 2.0);
        expect("chroma_ha_wal_append_seconds_count", 1.0);
        expect("chroma_ha_instance_up{instance=\"primary\"}", 1.0);
        expect("chroma_ha_instance_up{instance=\"replica\"}", 0.0);
        expect("chroma_ha_instance_state{instance=\"replica\",state=\"unhealthy\"}", 1.0);
        expect("chroma_ha_instance_state{instance=\"replica\",state=\"healthy\"}", 0.0);
        expect("chroma_ha_instance_requests_total{instance=\"replica\",kind=\"read\"}", 1.0);
        expect("chroma_ha_instance_failures_total{instance=\"primary\"}", 2.0);
        expect("chroma_ha_failovers_total{instance=\"primary\"}", 1.0);
        expect("chroma_ha_replication_lag_entries{instance=\"replica\"}", 4.0);
        expect("chroma_ha_replication_lag_seconds{instance=\"replica\"}", 2.0);
        expect("chroma_ha_wal_store_up", 1.0);
        expect("chroma_ha_wal_pending_writes", 4.0);
        expect("chroma_ha_wal_failed_replays", 1.0);
        expect("chroma_ha_wal_oldest_pending_seconds", 2.5);
        for reason in DENIAL_REASONS {
            let value = if reason == DENIAL_REASONS[2] { 1.0 } else { 0.0 };
            expect(&format!("chroma_ha_auth_denied_total{{reason=\"{reason}\"}}"), value);
        }
        let kind = |name: &str| types.get(&format!("chroma_ha_{name}")).map(String::as_str);
        assert_eq!(kind("requests_total"), Some("counter"));
        assert_eq!(kind("request_seconds"), Some("histogram"));
        assert_eq!(kind("wal_append_seconds"), Some("histogram"));
        assert_eq!(kind("instance_state"), Some("gauge"));

        let snapshot = stats.snapshot(&specs());
        assert_eq!((snapshot.failovers, snapshot.instances[0].failures), (1, 2));
        assert_eq!(snapshot.instances[1].name, "replica");
    }

    #[test]
    fn gauges_follow_the_latest_scrape() {
        let stats = Stats::new(&specs());
        let healthy = [sample(true, "healthy", 0), sample(true, "healthy", 0)];
        stats.encode(&healthy, None, ("a", true, 1)).unwrap();
        let later = [sample(false, "forced_down", 0), sample(true, "catching_up", 3)];
        let (series, _) = parse(&stats.encode(&later, None, ("a", true, 1)).unwrap());
        assert_eq!(series["chroma_ha_instance_up{instance=\"primary\"}"], 0.0);
        assert_eq!(
            series["chroma_ha_instance_state{instance=\"primary\",state=\"forced_down\"}"],
            1.0
        );
        assert_eq!(series["chroma_ha_instance_state{instance=\"primary\",state=\"healthy\"}"], 0.0);
        assert_eq!(series["chroma_ha_replication_lag_entries{instance=\"replica\"}"], 3.0);
        assert_eq!(series["chroma_ha_wal_store_up"], 0.0, "the store did not answer this scrape");
    }
}
