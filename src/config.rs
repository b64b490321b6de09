//! Configuration: command-line flags with env-var fallbacks (clap), an optional TOML file, and
//! one `validate` step that turns raw strings into a typed [`Config`].
//!
//! Precedence: flag, then environment variable, then `--config` file, then the default.
//! This module never starts anything and never logs: a bad value becomes a [`ConfigError`] that
//! names the setting, and `main` prints it and exits with status 2.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::http::Uri;
use clap::Parser;

use crate::instance::{InstanceId, InstanceName, InstanceSpec, Role};

/// Loopback by default: exposing the proxy is a deliberate operator choice.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Two seconds: with `fall` 3 a silent death is seen by probes within ~6 s, and passive
/// mark-down catches it on the first failed request anyway.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Fifteen seconds: a large Chroma query can take seconds; a hung instance costs one request this long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Most reads go to replicas so the primary keeps headroom for writes.
pub const DEFAULT_READ_REPLICA_RATIO: f64 = 0.8;
/// Kept from the seed deployment for compatibility; see README for its meaning today.
pub const DEFAULT_CONSISTENCY_WINDOW: Duration = Duration::from_secs(30);
/// `global` is the collection the seed deployment shares between every application.
pub const DEFAULT_PROTECTED_COLLECTIONS: &str = "global";
/// The embedded WAL file, in the working directory, so one binary runs with no server to set up.
pub const DEFAULT_SQLITE_FILE: &str = "chroma-ha-wal.sqlite";
/// A week: long enough to investigate an incident from the log, short enough to bound the file.
pub const DEFAULT_WAL_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// A day, as common HTTP APIs keep idempotency keys: covers any sane client retry loop.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(86_400);
/// Five attempts with doubling back-off span about six seconds: enough to ride out a restart,
/// short enough that a poison entry is reported, not retried forever.
pub const DEFAULT_MAX_REPLAY_RETRIES: i32 = 5;
/// Ten seconds is longer than any normal request and short enough for a rolling restart.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every setting, by its environment name; the TOML file uses the same names in lower case.
const SETTINGS: &[&str] = &[
    "PRIMARY_URL",
    "REPLICA_URL",
    "LISTEN_ADDR",
    "CHECK_INTERVAL",
    "REQUEST_TIMEOUT",
    "READ_REPLICA_RATIO",
    "CONSISTENCY_WINDOW",
    "ADMIN_TOKEN",
    "PROTECTED_COLLECTIONS",
    "SHUTDOWN_GRACE",
    "DATABASE_URL",
    "WAL_RETENTION",
    "IDEMPOTENCY_TTL",
    "MAX_REPLAY_RETRIES",
];

/// Command line of `chroma-ha`; every flag falls back to the environment variable it names.
#[derive(Parser, Debug, Default)]
#[command(name = "chroma-ha", version, about = "High-availability proxy for ChromaDB")]
pub struct Cli {
    /// Primary Chroma base URL, e.g. http://127.0.0.1:8000
    #[arg(long, env = "PRIMARY_URL")]
    pub primary_url: Option<String>,
    /// Replica base URL(s), comma-separated
    #[arg(long, env = "REPLICA_URL")]
    pub replica_url: Option<String>,
    /// Address the proxy listens on [default: 127.0.0.1:8080]
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    /// Seconds between health probes (or 500ms, 2s, 1m) [default: 2]
    #[arg(long, env = "CHECK_INTERVAL")]
    pub check_interval: Option<String>,
    /// Seconds for one upstream request [default: 15]
    #[arg(long, env = "REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Share of reads sent to replicas, 0 to 1 [default: 0.8]
    #[arg(long, env = "READ_REPLICA_RATIO")]
    pub read_replica_ratio: Option<String>,
    /// Seconds; kept for compatibility with the seed deployment [default: 30]
    #[arg(long, env = "CONSISTENCY_WINDOW")]
    pub consistency_window: Option<String>,
    /// Bearer token for /admin/*; unset disables the admin endpoints
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Collection names that cannot be deleted through the proxy [default: global]
    #[arg(long, env = "PROTECTED_COLLECTIONS")]
    pub protected_collections: Option<String>,
    /// Seconds in-flight requests may take to finish after SIGTERM [default: 10]
    #[arg(long, env = "SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// WAL store: postgres://... or an SQLite file path [default: chroma-ha-wal.sqlite]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// How long entries applied everywhere stay in the log [default: 7d]
    #[arg(long, env = "WAL_RETENTION")]
    pub wal_retention: Option<String>,
    /// How long an Idempotency-Key is remembered [default: 24h]
    #[arg(long, env = "IDEMPOTENCY_TTL")]
    pub idempotency_ttl: Option<String>,
    /// Attempts before a replayed entry is marked failed for an instance [default: 5]
    #[arg(long, env = "MAX_REPLAY_RETRIES")]
    pub max_replay_retries: Option<String>,
    /// TOML file with the same settings in lower case (primary_url = "...")
    #[arg(long = "config", env = "CHROMA_HA_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// What to do; without a command, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `chroma-ha` subcommands.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Apply the WAL migrations to DATABASE_URL and exit.
    Migrate,
}

