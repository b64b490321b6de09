//! Commands that talk to a running proxy (DESIGN 15):
//!
//! - `chroma-ha check --url URL`: a monitoring plugin in the Nagios/Icinga convention. Reads
//!   `/status`, prints one line `CHROMA-HA STATE - summary | perfdata`, and exits 0 OK,
//!   1 WARNING, 2 CRITICAL or 3 UNKNOWN. The thresholds default to the seed deployment's alert
//!   table; each is a flag.
//! - `chroma-ha status --url URL [--watch]`: the same figures as a summary for a person at a
//!   terminal.
//!
//! Reads only: it never changes the proxy, and never prints the token it is given.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::parse;
use crate::tls::UpstreamTls;
use crate::upstream;

/// `chroma-ha check` flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct CheckArgs {
    /// Base URL of the proxy, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// Bearer token sent with the request, if the proxy needs one
    #[arg(long, env = "CHROMA_HA_CHECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Pending writes above this are a WARNING
    #[arg(long, default_value_t = 0)]
    pub pending_warning: i64,
    /// Pending writes above this are CRITICAL
    #[arg(long, default_value_t = 10)]
    pub pending_critical: i64,
    /// Failed replays above this are a WARNING
    #[arg(long, default_value_t = 0)]
    pub failed_warning: i64,
    /// Failed replays above this are CRITICAL
    #[arg(long, default_value_t = 2)]
    pub failed_critical: i64,
    /// An oldest pending entry older than this is a WARNING
    #[arg(long, default_value = "0s", value_parser = parse::duration_or_zero)]
    pub oldest_warning: Duration,
    /// An oldest pending entry older than this is CRITICAL
    #[arg(long, default_value = "300s", value_parser = parse::duration_or_zero)]
    pub oldest_critical: Duration,
    /// Longest wait for the proxy's answer
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub timeout: Duration,
}

/// The plugin states, by exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// The state and the one line to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    pub line: String,
}

fn unknown(why: impl std::fmt::Display) -> Verdict {
    Verdict { state: State::Unknown, line: format!("CHROMA-HA UNKNOWN - {why}") }
}

/// Judges a `/status` document against the thresholds.
pub fn evaluate(status: &Value, args: &CheckArgs) -> Verdict {
    let Some(instances) = status["instances"].as_array() else {
        return unknown("the answer is not chroma-ha's /status (no instances)");
    };
    let wal = &status["write_ahead_log"];
    let mut state = State::Ok;
    let mut reasons = Vec::new();
    let mut raise = |to: State, why: String| {
        state = state.max(to);
        reasons.push(why);
    };
    let usable = instances.iter().filter(|i| i["healthy"] == true).count();
    if usable == 0 {
        raise(State::Critical, "no usable Chroma instance".into());
    }
    for i in instances.iter().filter(|i| i["healthy"] != true) {
        let error = i["last_error"].as_str().unwrap_or("no reason given");
        raise(State::Warning, format!("{} {} ({error})", text(&i["name"]), text(&i["state"])));
    }
    if let Some(error) = wal["error"].as_str() {
        raise(State::Critical, format!("WAL store unavailable, writes refused ({error})"));
    }
    let pending = wal["pending_writes"].as_i64().unwrap_or(0);
    let failed = wal["failed_replays"].as_i64().unwrap_or(0);
    let oldest = wal["oldest_pending"].as_f64().unwrap_or(0.0);
    let levels = |value: f64, warning: f64, critical: f64| {
        if value > critical {
            Some(State::Critical)
        } else if value > warning {
            Some(State::Warning)
        } else {
            None
        }
    };
    let (pw, pc) = (args.pending_warning, args.pending_critical);
    if let Some(level) = levels(pending as f64, pw as f64, pc as f64) {
        raise(level, format!("{pending} pending writes"));
    }
    let (fw, fc) = (args.failed_warning, args.failed_critical);
    if let Some(level) = levels(failed as f64, fw as f64, fc as f64) {
        raise(level, format!("{failed} failed replays"));
    }
    let (ow, oc) = (args.oldest_warning.as_secs_f64(), args.oldest_critical.as_secs_f64());
    if let Some(level) = levels(oldest, ow, oc) {
        raise(level, format!("oldest pending write {oldest:.0}s old"));
    }
    let summary = if reasons.is_empty() {
        format!("{usable}/{} instances usable, nothing pending", instances.len())
    } else {
        format!("{usable}/{} instances usable; {}", instances.len(), reasons.join("; "))
    };
    let perfdata = format!(
        "pending_writes={pending};{pw};{pc} failed_replays={failed};{fw};{fc} oldest_pending={oldest:.0}s;{ow:.0};{oc:.0} usable_instances={usable};;;0;{}",
        instances.len()
    );
    Verdict { state, line: format!("CHROMA-HA {} - {summary} | {perfdata}", state.label()) }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// A number as text, `-` when absent.
fn number(value: &Value) -> String {
    if value.is_number() { value.to_string() } else { "-".to_string() }
}

/// The proxy's `/status` at `base` (and `/events` with it when `events`), or why not.
fn fetch(
    base: &str,
    token: Option<&str>,
    timeout: Duration,
    events: bool,
) -> Result<(Value, Value), String> {
    let base = base.trim_end_matches('/');
    let tls = UpstreamTls::load([base.to_string()], None).map_err(|e| e.to_string())?;
    actix_web::rt::System::new().block_on(async {
        let client = upstream::client(&tls, timeout);
        let get = |path: &'static str| {
            let url = format!("{base}{path}");
            let mut request = client.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let mut response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("{url} answered {}", response.status()));
                }
                let body =
                    response.body().limit(16 << 20).await.map_err(|e| format!("{url}: {e}"))?;
                serde_json::from_slice::<Value>(&body).map_err(|e| format!("{url}: not JSON: {e}"))
            }
        };
        let status = get("/status").await?;
        let events = if events { get("/events").await? } else { Value::Null };
        Ok((status, events))
    })
}

