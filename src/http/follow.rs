//! A follower's side of the Chroma API (DESIGN 12): a proxy that does not lead sends every Chroma
//! request, read or write, to the leader, and passes the leader's answer back.
//!
//! - With no leader known, the request is held (at most REQUEST_TIMEOUT) and goes to whoever
//!   leads next, this proxy included.
//! - A leader that cannot be reached, or that answers that it no longer leads, is tried again
//!   once the lease moves, or every [`RETRY_PAUSE`], within the same budget; a leader that is
//!   replaced while it holds the request is abandoned for the new one.
//! - Writes carry an `Idempotency-Key` (the client's, or one made here), so a write sent twice
//!   this way is executed once.
//!
//! Never forwards a request that already was (the [`FORWARDED_BY_HEADER`] marker): a proxy that
//! gets one and does not lead answers 503 NotLeader instead. Never logs a header or a body.
//! Forwards the credentials to the leader, which checks them again, and nothing else of the
//! client's headers beyond what Chroma needs.

use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::web::Bytes;
use futures_util::future::{Either, select};
use log::warn;

use super::error::{ApiError, NOT_LEADER_HEADER};
use super::write::{IDEMPOTENCY_HEADER, TRANSACTION_HEADER};
use super::{Cluster, Worker, path_and_query};
use crate::chroma::headers::request_headers;
use crate::leadership::Target;
use crate::policy::Access;
use crate::upstream::{Headers, Relayed, UpstreamError, UpstreamResponse};

/// Request header naming the proxy that forwarded a request; a request that has it is never
/// forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-chroma-ha-forwarded-by";
/// Pause before the leader is tried again when the lease has not moved.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The client's credentials, which the leader checks again.
const CREDENTIALS: &[&str] = &["authorization", "x-chroma-token"];

/// Where a request is served.
pub enum Routed {
    /// Here: this proxy leads. A write forwarded before under an idempotency key made here
    /// keeps it: the leader that had it may have logged it.
    Here,
    /// By the leader, whose answer this is.
    Answered(Box<UpstreamResponse<Relayed>>),
}

/// Sends the request to the leader unless this proxy leads. `made_key` is the idempotency key
/// made here for a write the client sent without one, once the write was forwarded under it.
pub async fn route(
    req: &HttpRequest,
    (access, body): (Access, &Bytes),
    cluster: &Cluster,
    worker: &Worker,
    made_key: &mut Option<String>,
) -> Result<Routed, ApiError> {
    let leadership = &cluster.leadership;
    // The leader's every request: one look at the view, no subscription, no clock.
    if leadership.target() == Target::Here {
        return Ok(Routed::Here);
    }
    let forwarded = req.headers().contains_key(FORWARDED_BY_HEADER);
    let hold_until = Instant::now() + cluster.request_timeout;
    let mut changes = leadership.subscribe();
    let mut headers = None;
    loop {
        changes.mark_unchanged();
        let leader = match leadership.target() {
            Target::Here => return Ok(Routed::Here),
            Target::Leader(_) | Target::Unknown if forwarded => {
                return Err(ApiError::NotLeader(
                    "the request was forwarded here by another proxy, and is never forwarded twice"
                        .into(),
                ));
            }
            Target::Leader(url) => url,
            Target::Unknown => {
                wait(&mut changes, hold_until, "no proxy leads").await?;
                continue;
            }
        };
        let headers =
            headers.get_or_insert_with(|| to_leader(req, access, leadership.me(), made_key));
        let timeout = 2 * cluster.request_timeout + cluster.write_timeout;
        let sent = forward(worker, &leader, req, (headers, body.clone()), timeout);
        let why = match select(Box::pin(sent), Box::pin(changes.changed())).await {
            Either::Left((Ok(answer), _)) if !answer.headers.contains_key(NOT_LEADER_HEADER) => {
                return Ok(Routed::Answered(Box::new(answer)));
            }
            Either::Left((Ok(_), _)) => format!("{leader} no longer leads"),
            Either::Left((Err(e), _)) if matches!(e, UpstreamError::Timeout(_)) => {
                return Err(ApiError::Unavailable(format!("the leader at {leader}: {e}")));
            }
            Either::Left((Err(e), _)) => format!("the leader at {leader}: {e}"),
            // The lease moved while the leader held the request: send it to the new one.
            Either::Right(_) => continue,
        };
        warn!("{} {}: {why}; waiting for the lease", req.method(), req.path());
        wait(&mut changes, hold_until, &why).await?;
    }
}

/// Waits for the lease to move, or [`RETRY_PAUSE`], within the hold; past it, the 503.
async fn wait(
    changes: &mut tokio::sync::watch::Receiver<crate::leadership::View>,
    hold_until: Instant,
    why: &str,
) -> Result<(), ApiError> {
    let left = hold_until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ApiError::Unavailable(format!(
            "{why}, and no leader answered within REQUEST_TIMEOUT"
        )));
    }
    let _ = actix_web::rt::time::timeout(left.min(RETRY_PAUSE), changes.changed()).await;
    Ok(())
}

/// The headers the leader gets: what Chroma needs, the credentials, the idempotency key (one
/// made here for a write that has none), where the request came from, and the marker.
fn to_leader(
    req: &HttpRequest,
    access: Access,
    me: &crate::leadership::Peer,
    made_key: &mut Option<String>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let client = req.headers();
    for (name, value) in request_headers(client) {
        headers.append(name.clone(), value.clone());
    }
    for name in CREDENTIALS.iter().chain([&IDEMPOTENCY_HEADER, &TRANSACTION_HEADER]) {
        for value in client.get_all(*name) {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    if access == Access::Write
        && !headers.contains_key(IDEMPOTENCY_HEADER)
        && !headers.contains_key(TRANSACTION_HEADER)
    {
        let key = format!("forwarded-{}", uuid::Uuid::now_v7());
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert(HeaderName::from_static(IDEMPOTENCY_HEADER), value);
            *made_key = Some(key);
        }
    }
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let chain = match client.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.clone(),
    };
    let quoted = if peer.contains(':') { format!("\"[{peer}]\"") } else { peer };
    for (name, value) in [
        ("x-forwarded-for", chain),
        ("forwarded", format!("for={quoted};by=\"{}\"", me.id.replace('"', ""))),
        (FORWARDED_BY_HEADER, me.id.clone()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// One forward to the leader at `url`: its answer, a large one passed on as it arrives
/// ([`Relayed`]).
async fn forward(
    worker: &Worker,
    url: &str,
    req: &HttpRequest,
    (headers, body): (&HeaderMap, Bytes),
    timeout: Duration,
) -> Result<UpstreamResponse<Relayed>, UpstreamError> {
    let request = (path_and_query(req), Headers::Exactly(headers), body);
    worker.upstream.send(url, req.method(), request, timeout).await
}
