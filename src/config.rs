//! Configuration: every setting of the proxy, declared once as a field of [`Config`], read from
//! command-line flags, environment variables and an optional TOML file, and validated into typed
//! values.
//!
//! Precedence: flag, then environment variable, then the `--config` file, then the default.
//! A setting is one field of [`Config`]. Its clap attributes give the flag, the environment
//! variable (the field name in upper case, which is also how errors name the setting), the
//! default and the parser; its doc comment says what it does and why the default is what it is;
//! its serde attributes say how the startup log shows it (secrets redacted). The TOML file uses
//! the field names as keys.
//!
//! How a value travels: [`Cli::parse`] has clap read flags and environment as text, the
//! `--config` file fills in what they leave unset ([`RawSettings`]), and [`Config::validate`]
//! checks each value alone with its field's parser, so that every bad value is reported and not
//! only the first, then has clap build the typed struct from the good ones.
//!
//! This module is for turning configuration text into a [`Config`]. It never starts anything and
//! never logs: a bad value becomes a [`ConfigError`] naming the setting, and `main` prints them
//! and exits with status 2.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::ValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, FromArgMatches};
use serde::Serialize;

use crate::audit::{RepairArgs, VerifyArgs};
use crate::auth::Tokens;
use crate::instance::{InstanceId, InstanceName, InstanceSpec, Role};
use crate::remote::{CheckArgs, StatusArgs};

/// Validated configuration of one proxy process: every setting, each declared once here.
///
/// The environment variable of a field is its name in upper case, its flag the name in kebab
/// case, its TOML key the name itself. Parsers are in [`parse`]; [`Config::validate`] also checks
/// what involves two settings (a URL given twice, WAL retention against the idempotency TTL).
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
pub struct Config {
    /// Primary Chroma base URL, e.g. http://127.0.0.1:8000 (or https://, see UPSTREAM_CA_FILE).
    ///
    /// No default: there is nothing sensible to front without it.
    #[arg(long, env, value_parser = parse::chroma_url)]
    pub primary_url: String,

    /// Replica base URL(s), comma-separated (an array in the TOML file).
    ///
    /// None by default: a primary alone works, it then serves every read.
    #[arg(long, env, value_parser = parse::chroma_url, value_delimiter = ',')]
    pub replica_url: Vec<String>,

    /// Address the proxy listens on.
    ///
    /// Loopback by default: exposing the proxy is a deliberate operator choice.
    #[arg(long, env, default_value = "127.0.0.1:8080", value_parser = parse::socket_addr)]
    pub listen_addr: SocketAddr,

    /// This proxy's name among the proxies sharing the WAL, in `/status`, the log and the lease.
    /// It must be unique: a proxy that starts under the lease holder's id takes the lease at
    /// once, as a restart of that holder.
    ///
    /// Unset by default: the host name and the listening port, unique on one host.
    #[arg(long, env, value_parser = parse::proxy_id)]
    pub proxy_id: Option<String>,

    /// How the other proxies sharing the WAL reach this one (its base URL): followers forward
    /// requests there while it leads.
    ///
    /// Unset by default: http(s)://LISTEN_ADDR with the bound port; required when LISTEN_ADDR
    /// is a wildcard address (0.0.0.0, ::), which no other proxy can dial.
    #[arg(long, env, value_parser = parse::proxy_url)]
    pub advertise_url: Option<String>,

    /// How long the leader's lease lasts unrenewed (renewed every third of it): a leader that
    /// dies is replaced after about this long plus a tenth.
    ///
    /// 5s by default: a takeover within about 6 s, and room for three renewals to fail on a
    /// slow store before the leader lapses for nothing.
    #[arg(long, env, default_value = "5s", value_parser = parse::lease_ttl)]
    #[serde(serialize_with = "show::duration")]
    pub lease_ttl: Duration,

    /// PEM certificate chain (the proxy's certificate first) to serve HTTPS with; needs
    /// TLS_KEY_FILE.
    ///
    /// Unset by default: plain HTTP, for a loopback address or behind a load balancer that
    /// terminates TLS.
    #[arg(long, env)]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of TLS_CERT_FILE; needs TLS_CERT_FILE.
    ///
    /// Unset by default, as TLS_CERT_FILE. Only its path is ever logged.
    #[arg(long, env)]
    pub tls_key_file: Option<PathBuf>,

    /// PEM bundle of the CAs that `https://` instances are verified against, instead of the
    /// system's roots.
    ///
    /// Unset by default: the operating system's CA store, which the operator already keeps.
    #[arg(long, env)]
    pub upstream_ca_file: Option<PathBuf>,

    /// Time between health probes of a healthy instance (seconds, or 500ms, 2s, 1m).
    ///
    /// 2s by default: with `fall` 3 a silent death is seen by probes within ~6 s, and passive
    /// mark-down catches it on the first failed request anyway.
    #[arg(long, env, default_value = "2s", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub check_interval: Duration,