/// Fetches `/status` and judges it; UNKNOWN when the proxy cannot be reached or answers
/// something else.
pub fn check(args: &CheckArgs) -> Verdict {
    match fetch(&args.url, args.token.as_deref(), args.timeout, false) {
        Ok((status, _)) => evaluate(&status, args),
        Err(why) => unknown(why),
    }
}

/// Runs the plugin: prints the line, answers the exit code.
pub fn run(args: &CheckArgs) -> ExitCode {
    let verdict = check(args);
    println!("{}", verdict.line);
    ExitCode::from(verdict.state as u8)
}

/// `chroma-ha status` flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct StatusArgs {
    /// Base URL of the proxy, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// Bearer token sent with the request, if the proxy needs one
    #[arg(long, env = "CHROMA_HA_CHECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Refresh every 2 seconds until interrupted
    #[arg(long)]
    pub watch: bool,
}

/// A summary of `/status` (and the last transitions) for a person at a terminal.
pub fn summary(status: &Value, events: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "chroma-ha {} — up {}s — {} of {} instances usable",
            text(&status["version"]),
            number(&status["uptime_seconds"]),
            number(&status["healthy_instances"]),
            status["instances"].as_array().map_or(0, Vec::len)
        ),
    );
    line(&mut out, String::new());
    line(
        &mut out,
        format!(
            "{:<12} {:<12} {:>9} {:>9}  {}",
            "INSTANCE", "STATE", "LAG", "LAG AGE", "LAST ERROR"
        ),
    );
    for i in status["instances"].as_array().into_iter().flatten() {
        let lag = &i["replication_lag"];
        let age = lag["seconds"].as_f64().map_or("-".to_string(), |s| format!("{s:.0}s"));
        let error = if i["healthy"] == true { "" } else { i["last_error"].as_str().unwrap_or("") };
        line(
            &mut out,
            format!(
                "{:<12} {:<12} {:>9} {:>9}  {error}",
                text(&i["name"]),
                text(&i["state"]),
                number(&lag["entries"]),
                age
            ),
        );
    }
    let wal = &status["write_ahead_log"];
    line(&mut out, String::new());
    match wal["error"].as_str() {
        Some(error) => {
            line(&mut out, format!("WAL {}: UNAVAILABLE ({error})", text(&wal["backend"])))
        }
        None => line(
            &mut out,
            format!(
                "WAL {}: {} pending, oldest {}, {} failed replays, head at seq {}",
                text(&wal["backend"]),
                number(&wal["pending_writes"]),
                wal["oldest_pending"].as_f64().map_or("-".to_string(), |s| format!("{s:.0}s")),
                number(&wal["failed_replays"]),
                number(&wal["head_seq"])
            ),
        ),
    }
    let recent: Vec<&Value> = events["events"].as_array().into_iter().flatten().take(5).collect();
    if !recent.is_empty() {
        line(&mut out, String::new());
        line(&mut out, "RECENT".to_string());
        for e in recent {
            line(
                &mut out,
                format!(
                    "{} {:<8} {:<14} {}",
                    text(&e["at"]),
                    text(&e["instance"]),
                    text(&e["kind"]),
                    text(&e["detail"])
                ),
            );
        }
    }
    out
}

