//! One HTTP call to one Chroma instance, with the outcome classified for failover: did the
//! instance die, hang, drop a connection, or did it answer?
//!
//! An answer's body is taken as the caller's type says ([`TakeBody`]): whole ([`Bytes`]), or,
//! for a record read, [`Body`]: streamed when the instance declares it (`Content-Length`) larger
//! than STREAM_THRESHOLD, else whole. A whole body must be in within the call's timeout, so an
//! instance dying or hanging mid-answer is failed over like any other failure. A streamed body
//! has no deadline as a whole, since a big answer to a slow client may take minutes: the call's
//! timeout bounds the wait for the answer's head, then each wait for the next chunk, so a
//! transfer that keeps moving is never cut and a stalled one is (DESIGN 16).
//!
//! Also where every HTTP client to instances is built ([`client`]): the failover loop's, the
//! health probes' and replay's, alike, plain TCP for `http://` and rustls for `https://`.
//!
//! Never retries and never picks an instance: the caller owns the failover loop. Never logs
//! headers or bodies, and never holds more of a streamed body than the chunk in hand: dropping
//! the stream (the client went away) closes the connection to the instance.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::rt::time::{self, Sleep};
use actix_web::web::Bytes;
use awc::error::{PayloadError, SendRequestError};
use futures_util::Stream;
use log::warn;

use crate::chroma::headers::request_headers;
use crate::leadership::Leadership;
use crate::tls::UpstreamTls;

/// Largest upstream answer buffered (a streamed one has no limit); answers are buffered whole so
/// that an instance dying mid-answer is failed over like any other death.
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

/// An answer from an instance, its body taken as `B` says: whole ([`Bytes`]) unless the caller
/// asked for a [`Body`].
pub struct UpstreamResponse<B = Bytes> {
    /// Chroma's status code.
    pub status: StatusCode,
    /// Chroma's headers, unfiltered.
    pub headers: HeaderMap,
    /// Chroma's body.
    pub body: B,
}

impl<B> UpstreamResponse<B> {
    /// The same answer with its body changed by `f`.
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> UpstreamResponse<C> {
        UpstreamResponse { status: self.status, headers: self.headers, body: f(self.body) }
    }
}

/// The body of an answer that may be streamed: a record read's, which has nothing to rewrite.
pub enum Body {
    /// Declared at most STREAM_THRESHOLD, or not declared: read whole, so an instance dying
    /// mid-answer is failed over.
    Whole(Bytes),
    /// Declared larger: passed on as it arrives. Once a byte of it went out, it cannot be
    /// re-sent from another instance; a break cuts the client's answer off.
    Stream(Chunks),
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::Whole(bytes)
    }
}

/// What the body of one call's answer is taken within.
pub struct Call<'a> {
    /// The call's timeout: for the whole of a whole body; for each gap of a streamed one.
    timeout: Duration,
    /// When a whole body must be in.
    deadline: Instant,
    /// Declared lengths above this are streamed, where the body type allows it.
    stream_above: u64,
    /// The method and URL, for the log line of a stream that breaks off.
    origin: (&'a Method, &'a str),
}

/// How the body of an answer is taken once its head is in; the type decides whether it may be
/// streamed, so that an answer the proxy must read or rewrite never is.
pub trait TakeBody: From<Bytes> {
    /// The body of `response`, within `call`'s bounds.
    fn take(
        response: awc::ClientResponse,
        call: Call<'_>,
    ) -> impl Future<Output = Result<Self, UpstreamError>>;
}

impl TakeBody for Bytes {
    fn take(
        response: awc::ClientResponse,
        call: Call<'_>,
    ) -> impl Future<Output = Result<Self, UpstreamError>> {
        whole(response, call.timeout, call.deadline)
    }
}

impl TakeBody for Body {
    async fn take(response: awc::ClientResponse, call: Call<'_>) -> Result<Self, UpstreamError> {
        match declared_length(&response) {
            Some(length) if length > call.stream_above => {
                let (method, url) = call.origin;
                let origin = format!("{method} {url}, streamed");
                Ok(Self::Stream(Chunks::new(response, Some(length), call.timeout, origin)))
            }
            _ => whole(response, call.timeout, call.deadline).await.map(Self::Whole),
        }
    }
}

/// A leader's answer as a follower relays it: streamed as [`Body`] streams, and also when it
/// declares no length, since the leader answers so only what it streams itself (a large record
/// read).
pub struct Relayed(pub Body);

impl From<Bytes> for Relayed {
    fn from(bytes: Bytes) -> Self {
        Self(Body::Whole(bytes))
    }
}