    /// Longest wait for one upstream answer to a read before trying the next instance (a
    /// timed-out instance is probed at once, and marked down only if the probe fails). For a
    /// streamed answer (STREAM_THRESHOLD): the longest wait for its head, then for each next
    /// chunk, never for the whole transfer.
    ///
    /// 15s by default: a large Chroma query can take seconds; a hung instance costs one request
    /// this long.
    #[arg(long, env, default_value = "15s", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub request_timeout: Duration,

    /// Longest wait for one instance's answer to a write (or a replayed batch).
    ///
    /// 60s by default: indexing a large batch can take Chroma tens of seconds, and a slow
    /// write is not a dead instance (a hung one is found by its probes within seconds). A write
    /// that times out is not re-sent elsewhere: its outcome is unknown, and replay applies it
    /// everywhere in log order.
    #[arg(long, env, default_value = "60s", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub write_timeout: Duration,

    /// Record answers (get, query, search) that Chroma declares larger than this are streamed to
    /// the client as they arrive instead of buffered whole: bytes, or 512KiB, 1MiB, up to 256MiB.
    ///
    /// 1MiB by default: the proxy's memory does not grow with the size of an answer, and the
    /// answers below it, nearly all, are still failed over when their instance dies mid-answer
    /// (a streamed one that breaks off reaches its client cut off, never retried).
    #[arg(long, env, default_value = "1MiB", value_parser = parse::stream_threshold)]
    pub stream_threshold: u64,

    /// Share of reads sent to replicas first, from 0 to 1.
    ///
    /// 0.8 by default: most reads go to replicas so the primary keeps headroom for writes.
    #[arg(long, env, default_value = "0.8", value_parser = parse::ratio)]
    pub read_replica_ratio: f64,

    /// Accepted for compatibility with the seed deployment and ignored: reads are routed by what
    /// each instance has applied, with no time window to tune.
    ///
    /// 30s by default: the seed deployment's value.
    #[arg(long, env, default_value = "30s", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub consistency_window: Duration,

    /// Bearer token for /admin/*; unset disables the admin endpoints (403).
    ///
    /// Unset by default: the admin endpoints exist only once an operator chose a token.
    #[arg(long, env, hide_env_values = true)]
    #[serde(serialize_with = "show::secret")]
    pub admin_token: Option<String>,

    /// Collection names that cannot be deleted through the proxy, comma-separated (an array in
    /// the TOML file).
    ///
    /// `global` by default: the collection the seed deployment shares between every application.
    #[arg(long, env, default_value = "global", value_delimiter = ',')]
    pub protected_collections: Vec<String>,

    /// How long in-flight requests may take to finish after SIGTERM.
    ///
    /// 10s by default: longer than any normal request, short enough for a rolling restart.
    #[arg(long, env, default_value = "10s", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub shutdown_grace: Duration,

    /// WAL store: postgres://user:pass@host/db, or an SQLite file path.
    ///
    /// An SQLite file in the working directory by default, so one binary runs with no server to
    /// set up.
    #[arg(long, env, default_value = "chroma-ha-wal.sqlite", hide_env_values = true)]
    // Logged through its Display, which hides the password.
    #[serde(serialize_with = "show::display")]
    pub database_url: DatabaseUrl,

    /// How long entries applied everywhere stay in the log; at least IDEMPOTENCY_TTL.
    ///
    /// 7d by default: long enough to investigate an incident from the log, short enough to bound
    /// the file.
    #[arg(long, env, default_value = "7d", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub wal_retention: Duration,

    /// How long an Idempotency-Key is remembered.
    ///
    /// 24h by default, as common HTTP APIs keep idempotency keys: covers any sane client retry
    /// loop.
    #[arg(long, env, default_value = "24h", value_parser = parse::duration)]
    #[serde(serialize_with = "show::duration")]
    pub idempotency_ttl: Duration,

    /// Attempts before a replayed entry is marked failed for an instance, from 1 to 1000.
    ///
    /// 5 by default: with doubling back-off they span about six seconds, enough to ride out a
    /// restart, short enough that a poison entry is reported, not retried forever.
    #[arg(long, env, default_value = "5", value_parser = parse::replay_retries)]
    pub max_replay_retries: i32,

    /// Records a second that verification and repair read from one instance, from 1 to
    /// 1,000,000 (a collection of N records costs 2N: its ids, then its records).
    ///
    /// 5000 by default: a 100,000-record collection is checked in under a minute, while an
    /// instance serving its clients gives the check a small share of its reads.
    #[arg(long, env, default_value = "5000", value_parser = parse::verify_rate)]
    pub verify_rate: u32,

    /// Whether the leader seeds an instance that comes up empty (no collection in the databases
    /// the proxy knows) while the source holds collections: it copies the source's tenants,
    /// databases, collections and records to it, and the instance serves nothing until the
    /// copy and the writes logged since are applied (DESIGN 13).
    ///
    /// true by default: a new replica, or one that lost its disk, is brought in by itself
    /// instead of serving empty answers.
    #[arg(long, env, default_value = "true", value_parser = parse::switch, action = clap::ArgAction::Set)]
    pub seed_empty_instances: bool,