/// One bad setting: its name and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Environment name of the setting (or the config file's path).
    pub setting: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

fn error(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), message: message.into() }
}

/// Raw settings by environment name, before validation; tests build one from a map.
#[derive(Debug, Default, Clone)]
pub struct RawSettings(BTreeMap<&'static str, String>);

impl RawSettings {
    /// Raw settings from explicit `(name, value)` pairs; unknown names are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut raw = Self::default();
        for (name, value) in pairs {
            if let Some(known) = SETTINGS.iter().find(|s| **s == name) {
                raw.0.insert(known, value.to_string());
            }
        }
        raw
    }

    /// Flags and environment, then the `--config` file for what they leave unset.
    fn load(cli: &Cli) -> Result<Self, Vec<ConfigError>> {
        let mut raw = Self::from_cli(cli);
        if let Some(path) = &cli.config_file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| vec![error(&origin, format!("cannot read config file: {e}"))])?;
            raw.fill_from_toml(&text, &origin).map_err(|e| vec![e])?;
        }
        Ok(raw)
    }

    fn from_cli(cli: &Cli) -> Self {
        let fields = [
            ("PRIMARY_URL", &cli.primary_url),
            ("REPLICA_URL", &cli.replica_url),
            ("LISTEN_ADDR", &cli.listen_addr),
            ("CHECK_INTERVAL", &cli.check_interval),
            ("REQUEST_TIMEOUT", &cli.request_timeout),
            ("READ_REPLICA_RATIO", &cli.read_replica_ratio),
            ("CONSISTENCY_WINDOW", &cli.consistency_window),
            ("ADMIN_TOKEN", &cli.admin_token),
            ("PROTECTED_COLLECTIONS", &cli.protected_collections),
            ("SHUTDOWN_GRACE", &cli.shutdown_grace),
            ("DATABASE_URL", &cli.database_url),
            ("WAL_RETENTION", &cli.wal_retention),
            ("IDEMPOTENCY_TTL", &cli.idempotency_ttl),
            ("MAX_REPLAY_RETRIES", &cli.max_replay_retries),
        ];
        Self::from_pairs(fields.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))))
    }

    /// Fills settings not yet given from a TOML document (keys are lower-case setting names).
    pub fn fill_from_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            error(origin, format!("not valid TOML: {}", e.message()))
        })?;
        for (key, value) in table {
            let Some(name) = SETTINGS.iter().find(|s| s.eq_ignore_ascii_case(&key)) else {
                return Err(error(origin, format!("unknown setting `{key}`")));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Array(items) => {
                    let strings: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                    strings.ok_or_else(|| error(name, "an array here must hold strings"))?.join(",")
                }
                other => {
                    return Err(error(name, format!("expected a string or number, got {other}")));
                }
            };
            self.0.entry(name).or_insert(text);
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

/// Validated configuration of one proxy process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Primary Chroma base URL, without a trailing slash.
    pub primary_url: String,
    /// Replica base URLs, in the order given.
    pub replica_urls: Vec<String>,
    /// Where the proxy listens.
    pub listen_addr: SocketAddr,
    /// Where the write-ahead log lives.
    pub database: DatabaseUrl,
    /// Time between health probes of a healthy instance.
    pub check_interval: Duration,
    /// Longest wait for one upstream answer before failing over.
    pub request_timeout: Duration,
    /// Share of reads sent to replicas.
    pub read_replica_ratio: f64,
    /// Accepted for compatibility with the seed deployment.
    pub consistency_window: Duration,
    /// Bearer token for the admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// Collection names that cannot be deleted through the proxy.
    pub protected_collections: Vec<String>,
    /// How long entries applied everywhere stay in the log.
    pub wal_retention: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// Attempts before a replayed entry is marked failed for an instance.
    pub max_replay_retries: i32,
    /// Longest drain of in-flight requests at shutdown.
    pub shutdown_grace: Duration,
}