impl TakeBody for Relayed {
    async fn take(response: awc::ClientResponse, call: Call<'_>) -> Result<Self, UpstreamError> {
        if declared_length(&response).is_some() {
            return Body::take(response, call).await.map(Self);
        }
        let (method, url) = call.origin;
        let origin = format!("{method} {url}, relayed");
        Ok(Self(Body::Stream(Chunks::new(response, None, call.timeout, origin))))
    }
}

/// The body length an answer's head declares (`Content-Length`), if any.
fn declared_length(response: &awc::ClientResponse) -> Option<u64> {
    let value = response.headers().get(CONTENT_LENGTH)?;
    value.to_str().ok()?.parse().ok()
}

/// The error of an answer that ended short of its declared length. awc takes a connection
/// closed cleanly mid-body for the body's end (a `kill -9` of the instance closes it so when
/// nothing is unread on its side), so the length is checked here.
fn short(got: u64, declared: u64) -> UpstreamError {
    UpstreamError::Broken(format!("the answer broke off after {got} of {declared} bytes"))
}

/// The whole body of `response`, by `deadline`; `timeout` is the one the call had.
async fn whole(
    response: awc::ClientResponse,
    timeout: Duration,
    deadline: Instant,
) -> Result<Bytes, UpstreamError> {
    let declared = declared_length(&response);
    let mut response = response.timeout(deadline.saturating_duration_since(Instant::now()));
    let body = response.body().limit(MAX_RESPONSE_BYTES).await.map_err(|e| match e {
        PayloadError::Overflow => UpstreamError::TooLarge,
        PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            UpstreamError::Timeout(timeout)
        }
        other => UpstreamError::Broken(format!("reading the answer: {other}")),
    })?;
    match declared {
        Some(length) if length != body.len() as u64 => Err(short(body.len() as u64, length)),
        _ => Ok(body),
    }
}

/// A streamed answer's body: the instance's chunks as they arrive, each within `gap` of the
/// one before. It owns the connection to the instance: dropped, it closes it.
pub struct Chunks {
    response: awc::ClientResponse,
    /// The length the answer's head declared, if it did (a chunked answer's end is its last
    /// chunk).
    declared: Option<u64>,
    gap: Duration,
    idle: Pin<Box<Sleep>>,
    /// Bytes passed on so far.
    sent: u64,
    /// Whether it broke off (and so has ended).
    broke: bool,
    /// `POST http://instance/api/..., streamed`, for the log line of a break.
    origin: String,
}

impl Chunks {
    fn new(
        response: awc::ClientResponse,
        declared: Option<u64>,
        gap: Duration,
        origin: String,
    ) -> Self {
        let idle = Box::pin(time::sleep(gap));
        Self { response, declared, gap, idle, sent: 0, broke: false, origin }
    }
}

impl Stream for Chunks {
    type Item = Result<Bytes, UpstreamError>;

    /// The next chunk; a break is logged and returned once, then the stream ends.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.broke {
            return Poll::Ready(None);
        }
        let error = match Pin::new(&mut this.response).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent += chunk.len() as u64;
                this.idle.as_mut().reset(time::Instant::now() + this.gap);
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(e))) => {
                UpstreamError::Broken(format!("the answer broke off: {e}"))
            }
            Poll::Ready(None) if this.declared.is_some_and(|d| this.sent < d) => {
                short(this.sent, this.declared.unwrap_or_default())
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending if this.idle.as_mut().poll(cx).is_ready() => {
                UpstreamError::Timeout(this.gap)
            }
            Poll::Pending => return Poll::Pending,
        };
        this.broke = true;
        warn!("{}: {error} after {} bytes; the client's answer is cut off", this.origin, this.sent);
        Poll::Ready(Some(Err(error)))
    }
}

/// The HTTP client of one worker thread (awc clients are not `Send`).
pub struct Upstream {
    client: awc::Client,
    stream_above: u64,
}

impl Upstream {
    /// A client whose own calls (discovery) each get `timeout`, and [`Body`] answers declared
    /// larger than `stream_above` bytes are streamed; [`Upstream::send`] takes its own timeout.
    pub fn new(tls: &UpstreamTls, timeout: Duration, stream_above: u64) -> Self {
        Self { client: client(tls, timeout), stream_above }
    }