    /// Records a second that seeding reads from its source; 0 reads as fast as the instance
    /// being seeded takes them.
    ///
    /// 0 by default: the copy is bounded by the target's writes, which are slower than the
    /// source's reads; set it to spare a busy source.
    #[arg(long, env, default_value = "0", value_parser = parse::seed_rate)]
    pub seed_rate: u32,

    /// Time between verifications started by themselves (on the leader); 0 turns them off.
    ///
    /// 24h by default: drift from writes around the proxy or a restored backup is found within
    /// a day, at the cost of reading every record once a day.
    #[arg(long, env, default_value = "24h", value_parser = parse::duration_or_zero)]
    #[serde(serialize_with = "show::duration")]
    pub verify_interval: Duration,

    /// File of `[[tokens]]` entries (name, sha256 or token, role, tenant, databases), besides
    /// those of the `--config` file; re-read on SIGHUP.
    ///
    /// Unset by default: with no tokens anywhere the proxy is open, as Chroma itself is.
    #[arg(long, env)]
    pub auth_tokens_file: Option<PathBuf>,

    /// The `--config` file, if any: its `[[tokens]]` are read (and re-read on SIGHUP) with
    /// AUTH_TOKENS_FILE's. Not a setting: `main` sets it from the command line.
    #[arg(skip)]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Log filter (env_logger syntax), e.g. `info` or `info,chroma_ha::actors=debug`.
    ///
    /// `info` by default: state changes (startup, instances going up or down, replay, retention)
    /// are logged at info, and nothing is logged per request.
    #[arg(long, env, default_value = "info")]
    pub rust_log: String,
}

/// Command line of `chroma-ha`: every setting of [`Config`] as a flag that falls back to its
/// environment variable, `--config FILE`, and the subcommand.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Cli {
    /// TOML file with the same settings in lower case (primary_url = "...")
    #[arg(long = "config", env = "CHROMA_HA_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// What to do; without a command, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings given as flags or environment variables, as text.
    #[arg(skip)]
    settings: RawSettings,
}

/// `chroma-ha` subcommands.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Apply the WAL migrations to DATABASE_URL and exit.
    Migrate,
    /// Check a running proxy as a monitoring plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(CheckArgs),
    /// Print a running proxy's state for a person (--watch: refresh every 2 s).
    Status(StatusArgs),
    /// Check through a running proxy that every instance holds the source's data: exit 0
    /// identical, 1 differences found, 2 the check could not run.
    Verify(VerifyArgs),
    /// Make one instance equal to the source through a running proxy: exit 0 repaired, 1
    /// differences remain, 2 the repair could not run.
    Repair(RepairArgs),
}

impl Cli {
    /// The process's command line and environment; on `--help` or a usage error, prints it and
    /// exits as clap does.
    pub fn parse() -> Self {
        Self::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// `args` (the program name first) and the process's environment.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = <Self as FromArgMatches>::from_arg_matches(&matches)?;
        cli.settings = RawSettings::from_matches(&matches);
        Ok(cli)
    }

    /// The command line: here clap reads every setting as plain text, so that a bad value is
    /// reported by [`Config::validate`] along with all the others instead of clap stopping at
    /// the first.
    pub fn command() -> clap::Command {
        let command =
            <Config as Args>::augment_args(clap::Command::new("chroma-ha")).mut_args(|arg| {
                arg.value_parser(ValueParser::string()).value_delimiter(None).required(false)
            });
        // After the derives, whose doc comments would otherwise become the program's description.
        <Self as Args>::augment_args(command)
            .version(env!("CARGO_PKG_VERSION"))
            .about("High-availability proxy for ChromaDB")
            .long_about(None)
    }
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

/// The settings as [`Config`] declares them, typed, without reading the environment: what
/// [`Config::validate`] parses with, given `--name=value` arguments.
fn settings() -> clap::Command {
    <Config as Args>::augment_args(clap::Command::new("chroma-ha"))
        .no_binary_name(true)
        .disable_help_flag(true)
        .mut_args(|arg| arg.env(None::<&'static str>))
}

/// Names of the settings (the [`Config`] field names), in declaration order.
fn setting_names() -> Vec<String> {
    settings().get_arguments().map(|arg| arg.get_id().to_string()).collect()
}

/// How errors name a setting: its environment variable.
fn env_name(arg: &Arg) -> String {
    arg.get_id().as_str().to_ascii_uppercase()
}

/// Raw settings as text by name, before validation: flags and environment, then the `--config`
/// file for what they leave unset. Tests build one from a map with [`RawSettings::from_pairs`].
#[derive(Debug, Default, Clone)]
pub struct RawSettings(BTreeMap<String, String>);

impl RawSettings {
    /// Raw settings from explicit `(ENV_NAME, value)` pairs; unknown names are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let names = setting_names();
        let mut raw = Self::default();
        for (name, value) in pairs {
            if let Some(known) = names.iter().find(|n| n.to_ascii_uppercase() == name) {
                raw.0.insert(known.clone(), value.to_string());
            }
        }
        raw
    }

    /// Flags and environment from `cli`, then the `--config` file for what they leave unset.
    pub fn load(cli: &Cli) -> Result<Self, Vec<ConfigError>> {
        let mut raw = cli.settings.clone();
        if let Some(path) = &cli.config_file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| vec![error(&origin, format!("cannot read config file: {e}"))])?;
            raw.fill_from_toml(&text, &origin).map_err(|e| vec![e])?;
        }
        Ok(raw)
    }

