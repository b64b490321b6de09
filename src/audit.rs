//! `chroma-ha verify` and `chroma-ha repair` (DESIGN 13): start a check or a repair through a
//! running proxy's admin API, follow its progress (a bar on a terminal, a line a minute
//! otherwise), print a summary table per collection, and exit 0 when the instances are identical
//! (or repaired), 1 when differences remain, 2 when the check could not run (unreachable,
//! unauthorized, not the leader, no source).
//!
//! Only a client of the admin API: it never reaches an instance itself, and never prints the
//! token it is given.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::parse;
use crate::tls::UpstreamTls;
use crate::upstream;

/// Flags shared by `verify` and `repair`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Base URL of the proxy (the leader, or it refuses), e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// Admin token
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this database
    #[arg(long)]
    pub database: Option<String>,
    /// Only collections of this name
    #[arg(long)]
    pub collection: Option<String>,
    /// Longest wait for each answer of the proxy
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub timeout: Duration,
}

/// `chroma-ha verify` flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
}

/// `chroma-ha repair` flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RepairArgs {
    #[command(flatten)]
    pub target: Target,
    /// The instance to make equal to the source, e.g. replica
    #[arg(long)]
    pub instance: String,
    /// Also delete collections the source lacks (never PROTECTED_COLLECTIONS)
    #[arg(long)]
    pub delete_extra: bool,
}

/// How often the job's progress is asked for.
const POLL: Duration = Duration::from_millis(500);
/// How often progress is printed when not on a terminal.
const LINE_EVERY: Duration = Duration::from_secs(60);

/// Runs `chroma-ha verify`.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    run(&args.target, "/admin/verify", scope(&args.target))
}

/// Runs `chroma-ha repair`.
pub fn repair(args: &RepairArgs) -> ExitCode {
    let mut body = scope(&args.target);
    body["instance"] = json!(args.instance);
    body["delete_extra"] = json!(args.delete_extra);
    run(&args.target, "/admin/repair", body)
}

fn scope(target: &Target) -> Value {
    json!({"tenant": target.tenant, "database": target.database, "collection": target.collection})
}

fn run(target: &Target, path: &str, body: Value) -> ExitCode {
    let base = target.url.trim_end_matches('/').to_string();
    let job = match follow(target, &base, path, body) {
        Ok(job) => job,
        Err(why) => {
            eprintln!("chroma-ha: {why}");
            return ExitCode::from(2);
        }
    };
    print!("{}", table(&job));
    if let Some(error) = job["error"].as_str() {
        eprintln!(
            "chroma-ha: the {} could not finish: {error}",
            job["kind"].as_str().unwrap_or("job")
        );
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(differs(&job)))
}

/// Starts the job and waits for it to finish, showing its progress; answers the finished job.
fn follow(target: &Target, base: &str, path: &str, body: Value) -> Result<Value, String> {
    let tls = UpstreamTls::load([base.to_string()], None).map_err(|e| e.to_string())?;
    actix_web::rt::System::new().block_on(async {
        let client = upstream::client(&tls, target.timeout);
        let call = |method: &str, body: Option<&Value>| {
            let url = format!("{base}{path}");
            let mut request = match method {
                "POST" => client.post(&url),
                _ => client.get(&url),
            };
            if let Some(token) = &target.token {
                request = request.bearer_auth(token);
            }
            let sent = match body {
                Some(body) => request.send_json(body),
                None => request.send(),
            };
            async move {
                let mut response = sent.await.map_err(|e| format!("{url}: {e}"))?;
                let status = response.status();
                let bytes =
                    response.body().limit(64 << 20).await.map_err(|e| format!("{url}: {e}"))?;
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if !status.is_success() {
                    let message = answer["message"].as_str().unwrap_or("");
                    return Err(format!("{url} answered {status}: {message}"));
                }
                Ok(answer)
            }
        };
        let started = call("POST", Some(&body)).await?;
        let since = started["started"]["started_at"].clone();
        let progress = Progress::new();
        loop {
            actix_web::rt::time::sleep(POLL).await;
            let state = call("GET", None).await?;
            match &state["running"] {
                running if running["started_at"] == since => progress.show(running),
                _ if state["last"]["started_at"] == since => {
                    progress.done();
                    return Ok(state["last"].clone());
                }
                _ => {
                    return Err(
                        "the job ended and another took its place; see GET /admin/verify".into()
                    );
                }
            }
        }
    })
}