    /// The underlying client, for the proxy's own calls (collection discovery).
    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// Sends one request to the instance at `base_url` and takes its answer's body as `B` says:
    /// the head within `timeout`, a whole body too, a streamed one with `timeout` for each gap.
    /// A write's request body is a [`FencedBody`].
    pub async fn send<'h, B: TakeBody>(
        &self,
        base_url: &str,
        method: &Method,
        (path_and_query, headers, body): (&str, Headers<'h>, impl MessageBody + 'static),
        timeout: Duration,
    ) -> Result<UpstreamResponse<B>, UpstreamError> {
        let deadline = Instant::now() + timeout;
        let url = format!("{base_url}{path_and_query}");
        let mut request = self.client.request(method.clone(), &url).timeout(timeout);
        let headers: Box<dyn Iterator<Item = (&HeaderName, &HeaderValue)>> = match headers {
            Headers::ForChroma(client) => Box::new(request_headers(client)),
            Headers::Exactly(these) => Box::new(these.iter()),
        };
        for (name, value) in headers {
            request = request.append_header((name.clone(), value.clone()));
        }
        let response = request.send_body(body).await.map_err(|e| send_error(e, timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let call =
            Call { timeout, deadline, stream_above: self.stream_above, origin: (method, &url) };
        let body = B::take(response, call).await?;
        Ok(UpstreamResponse { status, headers, body })
    }
}

/// The headers of an upstream request.
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// Of the client's headers, those Chroma needs (an instance is called).
    ForChroma(&'a HeaderMap),
    /// These, as they are (the leader proxy is called; see `http::follow`).
    Exactly(&'a HeaderMap),
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
        _: &mut Context<'_>,
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use futures_util::StreamExt;

    use super::*;

    /// A server that answers each of `answers` connections with a head declaring 100 bytes
    /// and then does `body` on the connection; its base URL.
    fn serve(answers: usize, body: fn(&mut TcpStream)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(answers) {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut byte = [0];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    request.push(byte[0]);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
                stream.write_all(head.as_bytes()).unwrap();
                body(&mut stream);
            }
        });
        url
    }

    /// Sends a GET and collects the chunks of its answer, streamed above 10 bytes.
    async fn streamed(url: &str, timeout: Duration) -> Vec<Result<Bytes, UpstreamError>> {
        let upstream = Upstream::new(&UpstreamTls::default(), timeout, 10);
        let headers = HeaderMap::new();
        let request = ("/api/v2/x", Headers::ForChroma(&headers), Bytes::new());
        let answer = upstream.send::<Body>(url, &Method::GET, request, timeout).await;
        let Body::Stream(chunks) = answer.unwrap().body else {
            panic!("100 bytes declared, over the threshold of 10: streamed");
        };
        chunks.collect().await
    }

    #[actix::test]
    async fn an_answer_short_of_its_declared_length_is_broken_whole_or_streamed() {
        // 50 of the 100 bytes, then a clean close, as from an instance killed mid-answer.
        let url = serve(2, |stream| stream.write_all(&[b'x'; 50]).unwrap());
        let timeout = Duration::from_secs(5);
        let upstream = Upstream::new(&UpstreamTls::default(), timeout, 10);
        let headers = HeaderMap::new();
        let request = ("/api/v2/x", Headers::ForChroma(&headers), Bytes::new());
        let whole = upstream.send::<Bytes>(&url, &Method::GET, request, timeout).await;
        let error = whole.err().expect("a short answer is not whole");
        assert!(error.fails_over(), "{error}");
        let items = streamed(&url, timeout).await;
        assert_eq!(items.iter().flatten().map(Bytes::len).sum::<usize>(), 50);
        let last = items.last().unwrap();
        assert!(matches!(last, Err(UpstreamError::Broken(_))), "the stream ends in an error");
    }

    #[actix::test]
    async fn a_stream_that_keeps_moving_outlasts_the_timeout_and_a_stalled_one_is_cut() {
        let timeout = Duration::from_secs(1);
        // 1.5 s in all, never more than 0.1 s between two chunks.
        let moving = serve(1, |stream| {
            for _ in 0..15 {
                std::thread::sleep(Duration::from_millis(100));
                stream.write_all(&[b'x'; 6]).unwrap();
            }
            stream.write_all(&[b'x'; 100 - 15 * 6]).unwrap();
        });
        let started = Instant::now();
        let items = streamed(&moving, timeout).await;
        assert!(started.elapsed() > timeout);
        assert!(items.iter().all(Result::is_ok));
        assert_eq!(items.iter().flatten().map(Bytes::len).sum::<usize>(), 100);
        let stalled = serve(1, |stream| {
            stream.write_all(&[b'x'; 10]).unwrap();
            std::thread::sleep(Duration::from_secs(10));
        });
        let items = streamed(&stalled, timeout).await;
        assert_eq!(items.iter().flatten().map(Bytes::len).sum::<usize>(), 10);
        let last = items.last().unwrap();
        assert!(matches!(last, Err(UpstreamError::Timeout(t)) if *t == timeout), "{last:?}");
    }
}
