//! Bad configuration stops the binary with exit status 2 and one line naming the setting.

mod support;

use std::process::Command;

use support::tls::ca;

fn run(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run chroma-ha");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_primary_url_exits_2_naming_it() {
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("PRIMARY_URL"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn a_wildcard_listen_address_without_advertise_url_exits_2_naming_it() {
    let (code, stderr) =
        run(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("LISTEN_ADDR", "0.0.0.0:8080")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ADVERTISE_URL") && stderr.contains("wildcard"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    let (code, stderr) = run(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("LEASE_TTL", "200ms")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("LEASE_TTL"), "{stderr}");
}

#[test]
fn ratio_out_of_range_exits_2_naming_it() {
    let (code, stderr) =
        run(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("READ_REPLICA_RATIO", "1.7")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("READ_REPLICA_RATIO") && stderr.contains("1.7"), "{stderr}");
}

#[test]
fn unparsable_url_exits_2_naming_it() {
    let (code, stderr) =
        run(&[("PRIMARY_URL", "http://127.0.0.1:1"), ("REPLICA_URL", "http://exa mple:80")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("REPLICA_URL"), "{stderr}");
}

#[test]
fn bad_config_file_value_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chroma-ha.toml");
    std::fs::write(&path, "primary_url = \"http://127.0.0.1:1\"\ncheck_interval = \"soon\"\n")
        .unwrap();
    let (code, stderr) = run(&[("CHROMA_HA_CONFIG", path.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("CHECK_INTERVAL"), "{stderr}");
}

#[test]
fn flags_override_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
        .env_clear()
        .env("PRIMARY_URL", "http://127.0.0.1:1")
        .args(["--read-replica-ratio", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("READ_REPLICA_RATIO"));
}

#[test]
fn a_bad_token_entry_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\nname = \"ok\"\ntoken = \"0123456789abcdef\"\nrole = \"read\"\ntenant = \"t\"\ndatabases = [\"*\"]\n\
         [[tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef-2\"\nrole = \"superuser\"\ntenant = \"t\"\ndatabases = [\"*\"]\n",
    )
    .unwrap();
    let (code, stderr) = run(&[
        ("PRIMARY_URL", "http://127.0.0.1:1"),
        ("AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("AUTH_TOKENS_FILE") && stderr.contains("tokens[1] (`ci`)"), "{stderr}");
    assert!(!stderr.contains("0123456789abcdef"), "a token reached the output: {stderr}");

    // Tokens in the --config file are read too, beside its settings.
    let config = dir.path().join("chroma-ha.toml");
    std::fs::write(
        &config,
        "primary_url = \"http://127.0.0.1:1\"\n[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\nrole = \"read\"\ntenant = \"t\"\ndatabases = [\"*\"]\n",
    )
    .unwrap();
    let (code, stderr) = run(&[("CHROMA_HA_CONFIG", config.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tokens[0] (`x`): sha256 must be 64 hex digits"), "{stderr}");
}

#[test]
fn https_instance_urls_are_accepted() {
    let (code, stderr) = run(&[
        ("PRIMARY_URL", "https://127.0.0.1:1"),
        ("REPLICA_URL", "https://localhost:2,http://127.0.0.1:3"),
        ("READ_REPLICA_RATIO", "2"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("READ_REPLICA_RATIO"), "{stderr}");
    assert!(!stderr.contains("_URL"), "the https:// URLs are fine: {stderr}");
}

#[test]
fn tls_settings_that_cannot_work_exit_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca().issue(dir.path(), "proxy");
    let other = ca().issue(dir.path(), "other");
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let other_key = other.key.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    // The TLS settings given, the setting the error must name, and what it must say.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 6] = [
        (&[("TLS_CERT_FILE", cert)], "TLS_KEY_FILE", "required with TLS_CERT_FILE"),
        (&[("TLS_KEY_FILE", key)], "TLS_CERT_FILE", "required with TLS_KEY_FILE"),
        (&[("TLS_CERT_FILE", missing), ("TLS_KEY_FILE", key)], "TLS_CERT_FILE", "cannot read"),
        (&[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", cert)], "TLS_KEY_FILE", "no PEM private key"),
        (
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", other_key)],
            "TLS_KEY_FILE",
            "unusable with TLS_CERT_FILE",
        ),
        (&[("UPSTREAM_CA_FILE", key)], "UPSTREAM_CA_FILE", "no PEM certificate"),
    ];
    let secret = std::fs::read_to_string(&other.key).unwrap();
    let secret: Vec<&str> = secret.lines().filter(|line| !line.starts_with("-----")).collect();
    for (settings, setting, why) in cases {
        let mut env = vec![("PRIMARY_URL", "https://127.0.0.1:1")];
        env.extend_from_slice(settings);
        let (code, stderr) = run(&env);
        assert_eq!(code, Some(2), "{settings:?}: {stderr}");
        assert!(stderr.contains(setting) && stderr.contains(why), "{settings:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        assert!(secret.iter().all(|line| !stderr.contains(line)), "the key leaked: {stderr}");
    }
}

/// Open mode on a non-loopback address is said once at startup; on loopback it is not.
#[test]
fn open_mode_on_a_public_address_is_warned_about() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let started = |listen: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_chroma-ha"))
            .env_clear()
            .env("PRIMARY_URL", "http://127.0.0.1:1")
            .env("LISTEN_ADDR", listen)
            .env("ADVERTISE_URL", "http://10.0.0.1:8080")
            .current_dir(dir.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let done = line.contains("listening on");
            lines.push(line);
            if done {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        lines.join("\n")
    };
    let public = started("0.0.0.0:0");
    let warnings = public.lines().filter(|l| l.contains("no tokens are declared")).count();
    assert_eq!(warnings, 1, "{public}");
    assert!(public.contains("may read, write and reset every tenant"), "{public}");
    let local = started("127.0.0.1:0");
    assert!(!local.contains("no tokens are declared"), "{local}");
}
