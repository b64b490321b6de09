//! Request counters shared by every HTTP worker, read by `/status` and `/metrics`.
//!
//! Lock-free atomics only: this module never blocks the request path and never allocates on it.
//! Every series is a `prometheus-client` metric registered once, at start: the per-instance ones
//! are taken out of their families then, so a [`bump`] never takes a family's lock or adds a
//! series, and `/metrics` shows every series from the first scrape on, at 0.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::auth::DENIAL_REASONS;
use crate::instance::InstanceSpec;

/// The `Content-Type` of [`Stats::encode`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Proxy-wide counters plus one [`InstanceCounters`] per instance, all in one registry.
#[derive(Debug)]
pub struct Stats {
    /// Proxied requests received.
    pub requests: Counter,
    /// Requests classified as reads.
    pub reads: Counter,
    /// Requests classified as writes.
    pub writes: Counter,
    /// Times a request was re-sent to another instance.
    pub failovers: Counter,
    /// Requests refused by the proxy itself (bad input, unknown route).
    pub refused: Counter,
    /// Requests answered 503 because no instance was usable.
    pub unavailable: Counter,
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceCounters>,
    /// Requests refused 401 or 403, per reason, in the order of [`DENIAL_REASONS`].
    pub denied: Vec<Counter>,
    /// Every series above, under the `chroma_ha_` prefix.
    registry: Registry,
}

/// Counters of one instance: its series in the families of [`Stats`]'s registry.
#[derive(Debug)]
pub struct InstanceCounters {
    /// Reads this instance answered.
    pub reads: Counter,
    /// Writes this instance answered.
    pub writes: Counter,
    /// Upstream calls to it that failed (connection, timeout, 5xx).
    pub failures: Counter,
    /// Whether requests may go to it: set from its health at each scrape, not on requests.
    up: Gauge,
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
}

type Labels<const N: usize> = [(&'static str, String); N];

impl Stats {
    /// Zeroed counters for these instances, registered under their names.
    pub fn new(specs: &[InstanceSpec]) -> Self {
        let mut registry = Registry::with_prefix("chroma_ha");
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let requests = counter("requests", "Proxied requests received");
        let reads = counter("reads", "Requests classified as reads");
        let writes = counter("writes", "Requests classified as writes");
        let failovers = counter("failovers", "Requests re-sent to another instance");
        let refused = counter("refused", "Requests refused by the proxy");
        let unavailable =
            counter("unavailable", "Requests answered 503 for want of a usable instance");
        let up = Family::<Labels<1>, Gauge>::default();
        let answered = Family::<Labels<2>, Counter>::default();
        let failures = Family::<Labels<1>, Counter>::default();
        registry.register("instance_up", "Whether requests may go to the instance", up.clone());
        registry.register("instance_requests", "Requests an instance answered", answered.clone());
        registry.register(
            "instance_failures",
            "Failed upstream calls to an instance",
            failures.clone(),
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
        let instances = specs
            .iter()
            .map(|spec| {
                let instance = || ("instance", spec.name.to_string());
                let kind = |kind: &str| [instance(), ("kind", kind.to_string())];
                InstanceCounters {
                    reads: answered.get_or_create_owned(&kind("read")),
                    writes: answered.get_or_create_owned(&kind("write")),
                    failures: failures.get_or_create_owned(&[instance()]),
                    up: up.get_or_create_owned(&[instance()]),
                }
            })
            .collect();
        Self {
            requests,
            reads,
            writes,
            failovers,
            refused,
            unavailable,
            instances,
            denied,
            registry,
        }
    }

    /// Reads every counter once.
    pub fn snapshot(&self, specs: &[InstanceSpec]) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.get(),
            reads: self.reads.get(),
            writes: self.writes.get(),
            failovers: self.failovers.get(),
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
                })
                .collect(),
        }
    }

    /// Every series in the Prometheus text format ([`CONTENT_TYPE`]), `chroma_ha_instance_up`
    /// first set from `up` (one per instance, in configuration order).
    pub fn encode(&self, up: impl IntoIterator<Item = bool>) -> Result<String, std::fmt::Error> {
        for (instance, up) in self.instances.iter().zip(up) {
            instance.up.set(i64::from(up));
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
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

    #[test]
    fn the_registry_encodes_every_series_by_its_name() {
        let stats = Stats::new(&specs());
        bump(&stats.requests);
        bump(&stats.reads);
        bump(&stats.instances[1].reads);
        bump(&stats.instances[0].failures);
        bump(&stats.instances[0].failures);
        bump(&stats.denied[2]);
        let (series, types) = parse(&stats.encode([true, false]).unwrap());

        let denied = DENIAL_REASONS.iter().map(|reason| {
            let value = if *reason == DENIAL_REASONS[2] { 1.0 } else { 0.0 };
            (format!("chroma_ha_auth_denied_total{{reason=\"{reason}\"}}"), value)
        });
        let expected: BTreeMap<String, f64> = [
            ("chroma_ha_requests_total", 1.0),
            ("chroma_ha_reads_total", 1.0),
            ("chroma_ha_writes_total", 0.0),
            ("chroma_ha_failovers_total", 0.0),
            ("chroma_ha_refused_total", 0.0),
            ("chroma_ha_unavailable_total", 0.0),
            ("chroma_ha_instance_up{instance=\"primary\"}", 1.0),
            ("chroma_ha_instance_up{instance=\"replica\"}", 0.0),
            ("chroma_ha_instance_requests_total{instance=\"primary\",kind=\"read\"}", 0.0),
            ("chroma_ha_instance_requests_total{instance=\"primary\",kind=\"write\"}", 0.0),
            ("chroma_ha_instance_requests_total{instance=\"replica\",kind=\"read\"}", 1.0),
            ("chroma_ha_instance_requests_total{instance=\"replica\",kind=\"write\"}", 0.0),
            ("chroma_ha_instance_failures_total{instance=\"primary\"}", 2.0),
            ("chroma_ha_instance_failures_total{instance=\"replica\"}", 0.0),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .chain(denied)
        .collect();
        assert_eq!(series, expected);

        let counters = ["requests", "reads", "writes", "failovers", "refused", "unavailable"]
            .iter()
            .chain(&["instance_requests", "instance_failures", "auth_denied"])
            .map(|name| (format!("chroma_ha_{name}_total"), "counter".to_string()));
        let gauge = ("chroma_ha_instance_up".to_string(), "gauge".to_string());
        assert_eq!(types, counters.chain([gauge]).collect());

        let snapshot = stats.snapshot(&specs());
        assert_eq!((snapshot.requests, snapshot.instances[0].failures), (1, 2));
        assert_eq!(snapshot.instances[1].name, "replica");
    }

    #[test]
    fn instance_up_follows_the_latest_scrape() {
        let stats = Stats::new(&specs());
        stats.encode([true, true]).unwrap();
        let (series, _) = parse(&stats.encode([false, true]).unwrap());
        assert_eq!(series["chroma_ha_instance_up{instance=\"primary\"}"], 0.0);
        assert_eq!(series["chroma_ha_instance_up{instance=\"replica\"}"], 1.0);
    }
}