/// The WAL store named by DATABASE_URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL connection URL (`postgres://...` or `postgresql://...`).
    Postgres(String),
    /// An SQLite file path (optionally `sqlite://path`).
    Sqlite(PathBuf),
}

impl Default for DatabaseUrl {
    fn default() -> Self {
        Self::Sqlite(PathBuf::from(DEFAULT_SQLITE_FILE))
    }
}

impl fmt::Display for DatabaseUrl {
    /// The store with any password replaced by `****`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                match rest.split_once('@') {
                    Some((user, host)) if user.contains(':') => {
                        let name = user.split(':').next().unwrap_or("");
                        write!(f, "{scheme}://{name}:****@{host}")
                    }
                    _ => f.write_str(url),
                }
            }
        }
    }
}

fn parse_database(value: Option<&str>) -> Result<DatabaseUrl, ConfigError> {
    let Some(value) = value.map(str::trim) else {
        return Ok(DatabaseUrl::default());
    };
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(value.to_string()));
    }
    let path = value.strip_prefix("sqlite://").unwrap_or(value);
    if path.contains("://") {
        return Err(error("DATABASE_URL", "expected postgres://... or an SQLite file path"));
    }
    Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
}

impl Config {
    /// Reads flags and environment (through clap), then the `--config` file, and validates.
    pub fn load(cli: &Cli) -> Result<Self, Vec<ConfigError>> {
        Self::validate(&RawSettings::load(cli)?)
    }

    /// Only DATABASE_URL, for `chroma-ha migrate`, which needs nothing else.
    pub fn load_database(cli: &Cli) -> Result<DatabaseUrl, Vec<ConfigError>> {
        parse_database(RawSettings::load(cli)?.get("DATABASE_URL")).map_err(|e| vec![e])
    }