    /// The settings clap found on the command line or in the environment (not its defaults).
    fn from_matches(matches: &ArgMatches) -> Self {
        let mut raw = Self::default();
        for name in setting_names() {
            let given = matches!(
                matches.value_source(&name),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if let (true, Some(values)) = (given, matches.get_many::<String>(&name)) {
                let text = values.map(String::as_str).collect::<Vec<_>>().join(",");
                raw.0.insert(name, text);
            }
        }
        raw
    }

    /// Fills settings not yet given from a TOML document (keys are lower-case setting names).
    pub fn fill_from_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            error(origin, format!("not valid TOML: {}", e.message()))
        })?;
        let names = setting_names();
        for (key, value) in table {
            // Read by the token loader ([`TokenSources`]), not a setting.
            if key == "tokens" {
                continue;
            }
            let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(&key)) else {
                return Err(error(origin, format!("unknown setting `{key}`")));
            };
            let env = name.to_ascii_uppercase();
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let strings: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                    strings.ok_or_else(|| error(&env, "an array here must hold strings"))?.join(",")
                }
                other => {
                    return Err(error(
                        &env,
                        format!("expected a string, number or boolean, got {other}"),
                    ));
                }
            };
            self.0.entry(name.clone()).or_insert(text);
        }
        Ok(())
    }

    /// DATABASE_URL alone, for `chroma-ha migrate`, which needs nothing else.
    pub fn database_url(&self) -> Result<DatabaseUrl, Vec<ConfigError>> {
        self.setting("database_url")
    }

    /// RUST_LOG alone: logging starts before the rest is validated.
    pub fn log_filter(&self) -> String {
        self.setting("rust_log").expect("RUST_LOG is free text with a default")
    }

    /// One setting, parsed and defaulted as [`Config`] declares it.
    fn setting<T: Clone + Send + Sync + 'static>(&self, name: &str) -> Result<T, Vec<ConfigError>> {
        let arg = settings().get_arguments().find(|a| a.get_id() == name).cloned();
        let arg = arg.unwrap_or_else(|| panic!("`{name}` is not a setting"));
        let flags = match self.get(name) {
            Some(text) => check(&arg, text).map_err(|e| vec![e])?,
            None => Vec::new(),
        };
        let env = env_name(&arg);
        let matches = clap::Command::new("chroma-ha")
            .no_binary_name(true)
            .arg(arg)
            .try_get_matches_from(flags)
            .map_err(|e| vec![error(&env, clap_message(&e))])?;
        match matches.try_get_one::<T>(name) {
            Ok(Some(value)) => Ok(value.clone()),
            Ok(None) => Err(vec![error(&env, "required")]),
            Err(e) => panic!("`{name}` read as the wrong type: {e}"),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

/// The `--name=value` arguments that give `arg` the value `text` (one per item of a list), each
/// checked alone with the setting's parser; or the error naming the setting.
fn check(arg: &Arg, text: &str) -> Result<Vec<String>, ConfigError> {
    let name = arg.get_id().as_str();
    let long = arg.get_long().unwrap_or(name);
    let items: Vec<&str> = match arg.get_value_delimiter() {
        Some(delimiter) => text.split(delimiter).map(str::trim).filter(|s| !s.is_empty()).collect(),
        None => vec![text.trim()],
    };
    let alone = clap::Command::new("chroma-ha").no_binary_name(true).arg(arg.clone());
    items
        .into_iter()
        .map(|item| {
            let flag = format!("--{long}={item}");
            match alone.clone().try_get_matches_from([&flag]) {
                Ok(_) => Ok(flag),
                Err(e) => Err(error(&env_name(arg), clap_message(&e))),
            }
        })
        .collect()
}

/// What a parser said was wrong (clap keeps it as the error's source).
fn clap_message(e: &clap::Error) -> String {
    match std::error::Error::source(e) {
        Some(why) => why.to_string(),
        None => e.kind().as_str().unwrap_or("invalid value").to_string(),
    }
}

/// The WAL store named by DATABASE_URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL connection URL (`postgres://...` or `postgresql://...`).
    Postgres(String),
    /// An SQLite file path (optionally `sqlite://path`).
    Sqlite(PathBuf),
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_string()));
        }
        let path = text.strip_prefix("sqlite://").unwrap_or(text);
        if path.contains("://") {
            return Err(format!("`{text}`: expected postgres://... or an SQLite file path"));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl fmt::Display for DatabaseUrl {
    /// The store with any password (in the user part or a `password` query parameter) replaced
    /// by `****`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(text) => f.write_str(&redact(text)),
        }
    }
}

