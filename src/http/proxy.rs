//! The proxy handler: every Chroma route. Classifies the request, asks the router for candidates,
//! and sends it to them in order until one answers (zero-gap failover within the request).
//! Writes take the WAL path of [`super::write`] first.
//!
//! Never forwards a request the route table refuses, never forwards more than the headers Chroma
//! needs, and never answers a client with a connection error while a usable instance is left.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use log::{error, warn};

use super::error::ApiError;
use super::{AppState, Worker, write};
use crate::actors::health::{ReportFailure, RequestProbe};
use crate::actors::router::RouteRequest;
use crate::apply::{self, DISCOVERY_RETRY, NotOnInstance, Prepared, canonical_answer};
use crate::chroma::headers::keep_response_header;
use crate::chroma::ids::Translation;
use crate::chroma::routes::{Route, classify};
use crate::instance::InstanceId;
use crate::policy::{Access, Scope};
use crate::stats::bump;
use crate::upstream::{UpstreamError, UpstreamResponse};

/// Chroma's own request size limit.
pub const MAX_BODY_BYTES: usize = 40 * 1024 * 1024;

/// Proxies one request to the first instance that answers it.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ApiError> {
    let stats = &state.stats;
    bump(&stats.requests);
    let admitted = admit(&req, payload).await;
    let (route, body) = admitted.inspect_err(|_| bump(&stats.refused))?;
    if let Some(id) = route.collection_id()
        && state.table.to_instance(id, InstanceId(0)) == Translation::Unknown
        && state.discovery.due(id)
    {
        // First request for a collection created outside the proxy: learn its ids once.
        let specs = state.specs();
        let client = worker.upstream.client();
        match apply::discover(client, &specs, &route, id, &state.mapping).await {
            Ok(true) => {}
            Ok(false) => {
                bump(&stats.refused);
                return Err(ApiError::NotFound(format!("collection {id} does not exist")));
            }
            Err(e) => {
                state.discovery.failed(id);
                warn!(
                    "collection {id} is not mapped ({e}); requests for it are forwarded unchanged, next attempt in {DISCOVERY_RETRY:?}"
                );
            }
        }
    }
    match Access::of(route.op) {
        Access::Read => {
            bump(&stats.reads);
            let scopes = Scope::of_read(&route);
            let candidates = candidates(&worker, Access::Read, scopes.clone()).await?;
            let path = path_and_query(&req);
            let prepare = |i| apply::prepare(&route, path, &body, i, &state.table, false);
            match execute(&state, &worker, &candidates, Access::Read, &req, prepare, &scopes).await
            {
                Execution::Answered { instance, mut answer } => {
                    answer.body = canonical_answer(&route, answer.body, instance, &state.table);
                    Ok(respond(answer))
                }
                Execution::Unreachable { detail, .. } => Err(unavailable(&state, &req, detail)),
                Execution::Invalid(detail) => Err(ApiError::BadGateway(detail)),
            }
        }
        Access::Write => {
            bump(&stats.writes);
            // Its own task: a client that goes away does not cancel a write half-way between
            // its log entry and its recorded outcome.
            let write = actix_web::rt::spawn(async move {
                write::write(&req, &route, body, &state, &worker).await
            });
            write.await.unwrap_or_else(|e| Err(ApiError::Internal(format!("write task: {e}"))))
        }
    }
}

/// What became of a request sent down the candidate list.
pub enum Execution {
    /// An instance answered (any status); it is the one that executed the request.
    Answered { instance: InstanceId, answer: UpstreamResponse },
    /// No candidate could be reached; the reason for each one tried, and whether one of them
    /// may have received the request (a timeout or a broken connection, not a refusal).
    Unreachable { detail: String, may_have_arrived: bool },
    /// The request could not be sent at all; no instance would take it.
    Invalid(String),
}

/// The request's path and query string, as the client sent it.
pub fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or(req.path(), |p| p.as_str())
}

/// The router's candidates for a request of this kind.
pub async fn candidates(
    worker: &Worker,
    access: Access,
    scopes: Vec<Scope>,
) -> Result<Vec<InstanceId>, ApiError> {
    worker
        .router
        .send(RouteRequest { access, scopes })
        .await
        .map_err(|e| ApiError::Internal(format!("router unavailable: {e}")))
}