    /// Turns raw settings into a [`Config`], reporting every bad value by name.
    pub fn validate(raw: &RawSettings) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let primary_url = match raw.get("PRIMARY_URL") {
            None => Err(error("PRIMARY_URL", "required: the primary Chroma base URL")),
            Some(url) => parse_url("PRIMARY_URL", url),
        };
        let replica_urls = raw
            .get("REPLICA_URL")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|url| parse_url("REPLICA_URL", url))
            .collect::<Result<Vec<_>, _>>();
        let listen_addr = raw
            .get("LISTEN_ADDR")
            .unwrap_or(DEFAULT_LISTEN_ADDR)
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| error("LISTEN_ADDR", "expected host:port, e.g. 127.0.0.1:8080"));
        let read_replica_ratio = match raw.get("READ_REPLICA_RATIO") {
            None => Ok(DEFAULT_READ_REPLICA_RATIO),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(error("READ_REPLICA_RATIO", format!("`{v}` is not a number from 0 to 1"))),
            },
        };
        let max_replay_retries = match raw.get("MAX_REPLAY_RETRIES") {
            None => Ok(DEFAULT_MAX_REPLAY_RETRIES),
            Some(v) => {
                v.trim().parse::<i32>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                    error(
                        "MAX_REPLAY_RETRIES",
                        format!("`{v}` is not a whole number from 1 to 1000"),
                    )
                })
            }
        };
        let config = Self {
            primary_url: take(&mut errors, primary_url).unwrap_or_default(),
            replica_urls: take(&mut errors, replica_urls).unwrap_or_default(),
            listen_addr: take(&mut errors, listen_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            database: take(&mut errors, parse_database(raw.get("DATABASE_URL")))
                .unwrap_or_default(),
            check_interval: take_duration(
                &mut errors,
                raw,
                "CHECK_INTERVAL",
                DEFAULT_CHECK_INTERVAL,
            ),
            request_timeout: take_duration(
                &mut errors,
                raw,
                "REQUEST_TIMEOUT",
                DEFAULT_REQUEST_TIMEOUT,
            ),
            read_replica_ratio: take(&mut errors, read_replica_ratio).unwrap_or_default(),
            consistency_window: take_duration(
                &mut errors,
                raw,
                "CONSISTENCY_WINDOW",
                DEFAULT_CONSISTENCY_WINDOW,
            ),
            admin_token: raw.get("ADMIN_TOKEN").map(str::to_string),
            protected_collections: raw
                .get("PROTECTED_COLLECTIONS")
                .unwrap_or(DEFAULT_PROTECTED_COLLECTIONS)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            wal_retention: take_duration(&mut errors, raw, "WAL_RETENTION", DEFAULT_WAL_RETENTION),
            max_replay_retries: take(&mut errors, max_replay_retries)
                .unwrap_or(DEFAULT_MAX_REPLAY_RETRIES),
            idempotency_ttl: take_duration(
                &mut errors,
                raw,
                "IDEMPOTENCY_TTL",
                DEFAULT_IDEMPOTENCY_TTL,
            ),
            shutdown_grace: take_duration(
                &mut errors,
                raw,
                "SHUTDOWN_GRACE",
                DEFAULT_SHUTDOWN_GRACE,
            ),
        };
        for (i, url) in config.replica_urls.iter().enumerate() {
            if *url == config.primary_url || config.replica_urls[..i].contains(url) {
                errors.push(error("REPLICA_URL", format!("{url} is given twice")));
            }
        }
        if config.wal_retention < config.idempotency_ttl {
            errors.push(error(
                "WAL_RETENTION",
                "must be at least IDEMPOTENCY_TTL: a retried write must still find its entry",
            ));
        }
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// The instances this proxy fronts: `primary` first, then `replica`, `replica-2`, ...
    pub fn instances(&self) -> Vec<InstanceSpec> {
        let primary = (Role::Primary, "primary".to_string(), &self.primary_url);
        let replicas = self.replica_urls.iter().enumerate().map(|(i, url)| {
            let name = if i == 0 { "replica".to_string() } else { format!("replica-{}", i + 1) };
            (Role::Replica, name, url)
        });
        std::iter::once(primary)
            .chain(replicas)
            .enumerate()
            .map(|(i, (role, name, url))| InstanceSpec {
                id: InstanceId(i),
                name: InstanceName::new(name),
                role,
                url: url.clone(),
            })
            .collect()
    }
}

impl fmt::Display for Config {
    /// One line for the startup log, with the admin token redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "primary={} replicas=[{}] listen={} wal={} check_interval={:?} request_timeout={:?} \
             read_replica_ratio={} consistency_window={:?} admin_token={} \
             protected_collections=[{}] wal_retention={:?} idempotency_ttl={:?} shutdown_grace={:?}",
            self.primary_url,
            self.replica_urls.join(","),
            self.listen_addr,
            self.database,
            self.check_interval,
            self.request_timeout,
            self.read_replica_ratio,
            self.consistency_window,
            if self.admin_token.is_some() { "<redacted>" } else { "<unset: admin disabled>" },
            self.protected_collections.join(","),
            self.wal_retention,
            self.idempotency_ttl,
            self.shutdown_grace,
        )
    }
}

