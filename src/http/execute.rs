//! The one failover loop (DESIGN 3 and 4): for each candidate in the router's order, wait for it
//! to be current on what the request depends on, send the request in that instance's form,
//! classify the failure, and go on to the next. Used by the read path and the write path.
//!
//! Never picks candidates itself (the router does), never logs a request body, and never sends
//! a write twice to one instance.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::web::Bytes;
use log::warn;

use super::error::ApiError;
use super::{Cluster, Worker};
use crate::actors::health::{ReportFailure, RequestProbe};
use crate::actors::router::RouteRequest;
use crate::apply::translate::{NotOnInstance, Prepared, PresenceCheck, Present};
use crate::chroma::errors::ErrorName;
use crate::instance::InstanceId;
use crate::leadership::Leadership;
use crate::policy::{Access, Scope};
use crate::progress::Applied;
use crate::stats::bump;
use crate::upstream::{FencedBody, Headers, TakeBody, UpstreamError, UpstreamResponse};

/// What became of a request sent down the candidate list; the answer's body is taken as `B`
/// says (streamed or not, see [`TakeBody`]).
pub enum Execution<B = Bytes> {
    /// An instance answered (any status); it is the one that executed the request.
    Answered { instance: InstanceId, answer: UpstreamResponse<B> },
    /// No candidate could be reached; the reason for each one tried, and whether one of them
    /// may have received the request (a timeout or a broken connection, not a refusal).
    Unreachable { detail: String, may_have_arrived: bool },
    /// The request could not be sent at all; no instance would take it.
    Invalid(String),
}

/// The router's candidates for a request of this kind.
pub async fn candidates(
    worker: &Worker,
    access: Access,
    scopes: Vec<Scope>,
) -> Result<Vec<InstanceId>, ApiError> {
    worker.router.send(RouteRequest { access, scopes }).await.map_err(ApiError::actor("router"))
}

/// Sends the request to the candidates in order, each in the form `prepare` gives for it: a
/// connection failure or timeout marks the instance down and moves on; a 5xx is tried once on
/// the next candidate. A candidate that has not applied every logged write of `wait_for` is
/// first given REQUEST_TIMEOUT to catch up (reads see every acknowledged write; a write never
/// overtakes earlier ones). A streamed answer is returned once its head is in: it is never
/// re-sent, even if it breaks off later.
pub async fn execute<B: TakeBody>(
    cluster: &Cluster,
    worker: &Worker,
    candidates: &[InstanceId],
    access: Access,
    req: &HttpRequest,
    prepare: impl Fn(InstanceId) -> Result<Prepared, NotOnInstance>,
    wait_for: &Applied,
) -> Execution<B> {
    let stats = &cluster.stats;
    let (method, path) = (req.method(), req.path());
    let mut failures: Vec<String> = Vec::new();
    let mut retried_server_error = false;
    let mut may_have_arrived = false;
    for (n, id) in candidates.iter().enumerate() {
        let instance = &cluster.instances[id.0];
        let counters = &stats.instances[id.0];
        let name = &instance.spec.name;
        let next = candidates.get(n + 1).map(|next| &cluster.instances[next.0].spec.name);
        let timeout = cluster.request_timeout;
        // Slow is not dead: a write gets WRITE_TIMEOUT, a read REQUEST_TIMEOUT.
        let answer_within = match access {
            Access::Read => cluster.request_timeout,
            Access::Write => cluster.write_timeout,
        };
        if !cluster.progress.wait_current(*id, wait_for, timeout).await {
            warn!(
                "{method} {path}: {name} has not caught up within {timeout:?}; trying the next one"
            );
            failures.push(format!("{name}: still catching up after {timeout:?}"));
            continue;
        }
        // Right before sending: a leader whose lease lapsed executes nothing more. The entry's
        // outcome is unknown to this proxy (the next leader may replay it), so it is queued.
        if access == Access::Write && !cluster.leadership.may_execute() {
            warn!("{method} {path}: not sent to {name}: this proxy's lease lapsed");
            failures.push("this proxy's leader lease lapsed before the write was sent".into());
            return Execution::Unreachable { detail: failures.join("; "), may_have_arrived: true };
        }
        let prepared = match prepare(*id) {
            Ok(prepared) => prepared,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let fence = (access == Access::Write).then_some(&cluster.leadership);
        let sent = send_prepared(
            worker,
            &instance.spec.url,
            (method, req, fence),
            prepared,
            answer_within,
        );
        match sent.await {
            Ok(answer)
                if answer.status.is_server_error() && !retried_server_error && next.is_some() =>
            {
                retried_server_error = true;
                bump(&counters.failures);
                bump(&counters.failovers);
                let next = next.map_or("", |n| n.as_str());
                let detail =
                    format!("{method} {path}: answered {}; re-sent to {next}", answer.status);
                warn!("failover: {name}: {detail}");
                cluster.events.record("failover", name.as_str(), detail);
                failures.push(format!("{name}: answered {}", answer.status));
            }
            Ok(answer) => {
                bump(match access {
                    Access::Read => &counters.reads,
                    Access::Write => &counters.writes,
                });
                return Execution::Answered { instance: *id, answer };
            }
            Err(e) if e.fails_over() => {
                bump(&counters.failures);
                may_have_arrived |= e.may_have_arrived();
                // Not the path: health reasons show in the open /status and /events, and a path
                // names a tenant's collection (the log line below has it).
                let reason = format!("a {method} request: {e}");
                if e.marks_down() {
                    instance.health.do_send(ReportFailure { reason });
                } else {
                    instance.health.do_send(RequestProbe { reason });
                }
                if access == Access::Write && e.may_still_run() {
                    // Sent elsewhere, it could be applied late here, over newer writes: its
                    // outcome is unknown, and replay applies it everywhere in log order.
                    warn!("{method} {path}: {name}: {e}; not re-sent, the outcome is unknown");
                    failures.push(format!("{name}: {e}"));
                    return Execution::Unreachable {
                        detail: failures.join("; "),
                        may_have_arrived,
                    };
                }
                if let Some(next) = next {
                    bump(&counters.failovers);
                    let why = format!("{e}; re-sent to {next}");
                    warn!("failover: {name}: {method} {path}: {why}");
                    cluster.events.record("failover", name.as_str(), format!("{method}: {why}"));
                }
                failures.push(format!("{name}: {e}"));
            }
            Err(e) => return Execution::Invalid(format!("{name}: {e}")),
        }
    }
    let detail = if failures.is_empty() {
        "every instance is down or has not applied the writes this request depends on".to_string()
    } else {
        failures.join("; ")
    };
    Execution::Unreachable { detail, may_have_arrived }
}

/// An answer the proxy gives in Chroma's place, as Chroma would: `status` with this JSON.
fn own_answer<B: TakeBody>(status: u16, json: &str) -> UpstreamResponse<B> {
    let mut headers = actix_web::http::header::HeaderMap::new();
    headers.insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("application/json"),
    );
    UpstreamResponse {
        status: actix_web::http::StatusCode::from_u16(status).unwrap_or_default(),
        headers,
        body: B::from(Bytes::copy_from_slice(json.as_bytes())),
    }
}