/// A bar on a terminal, else a line a minute (on stderr: stdout is the table).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} collections, {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Self { bar, last_line: std::cell::Cell::new(Instant::now()) }
    }

    fn show(&self, job: &Value) {
        let (done, total) = (
            job["collections_done"].as_u64().unwrap_or(0),
            job["collections_total"].as_u64().unwrap_or(0),
        );
        let read = job["records_read"].as_u64().unwrap_or(0);
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{read} records read"));
            }
            None if self.last_line.get().elapsed() >= LINE_EVERY => {
                self.last_line.set(Instant::now());
                eprintln!(
                    "{}: {done}/{total} collections, {read} records read",
                    job["kind"].as_str().unwrap_or("job")
                );
            }
            None => {}
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Whether any collection still differs after the job.
pub fn differs(job: &Value) -> bool {
    collections(job).any(|(_, c)| remains(c))
}

fn remains(c: &Value) -> bool {
    match c.get("repair").filter(|r| !r.is_null()) {
        Some(repair) => repair["left"].as_array().is_some_and(|l| !l.is_empty()),
        None => c["problems"].as_array().is_some_and(|p| !p.is_empty()),
    }
}

fn collections(job: &Value) -> impl Iterator<Item = (&str, &Value)> {
    job["instances"].as_array().into_iter().flatten().flat_map(|i| {
        let name = i["instance"].as_str().unwrap_or("");
        i["collections"].as_array().into_iter().flatten().map(move |c| (name, c))
    })
}

/// One line per instance and collection: where, the counts, what differs, what a repair did.
pub fn table(job: &Value) -> String {
    let mut rows = vec![[
        "INSTANCE".to_string(),
        "COLLECTION".to_string(),
        "SOURCE".to_string(),
        "COUNT".to_string(),
        "DIVERGENT".to_string(),
        "STATE".to_string(),
    ]];
    for (instance, c) in collections(job) {
        let problems: Vec<&str> =
            c["problems"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let state = match c.get("repair").filter(|r| !r.is_null()) {
            Some(r) => {
                let left: Vec<&str> =
                    r["left"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let did = format!(
                    "repaired: {} written, {} deleted{}{}{}",
                    r["written"],
                    r["deleted"],
                    if r["created"] == true { ", created" } else { "" },
                    if r["metadata_set"] == true { ", metadata set" } else { "" },
                    if r["collection_deleted"] == true { ", collection deleted" } else { "" },
                );
                if left.is_empty() { did } else { format!("{did}; left: {}", left.join("; ")) }
            }
            None if problems.is_empty() => "identical".to_string(),
            None => format!("differs: {}", problems.join(", ")),
        };
        rows.push([
            instance.to_string(),
            format!(
                "{}/{}/{}",
                c["tenant"].as_str().unwrap_or(""),
                c["database"].as_str().unwrap_or(""),
                c["collection"].as_str().unwrap_or("")
            ),
            c["source_count"].to_string(),
            c["count"].to_string(),
            c["divergent_records"].to_string(),
            state,
        ]);
    }
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out.push_str(&format!(
        "{} against {} in {:.1} s: {} records read; {}\n",
        job["kind"].as_str().unwrap_or("job"),
        job["source"].as_str().unwrap_or("no source"),
        job["seconds"].as_f64().unwrap_or(0.0),
        job["records_read"],
        if differs(job) { "differences remain" } else { "identical" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_verdict_follow_what_remains() {
        let job = |repair: Value| {
            json!({"kind": "repair", "source": "primary", "seconds": 1.5, "records_read": 40,
                "instances": [{"instance": "replica", "collections": [
                    {"tenant": "t", "database": "d", "collection": "docs", "source_count": 10,
                     "count": 9, "divergent_records": 1, "problems": ["records"], "repair": repair},
                    {"tenant": "t", "database": "d", "collection": "same", "source_count": 3,
                     "count": 3, "divergent_records": 0, "problems": []}]}]})
        };
        let fixed = job(json!({"written": 1, "deleted": 0, "left": []}));
        assert!(!differs(&fixed));
        let text = table(&fixed);
        assert!(
            text.contains("t/d/docs") && text.contains("repaired: 1 written, 0 deleted"),
            "{text}"
        );
        assert!(text.contains("identical\n"), "{text}");
        let left = job(json!({"written": 0, "deleted": 0, "left": ["kept"]}));
        assert!(differs(&left));
        assert!(differs(&job(Value::Null)), "a check's problems remain");
    }
}