/// `text` with its password and `*password` query parameters replaced by `****`; a URL the
/// `url` crate cannot parse (libpq also takes some it does not, e.g. several hosts) is shown as
/// its scheme alone, since where its password is cannot be told.
fn redact(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        let scheme = text.split_once("://").map_or("postgres", |(scheme, _)| scheme);
        return format!("{scheme}://****");
    };
    if url.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = url.set_password(Some("****"));
    }
    let secret = |key: &str| key.to_ascii_lowercase().ends_with("password");
    if url.query_pairs().any(|(key, _)| secret(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret(&key) { "****".to_string() } else { value.into_owned() };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Where the tokens come from: the `--config` file's `[[tokens]]` and AUTH_TOKENS_FILE's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSources {
    config_file: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
}

impl TokenSources {
    /// Reads and checks every token; an error names the file and the entry.
    pub fn load(&self) -> Result<Tokens, ConfigError> {
        let mut tokens = Tokens::default();
        let sources = [(&self.config_file, None), (&self.tokens_file, Some("AUTH_TOKENS_FILE"))];
        for (path, setting) in sources {
            let Some(path) = path else { continue };
            let origin = match setting {
                Some(setting) => format!("{setting} ({})", path.display()),
                None => path.display().to_string(),
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| error(&origin, format!("cannot read the tokens: {e}")))?;
            let found = Tokens::from_toml(&text).map_err(|e| error(&origin, e))?;
            tokens = tokens.merge(found).map_err(|e| error(&origin, e))?;
        }
        Ok(tokens)
    }
}

impl Config {
    /// Where the tokens come from.
    pub fn token_sources(&self) -> TokenSources {
        TokenSources {
            config_file: self.config_file.clone(),
            tokens_file: self.auth_tokens_file.clone(),
        }
    }

    /// Turns raw settings into a [`Config`], reporting every bad value by name.
    ///
    /// Each value is first parsed alone; a bad one is reported and left out, so that its default
    /// applies and the checks across settings still run (unless a required setting is missing).
    pub fn validate(raw: &RawSettings) -> Result<Self, Vec<ConfigError>> {
        let settings = settings();
        let mut errors = Vec::new();
        let mut flags = Vec::new();
        for arg in settings.get_arguments() {
            match raw.get(arg.get_id().as_str()).map(|text| check(arg, text)) {
                Some(Ok(mut given)) => flags.append(&mut given),
                Some(Err(e)) => errors.push(e),
                None if arg.is_required_set() => {
                    let what = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    errors.push(error(&env_name(arg), format!("required: {what}")));
                }
                None => {}
            }
        }
        let parsed = settings
            .try_get_matches_from(flags)
            .and_then(|matches| Self::from_arg_matches(&matches));
        let config = match parsed {
            Ok(config) => config,
            // A required setting is missing or bad, and already reported.
            Err(_) if !errors.is_empty() => return Err(errors),
            Err(e) => return Err(vec![error("chroma-ha", clap_message(&e))]),
        };
        config.check_across(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// The rules that involve more than one setting.
    fn check_across(&self, errors: &mut Vec<ConfigError>) {
        for (i, url) in self.replica_url.iter().enumerate() {
            if *url == self.primary_url || self.replica_url[..i].contains(url) {
                errors.push(error("REPLICA_URL", format!("{url} is given twice")));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => errors.push(error(
                "TLS_KEY_FILE",
                "required with TLS_CERT_FILE: the private key of that certificate",
            )),
            (None, Some(_)) => errors.push(error(
                "TLS_CERT_FILE",
                "required with TLS_KEY_FILE: the certificate of that private key",
            )),
            _ => {}
        }
        if self.listen_addr.ip().is_unspecified() && self.advertise_url.is_none() {
            errors.push(error(
                "ADVERTISE_URL",
                format!(
                    "required when LISTEN_ADDR is a wildcard address ({}): the URL the other proxies reach this one at",
                    self.listen_addr
                ),
            ));
        }
        if self.wal_retention < self.idempotency_ttl {
            errors.push(error(
                "WAL_RETENTION",
                "must be at least IDEMPOTENCY_TTL: a retried write must still find its entry",
            ));
        }
    }

    /// TLS_CERT_FILE and TLS_KEY_FILE, when the listener serves HTTPS ([`Config::validate`]
    /// refuses one without the other).
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        self.tls_cert_file.as_deref().zip(self.tls_key_file.as_deref())
    }

    /// The instances this proxy fronts: `primary` first, then `replica`, `replica-2`, ...
    pub fn instances(&self) -> Vec<InstanceSpec> {
        let primary = (Role::Primary, "primary".to_string(), &self.primary_url);
        let replicas = self.replica_url.iter().enumerate().map(|(i, url)| {
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
    /// One line for the startup log: every setting as `name=value`, in declaration order, as
    /// serde serializes it, so secrets are redacted by their field's `serialize_with`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        for (i, name) in setting_names().iter().enumerate() {
            let separator = if i == 0 { "" } else { " " };
            write!(f, "{separator}{name}={}", show::plain(&values[name.as_str()]))?;
        }
        Ok(())
    }
}

/// Parsers from text, one per kind of value; an error says what is wrong in one line, and the
/// caller adds which setting it was.
pub(crate) mod parse {
    use std::net::SocketAddr;
    use std::time::Duration;

    use crate::upstream::MAX_RESPONSE_BYTES;

    /// A Chroma base URL: `http://host[:port]` or `https://host[:port]`, no credentials, path,
    /// query or fragment; returned as its origin (no trailing slash).
    pub fn chroma_url(text: &str) -> Result<String, String> {
        base_url(text, "Chroma URL")
    }

    /// How other proxies reach this one: a base URL as [`chroma_url`] takes it.
    pub fn proxy_url(text: &str) -> Result<String, String> {
        base_url(text, "proxy URL")
    }

    /// A PROXY_ID: 1 to 100 visible ASCII characters.
    pub fn proxy_id(text: &str) -> Result<String, String> {
        let id = text.trim();
        if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("`{id}` is not 1 to 100 visible ASCII characters"));
        }
        Ok(id.to_string())
    }

    /// A LEASE_TTL: a duration of at least one second (renewed every third of it, a shorter
    /// lease would lapse on an ordinary store hiccup).
    pub fn lease_ttl(text: &str) -> Result<Duration, String> {
        let ttl = duration(text)?;
        if ttl < Duration::from_secs(1) {
            return Err(format!("`{}` is shorter than 1s", text.trim()));
        }
        Ok(ttl)
    }

    fn base_url(text: &str, what: &str) -> Result<String, String> {
        let text = text.trim().trim_end_matches('/');
        let bad = |why: &str| format!("`{text}` is not a usable {what}: {why}");
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http://host:port or https://host:port is supported"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in the URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL has no path or query"));
        }
        Ok(url.origin().ascii_serialization())
    }

    /// `host:port`.
    pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
        text.trim().parse().map_err(|_| format!("`{text}` is not host:port, e.g. 127.0.0.1:8080"))
    }

    /// A positive duration: seconds as a plain number (`2`, `0.5`, as the seed deployment wrote
    /// them), or humantime's forms (`500ms`, `2s`, `1m`, `24h`, `7d`, `1h 30m`).
    pub fn duration(text: &str) -> Result<Duration, String> {
        duration_or_zero(text).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
            format!(
                "`{}` is not a positive duration (seconds, or 500ms, 2s, 1m, 24h, 7d)",
                text.trim()
            )
        })
    }

    /// A duration that may be zero: seconds as a plain number, or humantime's forms.
    pub fn duration_or_zero(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let parsed = match text.parse::<f64>() {
            Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
            Err(_) => humantime::parse_duration(text).ok(),
        };
        parsed.ok_or_else(|| format!("`{text}` is not a duration (seconds, or 500ms, 2s, 1m, 24h)"))
    }

    /// A number from 0 to 1.
    pub fn ratio(text: &str) -> Result<f64, String> {
        match text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!("`{text}` is not a number from 0 to 1")),
        }
    }

    /// A size in bytes, from 0 to [`MAX_RESPONSE_BYTES`] (a larger answer cannot be buffered):
    /// a plain number, or with a binary unit, in any case (`512KiB`, `1 MiB`).
    pub fn stream_threshold(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let (number, unit) =
            text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let unit: Option<u64> = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => Some(1),
            "kib" => Some(1 << 10),
            "mib" => Some(1 << 20),
            _ => None,
        };
        let bytes = number.parse::<u64>().ok().zip(unit).and_then(|(n, unit)| n.checked_mul(unit));
        bytes.filter(|n| *n <= MAX_RESPONSE_BYTES as u64).ok_or_else(|| {
            format!("`{text}` is not a size from 0 to 256MiB (bytes, or 512KiB, 1MiB)")
        })
    }

    /// A whole number from 1 to 1,000,000.
    pub fn verify_rate(text: &str) -> Result<u32, String> {
        let n = text.trim().parse::<u32>().ok().filter(|n| (1..=1_000_000).contains(n));
        n.ok_or_else(|| format!("`{text}` is not a whole number from 1 to 1000000"))
    }

    /// `true` or `false` (also 1/0, yes/no, on/off).
    pub fn switch(text: &str) -> Result<bool, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("`{text}` is not true or false")),
        }
    }

    /// A whole number from 0 to 1,000,000.
    pub fn seed_rate(text: &str) -> Result<u32, String> {
        let n = text.trim().parse::<u32>().ok().filter(|n| *n <= 1_000_000);
        n.ok_or_else(|| format!("`{text}` is not a whole number from 0 to 1000000"))
    }

    /// A whole number from 1 to 1000.
    pub fn replay_retries(text: &str) -> Result<i32, String> {
        let n = text.trim().parse::<i32>().ok().filter(|n| (1..=1000).contains(n));
        n.ok_or_else(|| format!("`{text}` is not a whole number from 1 to 1000"))
    }
}

