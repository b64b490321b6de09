//! The proxy handler: every Chroma route. Classifies the request, then sends a read down the
//! failover loop of [`super::execute`]; writes take the WAL path of [`super::write`]. A record
//! read's answer (get, query, search) declared larger than STREAM_THRESHOLD is streamed through
//! as it arrives; every other answer is buffered whole.
//!
//! A proxy that does not lead sends every admitted request to the leader ([`super::follow`]).
//!
//! Never forwards a request the route table refuses, never forwards to an instance more than the
//! headers Chroma needs (the leader gets the credentials too, to check them again), never streams an answer it must rewrite, and never answers a client with a connection
//! error while a usable instance is left: the one exception is a streamed answer that breaks off
//! once its first bytes went out, which the client sees cut off (DESIGN 16).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use log::warn;
use serde_json::json;

use super::error::ApiError;
use super::execute::{Execution, candidates, execute};
use super::follow::{self, FORWARDED_BY_HEADER, Routed};
use super::gate::Gate;
use super::{Cluster, Identities, Worker, WritePath, path_and_query, respond, write};
use crate::apply::effects::{DISCOVERY_RETRY, discover};
use crate::apply::translate::{canonical_answer, prepare};
use crate::auth::Token;
use crate::chroma::routes::{IDENTITY_PATH, Route, RouteError, classify};
use crate::identity::Translation;
use crate::instance::InstanceId;
use crate::policy::{Access, Scope};
use crate::progress::Applied;
use crate::stats::{RequestKind, bump};
use crate::upstream::{Body, UpstreamResponse};

/// Chroma's own request size limit.
pub const MAX_BODY_BYTES: usize = 40 * 1024 * 1024;

/// Proxies one request to the first instance that answers it, counted by kind and status code
/// with its duration.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    ids: web::Data<Identities>,
    writes: web::Data<WritePath>,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let route = classify(req.method(), req.path());
    let kind = match &route {
        Ok(route) if Access::of(route.op) == Access::Read => RequestKind::Read,
        Ok(_) => RequestKind::Write,
        Err(_) => RequestKind::Unknown,
    };
    let counted = cluster.clone();
    let handles = Handles { gate, cluster, ids, writes, worker };
    let answer = serve(req, payload, route, handles).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(e) => e.status_code(),
    };
    counted.stats.answered(kind, status, started.elapsed());
    answer
}

/// What a proxied request may use.
struct Handles {
    gate: web::Data<Gate>,
    cluster: web::Data<Cluster>,
    ids: web::Data<Identities>,
    writes: web::Data<WritePath>,
    worker: web::Data<Worker>,
}

async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    route: Result<Route, RouteError>,
    handles: Handles,
) -> Result<HttpResponse, ApiError> {
    let Handles { gate, cluster, ids, writes, worker } = handles;
    let stats = &cluster.stats;
    bump(&stats.requests);
    // Who is asking comes first: without a valid token, nothing else is looked at, not even
    // the body.
    let caller = gate.caller(&req).inspect_err(|_| bump(&stats.refused))?;
    let admitted = admit(&req, route, payload).await;
    let (route, body) = admitted.inspect_err(|_| bump(&stats.refused))?;
    if let Some(caller) = &caller {
        gate.authorize(caller, &route, &body).inspect_err(|_| bump(&stats.refused))?;
        if req.path() == IDENTITY_PATH {
            // What the official clients ask on connect to pick their tenant and database.
            return Ok(HttpResponse::Ok().json(json!({
                "user_id": caller.name,
                "tenant": caller.tenant,
                "databases": caller.databases,
            })));
        }
    }
    let access = Access::of(route.op);
    // Shared, not copied, by the write task and a retry after the lease moved.
    let route = Rc::new(route);
    let handles = Handles { gate, cluster, ids, writes, worker };
    let forwarded = req.headers().contains_key(FORWARDED_BY_HEADER);
    let mut made_key = None;
    loop {
        let (cluster, worker) = (&handles.cluster, &handles.worker);
        match follow::route(&req, (access, &body), cluster, worker, &mut made_key).await? {
            Routed::Answered(answer) => return Ok(respond(answer.map_body(|r| r.0))),
            Routed::Here => {}
        }
        let key = made_key.clone();
        match here((&req, &route, &body), (caller.as_ref(), key), &handles).await {
            // The lease moved between the check and the log: nothing was logged; the leader
            // takes it (a request forwarded here once is answered this 503 instead).
            Err(ApiError::NotLeader(_)) if !forwarded => continue,
            answer => return answer,
        }
    }
}

