//! The dashboard in a real browser (headless Chromium): it loads from the proxy alone, shows
//! each instance's state, fits a phone's width, says so when no proxy answers, shows a killed
//! replica down within 5 s, and its WAL backlog number rises as writes are made while the
//! replica is down.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{DB, Stack, WalBackend, chromium, get, post};

fn headless(args: &[&str]) -> String {
    headless_at("1100,900", args)
}

/// Headless Chromium with a window of `size` (`width,height`).
fn headless_at(size: &str, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", &format!("--window-size={size}"), "--virtual-time-budget=3000"])
        .args(args)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This test's own directory for files it writes.
fn shot_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The page's DOM once its scripts have run.
fn dom(url: &str) -> String {
    headless(&["--dump-dom", url])
}

/// The text of the element with this id in `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\">");
    let start = dom.find(&open).unwrap_or_else(|| panic!("no #{id} in {dom}")) + open.len();
    let end = dom[start..].find('<').unwrap() + start;
    &dom[start..end]
}

#[test]
fn the_dashboard_shows_state_backlog_and_a_dead_replica() {
    let mut stack =
        Stack::start(WalBackend::sqlite(), &[("CHECK_INTERVAL", "1"), ("READ_REPLICA_RATIO", "1")]);
    let url = stack.proxy.url();
    let dashboard = format!("{url}/dashboard");
    let page = get(&dashboard);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'none'"));
    let created = post(&format!("{url}{DB}/collections"), json!({"name": "shown"}));
    let id = created.body["id"].as_str().unwrap().to_string();

    let first = dom(&dashboard);
    assert!(first.contains("data-fresh=\"true\""), "the page got /status: {first}");
    assert!(first.contains("data-fits=\"true\""), "{first}");
    let proxies = text_of(&first, "proxies");
    assert!(proxies.contains("leads at epoch 1") && proxies.contains("no follower"), "{proxies}");
    let phone = headless_at("390,844", &["--dump-dom", &dashboard]);
    assert!(phone.contains("data-fits=\"true\""), "readable on a phone's width: {phone}");
    assert!(phone.contains("data-instance=\"replica\""), "{phone}");
    // The same page with no proxy behind it says so instead of showing figures.
    let alone = shot_dir().join("alone.html");
    std::fs::write(&alone, page.body.as_str().unwrap()).unwrap();
    let stale = dom(&format!("file://{}", alone.display()));
    assert!(stale.contains("id=\"stale\" role=\"alert\" class=\"shown\""), "{stale}");
    assert!(stale.contains("The proxy does not answer."), "{stale}");
    assert!(first.contains("data-instance=\"replica\" data-state=\"healthy\""), "{first}");
    assert!(first.contains("data-instance=\"primary\" data-state=\"healthy\""), "{first}");

    // The replica dies; a read sent to it marks it down at once.
    stack.replica.kill9();
    let killed = Instant::now();
    assert_eq!(get(&format!("{url}{DB}/collections/{id}/count")).status, 200);
    loop {
        let now = dom(&dashboard);
        if now.contains("data-instance=\"replica\" data-state=\"unhealthy\"") {
            assert!(now.contains("data-kind=\"down\""), "the transition is listed: {now}");
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "replica not shown down: {now}");
    }

    // Writes while it is down: the backlog number rises with them.
    let add = |n: usize| {
        let body = json!({"ids": [format!("r{n}")], "embeddings": [[n as f64, 1.0]]});
        assert_eq!(post(&format!("{url}{DB}/collections/{id}/add"), body).status, 201);
    };
    (0..3).for_each(add);
    assert_eq!(text_of(&dom(&dashboard), "pending"), "3");
    (3..5).for_each(add);
    assert_eq!(text_of(&dom(&dashboard), "pending"), "5");

    // What an operator sees now (DASHBOARD_SCREENSHOT=docs/dashboard.png keeps it).
    let png = shot_dir().join("dashboard.png");
    headless(&[&format!("--screenshot={}", png.display()), &dashboard]);
    let size = std::fs::metadata(&png).unwrap().len();
    assert!(size > 10_000, "a screenshot of a rendered page ({size} bytes)");
    if let Ok(target) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, Path::new(&target)).unwrap();
    }
}