/// Sends the request to the candidates in order, each in the form `prepare` gives for it: a
/// connection failure or timeout marks the instance down and moves on; a 5xx is tried once on
/// the next candidate. A candidate that has not applied every logged write of `wait_for` is
/// first given REQUEST_TIMEOUT to catch up (reads see every acknowledged write; a write never
/// overtakes earlier ones).
pub async fn execute(
    state: &AppState,
    worker: &Worker,
    candidates: &[InstanceId],
    access: Access,
    req: &HttpRequest,
    prepare: impl Fn(InstanceId) -> Result<Prepared, NotOnInstance>,
    wait_for: &[Scope],
) -> Execution {
    let stats = &state.stats;
    let (method, path) = (req.method(), req.path());
    let mut failures: Vec<String> = Vec::new();
    let mut retried_server_error = false;
    let mut may_have_arrived = false;
    for (n, id) in candidates.iter().enumerate() {
        let instance = &state.instances[id.0];
        let counters = &stats.instances[id.0];
        let name = &instance.spec.name;
        let next = candidates.get(n + 1).map(|next| &state.instances[next.0].spec.name);
        let timeout = state.request_timeout;
        if !state.progress.wait_current(*id, wait_for, timeout).await {
            warn!(
                "{method} {path}: {name} has not caught up within {timeout:?}; trying the next one"
            );
            failures.push(format!("{name}: still catching up after {timeout:?}"));
            continue;
        }
        let prepared = match prepare(*id) {
            Ok(prepared) => prepared,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let sent = send_prepared(worker, &instance.spec.url, method, req, prepared);
        match sent.await {
            Ok(answer)
                if answer.status.is_server_error() && !retried_server_error && next.is_some() =>
            {
                retried_server_error = true;
                bump(&counters.failures);
                bump(&stats.failovers);
                let next = next.map_or("", |n| n.as_str());
                warn!(
                    "failover: {method} {path}: {name} answered {}; re-sending to {next}",
                    answer.status
                );
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
                let reason = format!("{method} {path}: {e}");
                if e.marks_down() {
                    instance.health.do_send(ReportFailure { reason });
                } else {
                    instance.health.do_send(RequestProbe { reason });
                }
                if let Some(next) = next {
                    bump(&stats.failovers);
                    warn!("failover: {method} {path}: {name}: {e}; re-sending to {next}");
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

/// Sends a prepared request; an update first asks the instance which of its ids it has and
/// sends only those, or answers Chroma's 200 `{}` itself when none is left
/// ([`apply::PresenceCheck`]).
async fn send_prepared(
    worker: &Worker,
    url: &str,
    method: &actix_web::http::Method,
    req: &HttpRequest,
    prepared: Prepared,
) -> Result<UpstreamResponse, UpstreamError> {
    let mut body = prepared.body;
    if let Some(check) = prepared.presence {
        let post = actix_web::http::Method::POST;
        let get = worker.upstream.send(url, &post, &check.get_path, req.headers(), check.get_body);
        let answer = get.await?;
        if !answer.status.is_success() {
            // The update would be refused the same way (its collection is gone, say).
            return Ok(answer);
        }
        match apply::PresenceCheck::keep_present(&body, &answer.body) {
            Ok(Some(kept)) => body = kept,
            Ok(None) => {
                let mut headers = actix_web::http::header::HeaderMap::new();
                headers.insert(
                    actix_web::http::header::CONTENT_TYPE,
                    actix_web::http::header::HeaderValue::from_static("application/json"),
                );
                return Ok(UpstreamResponse {
                    status: actix_web::http::StatusCode::OK,
                    headers,
                    body: Bytes::from_static(b"{}"),
                });
            }
            Err(e) => {
                return Err(UpstreamError::Request(format!("checking the update's ids: {e}")));
            }
        }
    }
    worker.upstream.send(url, method, &prepared.path, req.headers(), body).await
}

/// The 503 for a request no instance could serve, logged with every instance's reason.
pub fn unavailable(state: &AppState, req: &HttpRequest, detail: String) -> ApiError {
    bump(&state.stats.unavailable);
    error!("{} {}: no usable Chroma instance ({detail})", req.method(), req.path());
    ApiError::Unavailable(detail)
}

/// Classifies the request and reads its body, refusing what must not be forwarded.
async fn admit(req: &HttpRequest, payload: web::Payload) -> Result<(Route, Bytes), ApiError> {
    let route = classify(req.method(), req.path())?;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let body = payload
        .to_bytes_limited(MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?
        .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
    Ok((route, body))
}

/// The client's answer: Chroma's status, end-to-end headers and body.
pub fn respond(answer: UpstreamResponse) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    for (name, value) in answer.headers.iter().filter(|(name, _)| keep_response_header(name)) {
        response.append_header((name.clone(), value.clone()));
    }
    response.body(answer.body)
}