/// Serves a request this proxy leads for: discovery of an unknown collection, then the read
/// path or the write path.
async fn here(
    (req, route, body): (&HttpRequest, &Rc<Route>, &Bytes),
    (caller, made_key): (Option<&Arc<Token>>, Option<String>),
    handles: &Handles,
) -> Result<HttpResponse, ApiError> {
    let Handles { cluster, ids, writes, worker, .. } = handles;
    let stats = &cluster.stats;
    if let Some(id) = route.collection_id()
        && ids.table.to_instance(id, InstanceId(0)) == Translation::Unknown
        && ids.discovery.due(id)
    {
        // First request for a collection created outside the proxy: learn its ids once.
        let specs = cluster.specs();
        let client = worker.upstream.client();
        match discover(client, &specs, route, id, (&ids.mapping, &cluster.progress)).await {
            Ok(true) => {}
            Ok(false) => {
                bump(&stats.refused);
                // In Chroma's own words, which clients match.
                return Err(ApiError::NotFound(format!("Collection [{id}] does not exist")));
            }
            Err(e) => {
                ids.discovery.failed(id);
                warn!(
                    "collection {id} is not mapped ({e}); requests for it are forwarded unchanged, next attempt in {DISCOVERY_RETRY:?}"
                );
            }
        }
    }
    match Access::of(route.op) {
        Access::Read => {
            bump(&stats.reads);
            let scopes = Scope::of_read(route);
            let candidates = candidates(worker, Access::Read, scopes.clone()).await?;
            let path = path_and_query(req);
            let prepare = |i| prepare(route, path, body, i, &ids.table, false);
            let needed = Applied::Scopes(scopes);
            if route.returns_records {
                // Nothing to rewrite: a large answer passes through as it arrives.
                let execution = execute::<Body>(
                    cluster,
                    worker,
                    &candidates,
                    Access::Read,
                    req,
                    prepare,
                    &needed,
                );
                let (_, answer) = answered(cluster, req, execution.await)?;
                return Ok(respond(answer));
            }
            let execution =
                execute(cluster, worker, &candidates, Access::Read, req, prepare, &needed);
            let (instance, answer) = answered(cluster, req, execution.await)?;
            Ok(respond(answer.map_body(|body| canonical_answer(route, body, instance, &ids.table))))
        }
        Access::Write => {
            bump(&stats.writes);
            // Its own task: a client that goes away does not cancel a write half-way between
            // its log entry and its recorded outcome.
            let (req, route, body, caller) =
                (req.clone(), route.clone(), body.clone(), caller.cloned());
            let (cluster, ids, writes, worker) =
                (cluster.clone(), ids.clone(), writes.clone(), worker.clone());
            let write = actix_web::rt::spawn(async move {
                let handles = write::Handles { cluster: &cluster, ids: &ids, writes: &writes };
                let caller = (caller.as_deref(), made_key);
                write::write(&req, &route, body, handles, caller, &worker).await
            });
            write.await.unwrap_or_else(|e| Err(ApiError::Internal(format!("write task: {e}"))))
        }
    }
}

/// A read's answer and the instance that gave it, or the error its client gets.
fn answered<B>(
    cluster: &Cluster,
    req: &HttpRequest,
    execution: Execution<B>,
) -> Result<(InstanceId, UpstreamResponse<B>), ApiError> {
    match execution {
        Execution::Answered { instance, answer } => Ok((instance, answer)),
        Execution::Unreachable { detail, .. } => Err(cluster.unavailable(req, detail)),
        Execution::Invalid(detail) => Err(ApiError::BadGateway(detail)),
    }
}

/// Reads the body of a classified request, refusing what must not be forwarded.
async fn admit(
    req: &HttpRequest,
    route: Result<Route, RouteError>,
    payload: web::Payload,
) -> Result<(Route, Bytes), ApiError> {
    let route = route?;
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
