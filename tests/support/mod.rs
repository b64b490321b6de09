//! Test harness: real Chroma servers and the real proxy binary on free loopback ports, each in
//! its own temporary directory, with real faults (`kill -9`, `SIGSTOP`/`SIGCONT`, restart on
//! the same port and data). Everything is stopped on drop, even when a test panics; a panicking
//! test prints the tail of every process log it started.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod tls;

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Chroma version the harness installs and runs.
pub const CHROMADB_VERSION: &str = "1.5.9";
/// Path of the default tenant and database, prefix of every collection route.
pub const DB: &str = "/api/v2/tenants/default_tenant/databases/default_database";

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/{script}`, which installs something once and prints its path.
fn installed(script: &str) -> PathBuf {
    let out = Command::new(repo_root().join("scripts").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(out.status.success(), "scripts/{script} failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Python venv with chromadb, created on first use by `scripts/setup-venv.sh`.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| installed("setup-venv.sh"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `condition` until it holds, or panics after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process id we own.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `SIGSTOP`, and wait until every thread of the process is stopped: kill(2) returns once the
/// signal is pending, and on a busy machine a thread can go on serving a request for a while.
fn freeze(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_until(&format!("process {pid} is stopped"), Duration::from_secs(10), || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().all(|task| {
            // `pid (comm) state ...`: the state follows the last `)`; a zombie runs no more.
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat.rfind(')').and_then(|end| stat[end + 1..].trim_start().chars().next());
            matches!(state, Some('T' | 't' | 'Z'))
        })
    });
}

/// `kill -9` (after `SIGCONT`, in case it is frozen) and reap a child we started, if running.
fn kill9(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        signal(child.id(), libc::SIGCONT);
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An HTTP answer: status and parsed JSON body (`Value::String` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .allow_non_standard_methods(true)
        .tls_config(tls)
        .build()
        .into()
}

/// Sends one request (`https://` verified against [`tls::ca`]); connection errors are `Err`,
/// every HTTP status is `Ok`.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    static PLAIN: OnceLock<ureq::Agent> = OnceLock::new();
    static HTTPS: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = if url.starts_with("https://") {
        HTTPS.get_or_init(|| agent(tls::ureq_tls()))
    } else {
        PLAIN.get_or_init(|| agent(ureq::tls::TlsConfig::default()))
    };
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        builder = builder.header("content-type", "application/json");
    }
    let request =
        builder.body(body.map(<[u8]>::to_vec).unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body, headers })
}

/// Sends one request and panics on a connection error.
pub fn request(method: &str, url: &str, body: Option<Value>) -> Answer {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    try_request(method, url, &[], bytes.as_deref())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub fn get(url: &str) -> Answer {
    request("GET", url, None)
}

pub fn post(url: &str, body: Value) -> Answer {
    request("POST", url, Some(body))
}

/// One real Chroma server (`chroma run CONFIG.yaml`) in its own directory.
pub struct Chroma {
    pub name: String,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Chroma {
    /// Starts a server and waits for its heartbeat.
    pub fn start(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("chroma-ha-{name}-")).tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "port: {port}\nlisten_address: \"127.0.0.1\"\npersist_path: \"{}\"\nallow_reset: true\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let mut chroma = Self { name: name.to_string(), port, dir, child: None };
        chroma.spawn();
        chroma
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Starts the server again on the same port and data, after [`Chroma::kill9`].
    pub fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("chroma {} did not start: {why}", self.name);
        }
    }

    /// [`Chroma::spawn`], or the tail of the server's log if it exits before its heartbeat.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        let log = File::options().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(venv().join("bin/chroma"))
            .arg("run")
            .arg(self.dir.path().join("config.yaml"))
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn chroma");
        let url = format!("{}/api/v2/heartbeat", self.url());
        let what = format!("chroma {} heartbeat", self.name);
        let child = self.child.insert(child);
        let mut exited = None;
        wait_until(&what, Duration::from_secs(60), || {
            exited = child.try_wait().ok().flatten();
            exited.is_some() || try_request("GET", &url, &[], None).is_ok_and(|a| a.status == 200)
        });
        match exited {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(format!("it exited ({status}):\n{}", log_tail(&self.log_path(), 20)))
            }
        }
    }

    /// Empties the data directory of a stopped server, as an operator does with one Chroma
    /// cannot open any more.
    pub fn empty_data(&self) {
        assert!(self.child.is_none(), "chroma {} is running", self.name);
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("chroma.log")
    }

    /// `kill -9`, and reap the process.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Freezes the server: it keeps its sockets but answers nothing.
    pub fn sigstop(&self) {
        freeze(self.pid());
    }

    /// Thaws a frozen server.
    pub fn sigcont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Names of the collections in the default database, read straight from this server.
    pub fn collection_names(&self) -> Vec<String> {
        let answer = get(&format!("{}{DB}/collections", self.url()));
        assert_eq!(answer.status, 200, "{answer:?}");
        let mut names: Vec<String> = answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Chroma {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- chroma {} log tail ---\n{}", self.name, log_tail(&self.log_path(), 20));
        }
        self.kill9();
    }
}