/// How the startup log shows values that serde would not show readably, or must not show.
mod show {
    use std::fmt::Display;
    use std::time::Duration;

    use serde::Serializer;

    /// `2s`, `7days`: as humantime formats it.
    pub fn duration<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    /// `<redacted>` when set.
    pub fn secret<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(_) => s.serialize_str("<redacted>"),
            None => s.serialize_none(),
        }
    }

    /// As its `Display` writes it.
    pub fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    /// One serialized value for a `name=value` log line: strings bare, lists in brackets.
    pub fn plain(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::Null => "unset".to_string(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                format!("[{}]", items.iter().map(plain).collect::<Vec<_>>().join(","))
            }
            other => other.to_string(),
        }
    }
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
        assert!(config.replica_url.is_empty());
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.check_interval, Duration::from_secs(2));
        assert_eq!(config.request_timeout, Duration::from_secs(15));
        assert_eq!(config.stream_threshold, 1_048_576);
        assert_eq!(config.read_replica_ratio, 0.8);
        assert_eq!(config.consistency_window, Duration::from_secs(30));
        assert_eq!(config.protected_collections, vec!["global".to_string()]);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.wal_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(config.max_replay_retries, 5);
        assert_eq!(config.rust_log, "info");
        assert_eq!(config.admin_token, None);
    }

    #[test]
    fn every_setting_is_named_alike_as_flag_env_and_toml_key() {
        let command = <Config as Args>::augment_args(clap::Command::new("t"));
        for arg in command.get_arguments() {
            let name = arg.get_id().as_str();
            assert_eq!(arg.get_long(), Some(name.replace('_', "-").as_str()), "{name}");
            let env = arg.get_env().and_then(|e| e.to_str());
            assert_eq!(env, Some(name.to_ascii_uppercase().as_str()), "{name}");
        }
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
        for url in ["http://u:p@h:1", "https://h:1/api", "ftp://h:1", "h:1", "http://h:1?x=1"] {
            let errors = validate(&[("PRIMARY_URL", url)]).unwrap_err();
            assert_eq!(settings_named(errors), vec!["PRIMARY_URL"], "{url}");
        }
    }

    #[test]
    fn https_instance_urls_are_accepted() {
        let config = validate(&[
            ("PRIMARY_URL", "https://chroma-1.internal:8443/"),
            ("REPLICA_URL", "http://127.0.0.1:2,https://chroma-2.internal"),
        ])
        .unwrap();
        assert_eq!(config.primary_url, "https://chroma-1.internal:8443");
        assert_eq!(config.replica_url, ["http://127.0.0.1:2", "https://chroma-2.internal"]);
    }

    #[test]
    fn a_tls_certificate_needs_its_key_and_the_key_its_certificate() {
        let base = ("PRIMARY_URL", "http://127.0.0.1:1");
        let errors = validate(&[base, ("TLS_CERT_FILE", "/etc/chroma-ha/cert.pem")]).unwrap_err();
        assert_eq!(settings_named(errors), vec!["TLS_KEY_FILE"]);
        let errors = validate(&[base, ("TLS_KEY_FILE", "/etc/chroma-ha/key.pem")]).unwrap_err();
        assert_eq!(settings_named(errors), vec!["TLS_CERT_FILE"]);
        let both = [base, ("TLS_CERT_FILE", "c.pem"), ("TLS_KEY_FILE", "k.pem")];
        let config = validate(&both).unwrap();
        assert_eq!(config.tls_files(), Some((Path::new("c.pem"), Path::new("k.pem"))));
        assert_eq!(validate(&[base]).unwrap().tls_files(), None);
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
    fn durations_accept_seconds_and_humantime_forms() {
        let ok = |text| parse::duration(text).ok();
        assert_eq!(ok("2"), Some(Duration::from_secs(2)));
        assert_eq!(ok("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(ok("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(ok("2s"), Some(Duration::from_secs(2)));
        assert_eq!(ok("1m"), Some(Duration::from_secs(60)));
        assert_eq!(ok("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(ok("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(ok("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(ok("-1"), None);
        assert_eq!(ok("0"), None);
        assert_eq!(ok("0s"), None);
        assert_eq!(ok("2 fortnights"), None);
    }

    #[test]
    fn stream_thresholds_are_bytes_or_binary_units_up_to_the_buffer_limit() {
        let ok = |text| parse::stream_threshold(text).ok();
        assert_eq!(ok("0"), Some(0));
        assert_eq!(ok("1048576"), Some(1_048_576));
        assert_eq!(ok("512KiB"), Some(512 * 1024));
        assert_eq!(ok(" 1 MiB "), Some(1_048_576));
        assert_eq!(ok("1mib"), Some(1_048_576));
        assert_eq!(ok("256MiB"), Some(256 * 1_048_576));
        assert_eq!(ok("257MiB"), None, "larger than any buffered answer");
        assert_eq!(ok("1GiB"), None);
        assert_eq!(ok("1MB"), None, "decimal units are not guessed at");
        assert_eq!(ok("-1"), None);
        assert_eq!(ok("1.5MiB"), None);
        assert_eq!(ok("MiB"), None);
        assert_eq!(ok("99999999999999999999"), None);
        let base = ("PRIMARY_URL", "http://127.0.0.1:1");
        let errors = validate(&[base, ("STREAM_THRESHOLD", "big")]).unwrap_err();
        assert_eq!(settings_named(errors), vec!["STREAM_THRESHOLD"]);
        let config = validate(&[base, ("STREAM_THRESHOLD", "64KiB")]).unwrap();
        assert_eq!(config.stream_threshold, 65_536);
    }

    #[test]
    fn toml_fills_gaps_but_flags_win() {
        let mut raw = RawSettings::from_pairs([("PRIMARY_URL", "http://127.0.0.1:1")]);
        raw.fill_from_toml(
            "primary_url = \"http://127.0.0.1:9\"\nreplica_url = [\"http://127.0.0.1:2\"]\n\
             read_replica_ratio = 0.5\ncheck_interval = 1\nrust_log = \"debug\"\n",
            "test.toml",
        )
        .unwrap();
        let config = Config::validate(&raw).unwrap();
        assert_eq!(config.primary_url, "http://127.0.0.1:1");
        assert_eq!(config.replica_url, vec!["http://127.0.0.1:2".to_string()]);
        assert_eq!(config.read_replica_ratio, 0.5);
        assert_eq!(config.check_interval, Duration::from_secs(1));
        assert_eq!(config.rust_log, "debug");
        assert_eq!(raw.log_filter(), "debug");
    }

    #[test]
    fn toml_unknown_keys_are_errors() {
        let err =
            RawSettings::default().fill_from_toml("primry_url = \"x\"", "f.toml").unwrap_err();
        assert_eq!(err.setting, "f.toml");
        assert!(err.message.contains("primry_url"));
    }

    #[test]
    fn display_lists_every_setting_and_redacts_the_admin_token() {
        let config =
            validate(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("ADMIN_TOKEN", "s3cret")]).unwrap();
        let line = config.to_string();
        assert!(!line.contains("s3cret"));
        assert!(line.contains("admin_token=<redacted>"), "{line}");
        assert!(line.starts_with("primary_url=http://127.0.0.1:1 replica_url=[] "), "{line}");
        assert!(line.contains(" wal_retention=7days "), "{line}");
        for name in setting_names() {
            assert!(line.contains(&format!("{name}=")), "{name} missing from {line}");
        }
    }

    #[test]
    fn database_url_picks_the_backend_and_hides_the_password() {
        let base = ("PRIMARY_URL", "http://127.0.0.1:1");
        let config = validate(&[base]).unwrap();
        assert_eq!(config.database_url, DatabaseUrl::Sqlite("chroma-ha-wal.sqlite".into()));
        let config = validate(&[base, ("DATABASE_URL", "sqlite:///var/lib/wal.db")]).unwrap();
        assert_eq!(config.database_url, DatabaseUrl::Sqlite("/var/lib/wal.db".into()));
        let url = "postgres://chroma:hunter2@db:5432/wal";
        let config = validate(&[base, ("DATABASE_URL", url)]).unwrap();
        assert_eq!(config.database_url, DatabaseUrl::Postgres(url.into()));
        assert!(!config.to_string().contains("hunter2"));
        assert!(config.to_string().contains("postgres://chroma:****@db:5432/wal"));
        let errors = validate(&[base, ("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(settings_named(errors), vec!["DATABASE_URL"]);
    }

    #[test]
    fn a_password_query_parameter_is_hidden_too() {
        let url = "postgresql://chroma@db/wal?sslmode=require&password=hunter2";
        let shown = DatabaseUrl::Postgres(url.into()).to_string();
        assert_eq!(shown, "postgresql://chroma@db/wal?sslmode=require&password=****");
        let shown = DatabaseUrl::Postgres("postgres://db/wal?PassWord=x%20y".into()).to_string();
        assert_eq!(shown, "postgres://db/wal?PassWord=****");
        let unparsable = DatabaseUrl::Postgres("postgres://u:hunter2@h1:5432,h2:5432/db".into());
        assert_eq!(unparsable.to_string(), "postgres://****");
    }

    #[test]
    fn migrate_needs_only_the_database_url() {
        let raw = RawSettings::from_pairs([("DATABASE_URL", "postgres://db/wal")]);
        assert_eq!(raw.database_url().unwrap(), DatabaseUrl::Postgres("postgres://db/wal".into()));
        let default = RawSettings::default().database_url().unwrap();
        assert_eq!(default, DatabaseUrl::Sqlite("chroma-ha-wal.sqlite".into()));
        let bad = RawSettings::from_pairs([("DATABASE_URL", "mysql://x")]).database_url();
        assert_eq!(settings_named(bad.unwrap_err()), vec!["DATABASE_URL"]);
        assert_eq!(RawSettings::default().log_filter(), "info");
    }

    #[test]
    fn cli_keeps_given_flags_as_text_and_leaves_defaults_out() {
        let cli = Cli::try_parse_from(["chroma-ha", "--check-interval", "3s", "migrate"]).unwrap();
        assert_eq!(cli.command, Some(Command::Migrate));
        assert_eq!(cli.settings.get("check_interval"), Some("3s"));
        assert_eq!(cli.settings.get("listen_addr"), None, "a default is not a given value");
        let cli = Cli::try_parse_from(["chroma-ha", "--replica-url", "http://h:1,http://h:2"]);
        assert_eq!(cli.unwrap().settings.get("replica_url"), Some("http://h:1,http://h:2"));
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