/// Sends a prepared request; an update first asks the instance which of its ids it has and
/// sends only those, or, when none is left, answers itself as Chroma would: 200 `{}`, or 400
/// when the update's embeddings do not fit the collection ([`PresenceCheck`]).
async fn send_prepared<B: TakeBody>(
    worker: &Worker,
    url: &str,
    (method, req, fence): (&actix_web::http::Method, &HttpRequest, Option<&Arc<Leadership>>),
    prepared: Prepared,
    timeout: Duration,
) -> Result<UpstreamResponse<B>, UpstreamError> {
    let mut body = prepared.body;
    if let Some(check) = prepared.presence {
        // The update itself is not sent before these answers: on a timeout another instance
        // may take it.
        let ask = |method, path: String, body: Bytes| async move {
            let request = (path.as_str(), Headers::ForChroma(req.headers()), body);
            let answer: Result<UpstreamResponse, _> =
                worker.upstream.send(url, &method, request, timeout).await;
            answer.map_err(|e| match e {
                UpstreamError::Timeout(after) => UpstreamError::Broken(format!(
                    "the update's checks got no answer within {after:?}; the update was not sent"
                )),
                e => e,
            })
        };
        let post = actix_web::http::Method::POST;
        let answer = ask(post, check.get_path, check.get_body).await?;
        if !answer.status.is_success() {
            // The update would be refused the same way (its collection is gone, say).
            return Ok(answer.map_body(B::from));
        }
        let refusal = match PresenceCheck::keep_present(&body, &answer.body) {
            Ok(Present::Send(kept)) => {
                body = kept;
                None
            }
            Ok(Present::Refused(message)) => Some(message),
            Ok(Present::Absent { embedding_length: None }) => return Ok(own_answer(200, "{}")),
            Ok(Present::Absent { embedding_length: Some(length) }) => {
                let get = actix_web::http::Method::GET;
                let collection = ask(get, check.collection_path, Bytes::new()).await?;
                if !collection.status.is_success() {
                    return Ok(collection.map_body(B::from));
                }
                match PresenceCheck::dimension_refusal(&collection.body, length) {
                    Some(message) => Some(message),
                    None => return Ok(own_answer(200, "{}")),
                }
            }
            Err(e) => {
                return Err(UpstreamError::Request(format!("checking the update's ids: {e}")));
            }
        };
        if let Some(message) = refusal {
            let error = serde_json::json!({"error": ErrorName::InvalidArgument.as_str(), "message": message});
            return Ok(own_answer(400, &error.to_string()));
        }
    }
    let request = (prepared.path.as_str(), Headers::ForChroma(req.headers()));
    match fence {
        Some(leadership) => {
            let body = FencedBody::new(body, leadership);
            worker.upstream.send(url, method, (request.0, request.1, body), timeout).await
        }
        None => worker.upstream.send(url, method, (request.0, request.1, body), timeout).await,
    }
}