/// The proxy binary, started with a given environment on a free port; HTTPS when the
/// environment sets TLS_CERT_FILE (a certificate of [`tls::ca`]).
pub struct Proxy {
    pub port: u16,
    scheme: &'static str,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proxy {
    /// Starts the proxy in front of `primary` and `replicas` with extra settings, and waits until
    /// it answers `/health`.
    pub fn start(primary: &Chroma, replicas: &[&Chroma], settings: &[(&str, &str)]) -> Self {
        let replica_urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
        let mut env = vec![("PRIMARY_URL".to_string(), primary.url())];
        if !replica_urls.is_empty() {
            env.push(("REPLICA_URL".to_string(), replica_urls.join(",")));
        }
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::start_with_env(&env)
    }

    /// Starts the proxy with exactly this environment (plus LISTEN_ADDR and RUST_LOG).
    pub fn start_with_env(env: &[(String, String)]) -> Self {
        let dir = tempfile::Builder::new().prefix("chroma-ha-proxy-").tempdir().unwrap();
        let tls = env.iter().any(|(k, _)| k == "TLS_CERT_FILE");
        let scheme = if tls { "https" } else { "http" };
        let mut proxy = Self { port: free_port(), scheme, dir, env: env.to_vec(), child: None };
        proxy.spawn();
        proxy
    }

    /// Starts the process (again, after [`Proxy::kill9`]) on the same port, environment and
    /// WAL store, and waits until it answers `/health`.
    pub fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(self.dir.path().join("proxy.log"));
        let log = log.unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn chroma-ha");
        self.child = Some(child);
        let url = format!("{}/health", self.url());
        wait_until("proxy /health", Duration::from_secs(30), || {
            try_request("GET", &url, &[], None).is_ok()
        });
    }

    /// `kill -9`, and reap the process.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Freezes the proxy: it keeps its sockets but answers nothing.
    pub fn sigstop(&self) {
        freeze(self.pid());
    }

    /// Thaws a frozen proxy.
    pub fn sigcont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy is running").id()
    }

    /// The proxy's `/status` document.
    pub fn status(&self) -> Value {
        let answer = get(&format!("{}/status", self.url()));
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// The `/status` entry of one instance.
    pub fn instance_status(&self, name: &str) -> Value {
        self.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    }

    /// Requests an instance answered, by kind (`reads` or `writes`), from `/status`.
    pub fn served(&self, instance: &str, kind: &str) -> u64 {
        let status = self.status();
        let entry =
            status["stats"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == instance);
        entry.unwrap()[kind].as_u64().unwrap()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("proxy is running");
        let mut status = None;
        wait_until("proxy exit", timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        self.child = None;
        status.unwrap()
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- proxy log tail ---\n{}",
                log_tail(&self.dir.path().join("proxy.log"), 40)
            );
        }
        self.kill9();
    }
}

/// The official JS client's `node_modules`, installed on first use by `scripts/setup-js.sh`.
pub fn js_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| installed("setup-js.sh"))
}

/// Headless Chromium, installed on first use by `scripts/setup-chromium.sh`.
pub fn chromium() -> &'static Path {
    static BROWSER: OnceLock<PathBuf> = OnceLock::new();
    BROWSER.get_or_init(|| installed("setup-chromium.sh"))
}

/// Prometheus's `promtool`, provided on first use by `scripts/setup-promtool.sh`.
pub fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| installed("setup-promtool.sh"))
}

/// Runs `tests/js/{script}` with Node and the official JS client.
pub fn node(script: &str, args: &[&str]) -> Output {
    Command::new("node")
        .arg(repo_root().join("tests/js").join(script))
        .args(args)
        .env("NODE_PATH", js_modules())
        .stdin(Stdio::null())
        .output()
        .expect("run node")
}

