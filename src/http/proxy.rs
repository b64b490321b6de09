//! The proxy handler: every Chroma route. Classifies the request, asks the router for candidates,
//! and sends it to them in order until one answers (zero-gap failover within the request).
//!
//! Never forwards a request the route table refuses, never forwards more than the headers Chroma
//! needs, and never answers a client with a connection error while a usable instance is left.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use log::{error, warn};

use super::error::ApiError;
use super::{AppState, Worker};
use crate::actors::health::{ReportFailure, RequestProbe};
use crate::actors::router::{Access, Route};
use crate::chroma::headers::keep_response_header;
use crate::chroma::routes::classify;
use crate::stats::bump;
use crate::upstream::UpstreamResponse;

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
    let (access, body) = admitted.inspect_err(|_| bump(&stats.refused))?;
    bump(match access {
        Access::Read => &stats.reads,
        Access::Write => &stats.writes,
    });
    let candidates = worker
        .router
        .send(Route { access })
        .await
        .map_err(|e| ApiError::Internal(format!("router unavailable: {e}")))?;

    let method = req.method();
    let path = req.path();
    let path_and_query = req.uri().path_and_query().map_or(path, |p| p.as_str());
    let mut failures: Vec<String> = Vec::new();
    let mut retried_server_error = false;
    for (n, id) in candidates.iter().enumerate() {
        let instance = &state.instances[id.0];
        let counters = &stats.instances[id.0];
        let name = &instance.spec.name;
        let next = candidates
            .get(n + 1)
            .map(|next| &state.instances[next.0].spec.name);
        match worker
            .upstream
            .send(
                &instance.spec.url,
                method,
                path_and_query,
                req.headers(),
                body.clone(),
            )
            .await
        {
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
                return Ok(respond(answer));
            }
            Err(e) if e.fails_over() => {
                bump(&counters.failures);
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
            Err(e) => return Err(ApiError::BadGateway(format!("{name}: {e}"))),
        }
    }
    bump(&stats.unavailable);
    let detail = if failures.is_empty() {
        "every instance is marked down".to_string()
    } else {
        failures.join("; ")
    };
    error!("{method} {path}: no usable Chroma instance ({detail})");
    Err(ApiError::Unavailable(detail))
}

/// Classifies the request and reads its body, refusing what must not be forwarded.
async fn admit(req: &HttpRequest, payload: web::Payload) -> Result<(Access, Bytes), ApiError> {
    let access = classify(req.method(), req.path())?;
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
    Ok((access, body))
}

/// The client's answer: Chroma's status, end-to-end headers and body.
fn respond(answer: UpstreamResponse) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer
        .headers
        .iter()
        .filter(|(name, _)| keep_response_header(name))
    {
        response.append_header((name.clone(), value.clone()));
    }
    response.body(answer.body)
}