/// Keeps a valid value, or records why it is not.
fn take<T>(errors: &mut Vec<ConfigError>, value: Result<T, ConfigError>) -> Option<T> {
    value.map_err(|e| errors.push(e)).ok()
}

/// A Chroma base URL: `http://host[:port]`, no credentials, path, query or fragment.
fn parse_url(setting: &str, text: &str) -> Result<String, ConfigError> {
    let text = text.trim().trim_end_matches('/');
    let bad = |why: &str| error(setting, format!("`{text}` is not a usable Chroma URL: {why}"));
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// is supported")),
        None => return Err(bad("expected http://host:port")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials do not belong in the URL"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a base URL has no path or query"));
    }
    Ok(format!("http://{authority}"))
}

fn take_duration(
    errors: &mut Vec<ConfigError>,
    raw: &RawSettings,
    name: &str,
    default: Duration,
) -> Duration {
    take(errors, duration(raw, name, default)).unwrap_or(default)
}

fn duration(raw: &RawSettings, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match raw.get(name) {
        None => Ok(default),
        Some(text) => parse_duration(text).filter(|d| !d.is_zero()).ok_or_else(|| {
            error(
                name,
                format!("`{text}` is not a positive duration (seconds, or 500ms, 2s, 1m, 1h, 7d)"),
            )
        }),
    }
}