/// Runs `tests/py/{script}` with the venv's Python and these arguments.
pub fn python(script: &str, args: &[&str]) -> Output {
    python_command(script, args).output().expect("run python")
}

/// The command for `tests/py/{script}`, to spawn in the background.
pub fn python_command(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new(venv().join("bin/python"));
    command
        .arg(repo_root().join("tests/py").join(script))
        .args(args)
        .env("ANONYMIZED_TELEMETRY", "False")
        .stdin(Stdio::null());
    command
}

/// Starts tests/py/workload.py in the background: `iterations` mixed writes through `proxy`
/// under collection names starting with `prefix`; finish it with [`python_result`].
pub fn spawn_workload(proxy: &Proxy, prefix: &str, iterations: usize) -> Child {
    python_command("workload.py", &[&proxy.url(), prefix, &iterations.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the workload")
}

/// Parses the last stdout line of a test script (Python or Node) as JSON, panicking with its
/// stderr if it failed.
pub fn python_result(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "script failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// Directory holding the PostgreSQL server binaries (`initdb`, `pg_ctl`).
fn pg_bin() -> PathBuf {
    let on_path = Command::new("sh").args(["-c", "command -v initdb"]).output().ok();
    if let Some(out) = on_path.filter(|o| o.status.success()) {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        return path.parent().unwrap().to_path_buf();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries not found: run scripts/test.sh, which installs them")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (the server refuses root).
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A real PostgreSQL server in its own temporary directory, on a free port.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

impl Postgres {
    /// `initdb` a fresh cluster and start it.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("chroma-ha-pg-").tempdir().unwrap();
        if is_root() {
            let status =
                Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the PostgreSQL directory");
        }
        let out = pg_command(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Self { port: free_port(), dir, bin, running: false };
        pg.start_again();
        pg
    }

    /// `postgres://` URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the server (again) on the same port and data, waiting until it accepts connections.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out =
            self.pg_ctl(&["-w", "-t", "60", "-l", log.to_str().unwrap(), "-o", &options, "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_tail(&log, 20)
        );
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: the server closes every connection and exits.
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, as in a crash; the next
    /// start runs crash recovery.
    pub fn crash(&mut self) {
        self.stop_with("immediate");
    }

    fn stop_with(&mut self, mode: &str) {
        let out = self.pg_ctl(&["-w", "-m", mode, "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// Runs SQL with `psql` and returns its unaligned output, one row per line.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let local = self.bin.join("psql");
        let psql = if local.exists() { local } else { PathBuf::from("psql") };
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-F",
                "|",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        }
    }
}

/// The WAL store a test runs against: a fresh SQLite file or a fresh PostgreSQL server.
pub enum WalBackend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl WalBackend {
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::Builder::new().prefix("chroma-ha-wal-").tempdir().unwrap())
    }

    pub fn postgres() -> Self {
        Self::Postgres(Postgres::start())
    }

    /// The DATABASE_URL for the proxy.
    pub fn database_url(&self) -> String {
        match self {
            Self::Sqlite(dir) => dir.path().join("wal.sqlite").display().to_string(),
            Self::Postgres(pg) => pg.url(),
        }
    }

    /// Runs SQL against the WAL store, straight (committed), and returns rows as `|`-separated
    /// text.
    pub fn query(&self, sql: &str) -> Vec<String> {
        match self {
            Self::Postgres(pg) => pg.query(sql),
            Self::Sqlite(_) => {
                let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nrows = list(c.execute(sys.argv[2]))\nc.commit()\nfor row in rows:\n    print('|'.join('' if v is None else str(v) for v in row))";
                let out = Command::new(venv().join("bin/python"))
                    .args(["-c", script, &self.database_url(), sql])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "sqlite query failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
            }
        }
    }
}

/// Defines one test per WAL backend from a function taking the backend.
#[macro_export]
macro_rules! both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn sqlite() {
                super::$scenario(super::support::WalBackend::sqlite());
            }
            #[test]
            fn postgres() {
                super::$scenario(super::support::WalBackend::postgres());
            }
        }
    };
}

/// Every collection of one instance, read straight from it (see tests/py/fingerprint.py).
pub fn fingerprint(instance: &Chroma) -> Value {
    python_result(&python("fingerprint.py", &[&instance.url()]))
}

/// Waits until every instance has the same fingerprint, and returns it.
pub fn wait_identical(instances: &[&Chroma], timeout: Duration) -> Value {
    let mut last = Value::Null;
    let start = Instant::now();
    loop {
        let prints: Vec<Value> = instances.iter().map(|c| fingerprint(c)).collect();
        if prints.windows(2).all(|w| w[0] == w[1]) {
            return prints.into_iter().next().unwrap_or_default();
        }
        if start.elapsed() > timeout {
            let names: Vec<String> = instances.iter().map(|c| c.name.clone()).collect();
            let diff: Vec<String> = prints[0]
                .as_object()
                .unwrap()
                .keys()
                .chain(prints[1].as_object().unwrap().keys())
                .filter(|k| prints[0].get(*k) != prints[1].get(*k))
                .cloned()
                .collect();
            panic!(
                "instances {names:?} still differ after {timeout:?}; collections differing: {diff:?}; last: {last}"
            );
        }
        last = prints[0].clone();
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Checks a fingerprint against the workload's oracle: exactly the expected collections (among
/// those named with `prefix`) and, in each, exactly the expected record ids.
pub fn assert_matches_oracle(print: &Value, workload: &Value, prefix: &str) {
    let expected = workload["expected"].as_object().unwrap();
    let present: Vec<&String> =
        print.as_object().unwrap().keys().filter(|k| k.starts_with(prefix)).collect();
    let mut wanted: Vec<&String> = expected.keys().collect();
    wanted.sort();
    assert_eq!(present, wanted, "collections on the instances vs the oracle");
    for (name, ids) in expected {
        assert_eq!(&print[name]["ids"], ids, "records of {name}: lost or resurrected ids");
    }
}

/// The mixed workload (250 iterations, collections named `{prefix}-...`) through `proxy` while
/// `replica` (the proxy's `replica`) is killed (`kill -9`) and restarted: no request fails, the replica owed the writes
/// made while it was down, and after catch-up both instances are identical and as the oracle
/// expects.
pub fn replica_outage_under_workload(
    proxy: &Proxy,
    primary: &Chroma,
    replica: &mut Chroma,
    prefix: &str,
) {
    let workload = spawn_workload(proxy, prefix, 250);
    wait_until("the workload is under way", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= 30
    });
    replica.kill9();
    let before = proxy.served("primary", "writes");
    wait_until("writes go on without the replica", Duration::from_secs(60), || {
        proxy.served("primary", "writes") >= before + 60
    });
    let backlog = proxy.instance_status("replica")["replication_lag"]["entries"].as_i64().unwrap();
    assert!(backlog > 0, "the replica owes the writes made while it was down");
    replica.restart();
    let result = python_result(&workload.wait_with_output().unwrap());
    assert_eq!(result["failures"].as_array().unwrap().len(), 0, "{}", result["failures"]);
    let print = wait_identical(&[primary, replica], Duration::from_secs(60));
    assert_matches_oracle(&print, &result, &format!("{prefix}-"));
}

/// A primary, a replica, a WAL store and the proxy in front of them (dropped proxy first).
/// Bind every field when destructuring (`wal: _wal`, not `..`): a field left out is dropped at
/// once, and dropping the WAL store stops its PostgreSQL.
pub struct Stack {
    pub proxy: Proxy,
    pub primary: Chroma,
    pub replica: Chroma,
    pub wal: WalBackend,
}

impl Stack {
    /// Starts both instances and the proxy on `wal` with these extra settings.
    pub fn start(wal: WalBackend, settings: &[(&str, &str)]) -> Self {
        let primary = Chroma::start("primary");
        let replica = Chroma::start("replica");
        let db = wal.database_url();
        let mut all = vec![("DATABASE_URL", db.as_str())];
        all.extend_from_slice(settings);
        let proxy = Proxy::start(&primary, &[&replica], &all);
        Self { proxy, primary, replica, wal }
    }
}

/// [`fingerprint`] with each collection's own metadata, and these tenants' databases and
/// collections (see tests/py/fingerprint.py).
pub fn fingerprint_deep(instance: &Chroma, tenants: &[String]) -> Value {
    let mut args = vec![instance.url(), "--deep".to_string()];
    args.extend(tenants.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python_result(&python("fingerprint.py", &args))
}
