//! One HTTP call to one Chroma instance, with the outcome classified for failover: did the
//! instance die, hang, drop a connection, or did it answer?
//!
//! Also where every HTTP client to instances is built ([`client`]): the failover loop's, the
//! health probes' and replay's, alike, plain TCP for `http://` and rustls for `https://`.
//!
//! Never retries and never picks an instance: the caller owns the failover loop. Never logs
//! headers or bodies.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};

use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use awc::error::{PayloadError, SendRequestError};

use crate::chroma::headers::request_headers;
use crate::leadership::Leadership;
use crate::tls::UpstreamTls;

/// Largest upstream answer buffered; answers are buffered whole so that an instance dying
/// mid-answer is failed over like any other death.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Longest TCP connect, and longest TLS handshake after it; a refused connection returns at
/// once, this bounds a silent network.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP client to instances whose calls each get `timeout` for the whole exchange: no
/// redirects followed, no headers but the caller's, an unbounded connection pool, and TLS as
/// `tls` says for `https://` instances. Every client the proxy builds comes from here.
pub fn client(tls: &UpstreamTls, timeout: Duration) -> awc::Client {
    let connect = CONNECT_TIMEOUT.min(timeout);
    let mut connector = awc::Connector::new().timeout(connect).limit(0);
    if let Some(config) = tls.client_config() {
        connector = connector.rustls_0_23(config).handshake_timeout(connect);
    }
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(timeout)
        .finish()
}

/// What went wrong on an upstream call, and therefore what the proxy does next.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect: the instance is down. Mark it down, try the next one.
    #[error("connection failed: {0}")]
    Connect(String),
    /// No complete answer in time: the instance hangs, or is only slow. Probe it now (a
    /// failed probe marks it down); a read tries the next one, a write does not (it may still
    /// run there).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An established connection broke (a crash, or a stale keep-alive). Try the next one and
    /// probe this one now instead of guessing.
    #[error("connection broken: {0}")]
    Broken(String),
    /// The answer is larger than [`MAX_RESPONSE_BYTES`]; another instance would answer the same.
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The proxy could not build the request; no instance would accept it.
    #[error("invalid upstream request: {0}")]
    Request(String),
}

impl UpstreamError {
    /// Whether the same request may be sent to another instance.
    pub fn fails_over(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout(_) | Self::Broken(_))
    }

    /// Whether the instance may have received the request, and so may execute it yet: only a
    /// refused connection proves it did not.
    pub fn may_have_arrived(&self) -> bool {
        !matches!(self, Self::Connect(_))
    }

    /// Whether the instance is certainly unusable (as opposed to suspect: slow is not dead,
    /// and a probe decides).
    pub fn marks_down(&self) -> bool {
        matches!(self, Self::Connect(_))
    }

    /// Whether the instance may still be executing the request: a write that timed out must
    /// not be sent to another instance, which would let this one apply it late, over newer
    /// writes.
    pub fn may_still_run(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// A complete answer from an instance.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// Chroma's status code.
    pub status: StatusCode,
    /// Chroma's headers, unfiltered.
    pub headers: HeaderMap,
    /// Chroma's body, whole.
    pub body: Bytes,
}

/// The HTTP client of one worker thread (awc clients are not `Send`).
pub struct Upstream {
    client: awc::Client,
}

impl Upstream {
    /// A client whose own calls (discovery) each get `timeout`; [`Upstream::send`] takes its
    /// own.
    pub fn new(tls: &UpstreamTls, timeout: Duration) -> Self {
        Self { client: client(tls, timeout) }
    }

    /// The underlying client, for the proxy's own calls (collection discovery).
    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// Sends one request to the instance at `base_url` and reads the whole answer, all within
    /// `timeout`. A write's body is a [`FencedBody`].
    pub async fn send(
        &self,
        base_url: &str,
        method: &Method,
        (path_and_query, headers, body): (&str, &HeaderMap, impl MessageBody + 'static),
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deadline = Instant::now() + timeout;
        let mut request = self
            .client
            .request(method.clone(), format!("{base_url}{path_and_query}"))
            .timeout(timeout);
        for (name, value) in request_headers(headers) {
            request = request.append_header((name.clone(), value.clone()));
        }
        let response = request.send_body(body).await.map_err(|e| send_error(e, timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut response = response.timeout(deadline.saturating_duration_since(Instant::now()));
        let body = response.body().limit(MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            PayloadError::Overflow => UpstreamError::TooLarge,
            PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                UpstreamError::Timeout(timeout)
            }
            other => UpstreamError::Broken(format!("reading the answer: {other}")),
        })?;
        Ok(UpstreamResponse { status, headers, body })
    }
}

/// A write's body, handed to the connection only while this proxy may execute (DESIGN 12): the
/// leader's deadline is checked when the connection asks for the body, the last moment before
/// its bytes leave, so that a leader frozen after its earlier checks (SIGSTOP, a paused VM)
/// sends nothing once it thaws past its lease. Without its body Chroma executes nothing.
pub struct FencedBody {
    body: Option<Bytes>,
    len: u64,
    leadership: Arc<Leadership>,
}

impl FencedBody {
    /// `body`, sent only while `leadership` may execute.
    pub fn new(body: Bytes, leadership: &Arc<Leadership>) -> Self {
        Self { len: body.len() as u64, body: Some(body), leadership: leadership.clone() }
    }
}

impl MessageBody for FencedBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let this = self.get_mut();
        Poll::Ready(match this.body.take() {
            None => None,
            Some(_) if !this.leadership.may_execute() => Some(Err(io::Error::other(
                "this proxy's leader lease lapsed: the write was not sent",
            ))),
            Some(body) => Some(Ok(body)),
        })
    }
}

/// What a failed send means for failover; `timeout` is the one the call had.
pub fn send_error(error: SendRequestError, timeout: Duration) -> UpstreamError {
    match error {
        SendRequestError::Connect(e) => UpstreamError::Connect(e.to_string()),
        SendRequestError::Timeout => UpstreamError::Timeout(timeout),
        SendRequestError::Url(e) => UpstreamError::Request(e.to_string()),
        SendRequestError::Http(e) => UpstreamError::Request(e.to_string()),
        other => UpstreamError::Broken(other.to_string()),
    }
}
