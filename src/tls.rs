//! TLS: the listener's certificate and key (TLS_CERT_FILE, TLS_KEY_FILE), and how clients to
//! `https://` instances verify them (the system's roots, or UPSTREAM_CA_FILE), loaded from their
//! PEM files once, at startup, into rustls configurations.
//!
//! A bad or unreadable file is a [`ConfigError`] naming the setting and what is wrong, so the
//! process exits 2 before binding. This module never logs, never reads a file after startup and
//! never puts a file's contents into an error (a key file's bytes are secret): errors say which
//! file and what is wrong with it. Building clients is [`crate::upstream`]'s; this module only
//! hands it the verification config.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{Config, ConfigError};

/// The TLS of one proxy process.
pub struct Tls {
    /// The listener's config when TLS_CERT_FILE and TLS_KEY_FILE are set: the proxy serves HTTPS.
    pub listener: Option<ServerConfig>,
    /// How the proxy's clients verify `https://` instances.
    pub upstream: UpstreamTls,
}

impl Tls {
    /// Loads every TLS file `config` names: an error for the listener's first bad file, and
    /// one for UPSTREAM_CA_FILE.
    pub fn load(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let listener = config.tls_files().map(|(cert, key)| server_config(cert, key)).transpose();
        let urls = config.instances().into_iter().map(|spec| spec.url);
        let upstream = UpstreamTls::load(urls, config.upstream_ca_file.as_deref());
        match (listener, upstream) {
            (Ok(listener), Ok(upstream)) => Ok(Self { listener, upstream }),
            (listener, upstream) => Err(listener.err().into_iter().chain(upstream.err()).collect()),
        }
    }
}

/// The rustls client config of every client the proxy builds to instances, shared (cloning is
/// cheap); none when no instance needs TLS, so plain `http://` goes through awc exactly as it
/// would without TLS support.
#[derive(Clone, Default)]
pub struct UpstreamTls(Option<Arc<ClientConfig>>);

impl UpstreamTls {
    /// Verification for clients to these base URLs: against the CAs in `ca_file` if given, else
    /// the system's roots. Built when a URL is `https://` or a CA file is given (so that a bad
    /// one is refused at startup either way).
    pub fn load(
        urls: impl IntoIterator<Item = String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let https = urls.into_iter().any(|url| url.starts_with("https://"));
        if !https && ca_file.is_none() {
            return Ok(Self(None));
        }
        let roots = match ca_file {
            Some(path) => ca_roots(path),
            None => system_roots(),
        }
        .map_err(|message| ConfigError { setting: "UPSTREAM_CA_FILE".into(), message })?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError {
                setting: "UPSTREAM_CA_FILE".into(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only, as over plain TCP: the same exchange, failure classification and codec.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(Some(Arc::new(config))))
    }

    /// The config to hand awc's connector, if any instance is reached over TLS.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.0.clone()
    }
}

/// ring, named explicitly rather than through rustls's process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setting_error(setting: &str, path: &Path, why: String) -> ConfigError {
    ConfigError { setting: setting.into(), message: format!("{}: {why}", path.display()) }
}

/// The listener's config from a PEM certificate chain and its PEM private key.
fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, ConfigError> {
    let chain =
        certificates(cert_file).map_err(|why| setting_error("TLS_CERT_FILE", cert_file, why))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| setting_error("TLS_KEY_FILE", key_file, pem_error(e, "private key")))?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| {
            setting_error("TLS_KEY_FILE", key_file, format!("unusable with TLS_CERT_FILE: {e}"))
        })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect())
        .map_err(|e| pem_error(e, "certificate"))?;
    if certs.is_empty() {
        return Err(pem_error(pem::Error::NoItemsFound, "certificate"));
    }
    Ok(certs)
}

/// The CAs of a PEM bundle.
fn ca_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path)
        .map_err(|why| format!("{}: {why}", path.display()))?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            format!("{}: certificate {} is not usable as a CA: {e}", path.display(), i + 1)
        })?;
    }
    Ok(roots)
}

/// The operating system's CA store.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "unset, and no system CA certificate was found to verify https:// instances with ({}); name a PEM bundle",
            if why.is_empty() { "none installed".to_string() } else { why.join("; ") }
        ));
    }
    Ok(roots)
}

/// What is wrong with a PEM file, without quoting any of it.
fn pem_error(error: pem::Error, what: &str) -> String {
    match error {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no PEM {what} in it"),
        pem::Error::SectionTooLarge => "a PEM section is larger than 256 MB".to_string(),
        _ => format!("not a valid PEM {what}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A directory with a self-signed certificate for 127.0.0.1 (`cert.pem`, `key.pem`) and
    /// another key (`other-key.pem`).
    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other-key.pem"), other.serialize_pem()).unwrap();
        dir
    }

    fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
        dir.path().join(name)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_listener() {
        let dir = files();
        assert!(server_config(&path(&dir, "cert.pem"), &path(&dir, "key.pem")).is_ok());
    }

    #[test]
    fn bad_listener_files_are_named_and_never_quoted() {
        let dir = files();
        let key = std::fs::read_to_string(path(&dir, "key.pem")).unwrap();
        let cases = [
            ("missing.pem", "key.pem", "TLS_CERT_FILE", "cannot read it"),
            ("key.pem", "key.pem", "TLS_CERT_FILE", "no PEM certificate"),
            ("cert.pem", "missing.pem", "TLS_KEY_FILE", "cannot read it"),
            ("cert.pem", "cert.pem", "TLS_KEY_FILE", "no PEM private key"),
            ("cert.pem", "other-key.pem", "TLS_KEY_FILE", "unusable with TLS_CERT_FILE"),
        ];
        for (cert, key_file, setting, why) in cases {
            let e = server_config(&path(&dir, cert), &path(&dir, key_file)).err().unwrap();
            assert_eq!(e.setting, setting, "{cert} {key_file}: {e}");
            assert!(e.message.contains(why), "{cert} {key_file}: {e}");
            assert!(e.message.contains(key_file) || e.message.contains(cert), "{e}");
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!e.to_string().contains(line), "the key leaked into: {e}");
            }
        }
        std::fs::write(path(&dir, "garbage.pem"), "-----BEGIN PRIVATE KEY-----\n%%%\n").unwrap();
        let e = server_config(&path(&dir, "cert.pem"), &path(&dir, "garbage.pem")).err().unwrap();
        assert_eq!(e.setting, "TLS_KEY_FILE");
        assert!(!e.message.contains("%%%"), "{e}");
    }

    #[test]
    fn clients_get_tls_only_when_an_instance_needs_it() {
        let http = ["http://127.0.0.1:1".to_string()];
        assert!(UpstreamTls::load(http.clone(), None).unwrap().client_config().is_none());
        let https = ["http://127.0.0.1:1".to_string(), "https://127.0.0.1:2".to_string()];
        let tls = UpstreamTls::load(https, None).unwrap().client_config().unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let dir = files();
        let ca = UpstreamTls::load(http, Some(&path(&dir, "cert.pem"))).unwrap();
        assert!(ca.client_config().is_some(), "a CA file given is loaded, and so checked");
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = files();
        let https = || ["https://127.0.0.1:2".to_string()];
        for (file, why) in [("missing.pem", "cannot read it"), ("key.pem", "no PEM certificate")] {
            let e = UpstreamTls::load(https(), Some(&path(&dir, file))).err().unwrap();
            assert_eq!(e.setting, "UPSTREAM_CA_FILE");
            assert!(e.message.contains(why) && e.message.contains(file), "{e}");
        }
    }
}