/// Prints the summary once, or every 2 s with `--watch`; exits 1 when the proxy cannot be read.
pub fn status(args: &StatusArgs) -> ExitCode {
    loop {
        match fetch(&args.url, args.token.as_deref(), Duration::from_secs(10), true) {
            Ok((status, events)) => {
                if args.watch {
                    // Clear the terminal and go home, as `watch` does.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", summary(&status, &events));
            }
            Err(why) if !args.watch => {
                eprintln!("chroma-ha status: {why}");
                return ExitCode::FAILURE;
            }
            Err(why) => println!("\x1b[2J\x1b[Hchroma-ha status: {why} (retrying)"),
        }
        if !args.watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn args(extra: &[&str]) -> CheckArgs {
        let mut argv = vec!["check", "--url", "http://x"];
        argv.extend_from_slice(extra);
        Cmd::parse_from(argv).args
    }

    fn status(replica_up: bool, pending: i64, failed: i64, oldest: Option<f64>) -> Value {
        json!({
            "instances": [
                {"name": "primary", "healthy": true, "state": "healthy"},
                {"name": "replica", "healthy": replica_up, "state": if replica_up { "healthy" } else { "unhealthy" }, "last_error": "connection refused"},
            ],
            "write_ahead_log": {"pending_writes": pending, "failed_replays": failed, "oldest_pending": oldest},
        })
    }

    #[test]
    fn the_summary_names_every_instance_and_the_log() {
        let mut status = status(false, 3, 0, Some(4.0));
        status["version"] = json!("0.1.0");
        status["instances"][1]["replication_lag"] = json!({"entries": 3, "seconds": 4.0});
        status["write_ahead_log"]["backend"] = json!("sqlite");
        let events = json!({"events": [{"at": "t", "instance": "replica", "kind": "down", "detail": "refused"}]});
        let text = summary(&status, &events);
        assert!(
            text.contains("replica      unhealthy            3        4s  connection refused"),
            "{text}"
        );
        assert!(text.contains("WAL sqlite: 3 pending, oldest 4s, 0 failed replays"), "{text}");
        assert!(text.contains("replica  down           refused"), "{text}");
    }

    #[test]
    fn the_seed_thresholds_decide_the_state() {
        let defaults = args(&[]);
        let ok = evaluate(&status(true, 0, 0, None), &defaults);
        assert_eq!(ok.state, State::Ok);
        assert_eq!(
            ok.line,
            "CHROMA-HA OK - 2/2 instances usable, nothing pending | pending_writes=0;0;10 failed_replays=0;0;2 oldest_pending=0s;0;300 usable_instances=2;;;0;2"
        );
        let down = evaluate(&status(false, 3, 0, Some(4.0)), &defaults);
        assert_eq!(down.state, State::Warning);
        assert!(down.line.contains("replica unhealthy (connection refused)"), "{}", down.line);
        assert!(down.line.contains("| pending_writes=3;0;10 "), "{}", down.line);
        assert_eq!(evaluate(&status(true, 11, 0, Some(1.0)), &defaults).state, State::Critical);
        assert_eq!(evaluate(&status(true, 0, 3, None), &defaults).state, State::Critical);
        assert_eq!(evaluate(&status(true, 1, 0, Some(301.0)), &defaults).state, State::Critical);
        let loose = args(&["--pending-warning", "5", "--oldest-warning", "1m"]);
        assert_eq!(evaluate(&status(true, 3, 0, Some(30.0)), &loose).state, State::Ok);
        let mut none = status(false, 0, 0, None);
        none["instances"][0]["healthy"] = json!(false);
        let verdict = evaluate(&none, &defaults);
        assert_eq!(verdict.state, State::Critical);
        assert!(verdict.line.contains("no usable Chroma instance"), "{}", verdict.line);
        assert_eq!(evaluate(&json!({"status": "healthy"}), &defaults).state, State::Unknown);
    }
}
