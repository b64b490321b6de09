//! TLS for the tests, all made at run time (no certificate is committed): a certificate
//! authority held in memory, once per test process; server certificates it issues for
//! 127.0.0.1, written into the caller's directory; an HTTPS agent trusting that CA; and
//! [`TlsFront`], a TLS-terminating stand-in that copies bytes to and from a plain port (in
//! front of a real Chroma server, where a deployment would put nginx).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The CA every test of this process trusts: the one [`https_agent`] verifies against.
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("chroma-ha test CA"))
}

/// Files of one server certificate.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The issuing CA's certificate (PEM), to verify it with.
    pub ca: PathBuf,
}

impl TestCa {
    /// A new CA, unrelated to any other.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for 127.0.0.1 and localhost, written into `dir` as
    /// `{name}.pem` and `{name}-key.pem`, with the CA's certificate as `{name}-ca.pem`.
    pub fn issue(&self, dir: &Path, name: &str) -> ServerFiles {
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = ServerFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            ca: dir.join(format!("{name}-ca.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, self.pem()).unwrap();
        files
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ureq's TLS settings for HTTPS to servers of [`ca`].
pub fn ureq_tls() -> ureq::tls::TlsConfig {
    let root = ureq::tls::Certificate::from_pem(ca().pem().as_bytes()).unwrap().to_owned();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .unversioned_rustls_crypto_provider(provider())
        .build()
}

/// A TLS-terminating stand-in: accepts TLS on its own loopback port and copies each
/// connection's bytes both ways to `127.0.0.1:backend`. When the backend refuses, the client's
/// connection is closed before the handshake, as a refused connection would be. Stops on drop.
pub struct TlsFront {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    /// Serves `files`' certificate in front of `backend`.
    pub fn start(files: &ServerFiles, backend: u16) -> Self {
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut chroma) = TcpStream::connect(("127.0.0.1", backend)).await else {
                        return;
                    };
                    if let Ok(mut tls) = acceptor.accept(client).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut chroma).await;
                    }
                });
            }
        });
        Self { port, runtime: Some(runtime) }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