/// Seconds as a plain number, or a number with a unit: ms, s, m, h, d.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(pairs: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        Config::validate(&RawSettings::from_pairs(pairs.iter().copied()))
    }

    fn settings_named(errors: Vec<ConfigError>) -> Vec<String> {
        errors.into_iter().map(|e| e.setting).collect()
    }

    #[test]
    fn defaults_fill_everything_but_primary() {
        let config = validate(&[("PRIMARY_URL", "http://127.0.0.1:8000/")]).unwrap();
        assert_eq!(config.primary_url, "http://127.0.0.1:8000");
        assert!(config.replica_urls.is_empty());
        assert_eq!(config.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
        assert_eq!(config.check_interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(config.read_replica_ratio, DEFAULT_READ_REPLICA_RATIO);
        assert_eq!(config.protected_collections, vec!["global".to_string()]);
        assert_eq!(config.admin_token, None);
    }

    #[test]
    fn missing_primary_is_named() {
        assert_eq!(settings_named(validate(&[]).unwrap_err()), vec!["PRIMARY_URL"]);
    }

    #[test]
    fn every_bad_value_is_reported_by_name() {
        let errors = validate(&[
            ("PRIMARY_URL", "not a url"),
            ("REPLICA_URL", "http://127.0.0.1:1,ftp://x"),
            ("READ_REPLICA_RATIO", "1.7"),
            ("CHECK_INTERVAL", "0"),
            ("REQUEST_TIMEOUT", "fast"),
            ("LISTEN_ADDR", "localhost"),
        ])
        .unwrap_err();
        assert_eq!(
            settings_named(errors),
            vec![
                "PRIMARY_URL",
                "REPLICA_URL",
                "LISTEN_ADDR",
                "CHECK_INTERVAL",
                "REQUEST_TIMEOUT",
                "READ_REPLICA_RATIO"
            ]
        );
    }

    #[test]
    fn urls_with_secrets_paths_or_other_schemes_are_refused() {
        for url in ["http://u:p@h:1", "http://h:1/api", "https://h:1", "h:1", "http://h:1?x=1"] {
            let errors = validate(&[("PRIMARY_URL", url)]).unwrap_err();
            assert_eq!(settings_named(errors), vec!["PRIMARY_URL"], "{url}");
        }
    }

    #[test]
    fn a_url_given_twice_is_refused() {
        let errors = validate(&[
            ("PRIMARY_URL", "http://127.0.0.1:1"),
            ("REPLICA_URL", "http://127.0.0.1:2, http://127.0.0.1:1"),
        ])
        .unwrap_err();
        assert_eq!(settings_named(errors), vec!["REPLICA_URL"]);
    }

    #[test]
    fn instances_are_named_in_order() {
        let config = validate(&[
            ("PRIMARY_URL", "http://127.0.0.1:1"),
            ("REPLICA_URL", "http://127.0.0.1:2,http://127.0.0.1:3"),
        ])
        .unwrap();
        let names: Vec<String> = config.instances().iter().map(|i| i.name.to_string()).collect();
        assert_eq!(names, ["primary", "replica", "replica-2"]);
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("2 weeks"), None);
    }

    #[test]
    fn toml_fills_gaps_but_flags_win() {
        let mut raw = RawSettings::from_pairs([("PRIMARY_URL", "http://127.0.0.1:1")]);
        raw.fill_from_toml(
            "primary_url = \"http://127.0.0.1:9\"\nreplica_url = [\"http://127.0.0.1:2\"]\n\
             read_replica_ratio = 0.5\ncheck_interval = 1\n",
            "test.toml",
        )
        .unwrap();
        let config = Config::validate(&raw).unwrap();
        assert_eq!(config.primary_url, "http://127.0.0.1:1");
        assert_eq!(config.replica_urls, vec!["http://127.0.0.1:2".to_string()]);
        assert_eq!(config.read_replica_ratio, 0.5);
        assert_eq!(config.check_interval, Duration::from_secs(1));
    }

    #[test]
    fn toml_unknown_keys_are_errors() {
        let err =
            RawSettings::default().fill_from_toml("primry_url = \"x\"", "f.toml").unwrap_err();
        assert_eq!(err.setting, "f.toml");
        assert!(err.message.contains("primry_url"));
    }

    #[test]
    fn display_redacts_the_admin_token() {
        let config =
            validate(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("ADMIN_TOKEN", "s3cret")]).unwrap();
        let line = config.to_string();
        assert!(!line.contains("s3cret"));
        assert!(line.contains("<redacted>"));
    }

    #[test]
    fn database_url_picks_the_backend_and_hides_the_password() {
        let base = ("PRIMARY_URL", "http://127.0.0.1:1");
        let config = validate(&[base]).unwrap();
        assert_eq!(config.database, DatabaseUrl::Sqlite(DEFAULT_SQLITE_FILE.into()));
        let config = validate(&[base, ("DATABASE_URL", "sqlite:///var/lib/wal.db")]).unwrap();
        assert_eq!(config.database, DatabaseUrl::Sqlite("/var/lib/wal.db".into()));
        let url = "postgres://chroma:hunter2@db:5432/wal";
        let config = validate(&[base, ("DATABASE_URL", url)]).unwrap();
        assert_eq!(config.database, DatabaseUrl::Postgres(url.into()));
        assert!(!config.to_string().contains("hunter2"));
        assert!(config.to_string().contains("postgres://chroma:****@db:5432/wal"));
        let errors = validate(&[base, ("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(settings_named(errors), vec!["DATABASE_URL"]);
    }

    #[test]
    fn retention_shorter_than_the_idempotency_ttl_is_refused() {
        let errors = validate(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("WAL_RETENTION", "1h")])
            .unwrap_err();
        assert_eq!(settings_named(errors), vec!["WAL_RETENTION"]);
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let mut raw = RawSettings::default();
        raw.fill_from_toml(include_str!("../deploy/chroma-ha.toml"), "deploy/chroma-ha.toml")
            .unwrap();
        let config = Config::validate(&raw).unwrap();
        assert_eq!(config.instances().len(), 2);
    }
}
