//! The write path (DESIGN section 3): log the write durably, execute it with failover, record
//! the outcome, answer with `X-Transaction-Id`. Idempotency keys return the first answer.
//!
//! Never sends a write to an instance before `Append` has answered that it is durable; a write
//! the WAL cannot take is refused with 503 and executed nowhere.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use log::{error, warn};
use serde_json::json;

use super::error::ApiError;
use super::execute::{Execution, candidates, execute};
use super::{Cluster, Identities, Worker, WritePath, path_and_query, respond};
use crate::actors::replay::Wake;
use crate::actors::wal_writer::{Append, Resolve};
use crate::apply::effects::record_changes;
use crate::apply::translate::{canonical_answer, identity_changes, prepare};
use crate::auth::Token;
use crate::chroma::routes::{Operation, Route};
use crate::leadership::Standing;
use crate::policy::{Access, Claim, Scope};
use crate::progress::Applied;
use crate::wal::models::{EntryRow, EntryState, Resolution, Seq, WriteRecord};
use crate::wal::store::{Appended, WalError};

/// Response header naming the write's transaction.
pub const TRANSACTION_HEADER: &str = "x-transaction-id";
/// Request header carrying the client's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

/// The handles a write uses.
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub cluster: &'a Cluster,
    pub ids: &'a Identities,
    pub writes: &'a WritePath,
}

/// Logs, executes and resolves one write. `made_key` is the idempotency key a follower made for
/// it (see [`super::follow`]) when the client sent none.
pub async fn write(
    req: &HttpRequest,
    route: &Route,
    body: Bytes,
    handles: Handles<'_>,
    (caller, made_key): (Option<&Token>, Option<String>),
    worker: &Worker,
) -> Result<HttpResponse, ApiError> {
    let Handles { cluster, ids, writes } = handles;
    refuse_protected(req, route, writes)?;
    // Keys are the caller's own: another token reusing one gets its own entry, never this
    // caller's stored answer.
    let key = idempotency_key(req)?.or(made_key).map(|key| match caller {
        Some(token) => format!("{}/{key}", token.name),
        None => key,
    });
    let scope = Scope::of_write(route);
    // Writes that do not commute run one at a time: the log's order is their order on every
    // instance.
    let claim = Claim::of(route, &body);
    let _turn = writes.order.turn(claim.clone()).await;
    // On its target, a write also waits for every logged write its claim conflicts with, so
    // it never overtakes one there: a reset run before an owed add would strand that add for
    // good (reset schedule seed 1), a collection deleted before its owed record writes would
    // leave them nowhere to apply (fault schedule seed 26). Worked out inside the turn: no
    // conflicting write changes the database's collections meanwhile.
    let needed = claim
        .waits_for(|database| {
            let Some((tenant, database)) = database.split_once('/') else { return Vec::new() };
            ids.table.in_database(tenant, database).into_iter().map(|c| c.0).collect()
        })
        .map_or(Applied::Everything, Applied::Scopes);
    let path = path_and_query(req);
    let record = WriteRecord {
        // Time-ordered ids land at the right edge of the txn_id index: a group commit touches
        // one index page instead of one per entry.
        txn_id: uuid::Uuid::now_v7().to_string(),
        idempotency_key: key,
        kind: route.op.name(),
        method: req.method().to_string(),
        path: path.to_string(),
        body: body.clone(),
        scope: scope.clone(),
    };
    let txn_id = record.txn_id.clone();
    // Counted before the check: a shutdown that finds no write in flight has seen this one
    // refused.
    let _started = writes.started();
    if !cluster.leadership.takes_writes() {
        return Err(not_leading(cluster));
    }
    let appending = Instant::now();
    let appended = writes.wal.send(Append(record.clone())).await;
    cluster.stats.wal_append.observe(appending.elapsed().as_secs_f64());
    let appended = appended
        .map_err(|e| WalError::Unavailable(format!("the WAL writer did not answer: {e}")))
        .and_then(|appended| appended)
        .map_err(|e| match e {
            WalError::Fenced(why) => ApiError::NotLeader(why),
            e => ApiError::NotLogged(e),
        })?;
    let seq = match appended {
        Appended::Logged(seq) => seq,
        Appended::Duplicate(earlier) => return answer_again(&record, *earlier),
        Appended::InFlight => return Err(in_flight(None)),
    };

    // From here on the entry is in the log: every path records its outcome.
    let owed = OwedOutcome { seq, scope: &scope, handles, settled: false };
    // No router (it is restarting): as if no instance were usable.
    let execution = match candidates(worker, Access::Write, Vec::new()).await {
        Ok(candidates) => {
            let prepare = |i| prepare(route, path, &body, i, &ids.table, false);
            execute(cluster, worker, &candidates, Access::Write, req, prepare, &needed).await
        }
        Err(e) => Execution::Unreachable { detail: e.to_string(), may_have_arrived: false },
    };
    let (resolution, mut response) = resolve(seq, route, &body, execution, handles, req).await;
    owed.record(resolution, &txn_id).await;
    set_transaction(&mut response, &txn_id);
    Ok(response)
}

/// The outcome a logged entry still owes the log. Normally [`OwedOutcome::record`] records it;
/// if the write path is abandoned first (a panic), the drop records it `queued`, so replay
/// settles it on every instance as crash recovery would. A `logged` entry nobody resolves would
/// hold replay behind it for good.
struct OwedOutcome<'a> {
    seq: Seq,
    scope: &'a Scope,
    handles: Handles<'a>,
    settled: bool,
}

impl OwedOutcome<'_> {
    async fn record(mut self, resolution: Resolution, txn_id: &str) {
        self.settled = true;
        // Owed before the outcome is committed (replay only takes committed entries), and
        // before the answer: the client's next read, on any worker, avoids instances that lack
        // this write.
        let Handles { cluster, writes, .. } = self.handles;
        if matches!(resolution.state, EntryState::Committed | EntryState::Queued) {
            let applied_on = resolution
                .applied_on
                .as_ref()
                .and_then(|name| cluster.instance(name.as_str()))
                .map(|i| i.spec.id);
            cluster.progress.owe_all_but(self.scope, applied_on);
        }
        // The answer waits for the outcome's commit, so an acknowledged write is committed in
        // the log even if the proxy dies next; if the store fails now, the client still gets
        // the answer of a write that did happen, and the writer retries the record.
        if let Ok(Err(e)) = writes.wal.send(Resolve(resolution)).await {
            warn!(
                "transaction {txn_id}: outcome not recorded yet ({e}); the WAL writer retries it"
            );
        }
        writes.replay.do_send(Wake);
    }
}

impl Drop for OwedOutcome<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        error!(
            "entry {}: the write was abandoned before its outcome was known; queued, replay applies it to every instance",
            self.seq
        );
        // Before the write's turn ends: the next conflicting write waits for this one.
        let Handles { cluster, writes, .. } = self.handles;
        cluster.progress.owe_all_but(self.scope, None);
        writes.wal.do_send(Resolve(Resolution {
            seq: self.seq,
            state: EntryState::Queued,
            status: None,
            response: None,
            error: Some("outcome unknown: the write was abandoned while executing".to_string()),
            applied_on: None,
        }));
        writes.replay.do_send(Wake);
    }
}

/// Why a write is not logged here: this proxy follows (the request goes to the leader), or its
/// lease lapsed (refused: its store is unreachable, and no other proxy can lead meanwhile).
fn not_leading(cluster: &Cluster) -> ApiError {
    match cluster.leadership.view().standing {
        Standing::Lapsed => ApiError::NotLogged(WalError::Fenced(
            "its lease could not be renewed (the write-ahead log store does not answer)".into(),
        )),
        _ => ApiError::NotLeader("another proxy leads now".into()),
    }
}

/// Deleting a protected collection is refused before anything is logged.
fn refuse_protected(req: &HttpRequest, route: &Route, writes: &WritePath) -> Result<(), ApiError> {
    let name = match (route.op, route.collection.as_deref()) {
        (Operation::DeleteCollection, Some(name)) => name,
        _ => return Ok(()),
    };
    if writes.protected_collections.iter().any(|p| p == name) {
        warn!("refused {} {}: collection `{name}` is protected", req.method(), req.path());
        return Err(ApiError::Forbidden(format!(
            "collection `{name}` is protected (PROTECTED_COLLECTIONS) and cannot be deleted through the proxy"
        )));
    }
    Ok(())
}

/// The entry's outcome and the client's answer; identity changes of a committed write are
/// recorded before the answer, so the client's next request can use the ids it got.
async fn resolve(
    seq: Seq,
    route: &Route,
    request: &Bytes,
    execution: Execution,
    handles: Handles<'_>,
    req: &HttpRequest,
) -> (Resolution, HttpResponse) {
    let Handles { cluster, ids, .. } = handles;
    let outcome = |state, status: StatusCode, response: Option<Bytes>, error| Resolution {
        seq,
        state,
        status: Some(status.as_u16()),
        response,
        error,
        applied_on: None,
    };
    match execution {
        Execution::Answered { instance, mut answer } => {
            let entry_state = if answer.status.is_success() {
                EntryState::Committed
            } else if answer.status.is_client_error() {
                EntryState::Rejected
            } else {
                EntryState::Failed
            };
            if entry_state == EntryState::Committed {
                let changes =
                    identity_changes(route, request, &answer.body, instance, &ids.table, None);
                let names_collection = !changes.is_empty();
                if let Err(e) = record_changes(changes, &ids.mapping).await {
                    error!("transaction seq {seq}: collection ids not recorded: {e}");
                    // An id not recorded is an id another leader cannot know: the answer is
                    // not given, and the write is applied everywhere again, where it is
                    // idempotent (fault schedule seed 2: a create's id answered here, then
                    // unknown to the next leader, which gave the collection another).
                    if names_collection {
                        return unknown_outcome(
                            seq,
                            cluster.unavailable(
                                req,
                                format!(
                                    "{} executed the write but its collection ids could not be recorded ({e}); the outcome is unknown: the write is logged and will be applied on every instance",
                                    cluster.instances[instance.0].spec.name
                                ),
                            ),
                        );
                    }
                }
                answer.body = canonical_answer(route, answer.body, instance, &ids.table);
            }
            let mut resolution =
                outcome(entry_state, answer.status, Some(answer.body.clone()), None);
            if entry_state == EntryState::Committed {
                resolution.applied_on = Some(cluster.instances[instance.0].spec.name.clone());
            }
            (resolution, respond(answer))
        }
        Execution::Unreachable { detail, .. } if route.op.can_queue() => {
            let body = Bytes::from(
                json!({
                    "state": "queued",
                    "message": "no Chroma instance is usable: the write is logged and will be applied in order when one returns",
                })
                .to_string(),
            );
            let status = StatusCode::ACCEPTED;
            let response =
                HttpResponse::build(status).content_type("application/json").body(body.clone());
            (outcome(EntryState::Queued, status, Some(body), Some(detail)), response)
        }
        // An instance may execute it yet (it timed out, or broke off, holding the request):
        // the outcome is unknown, so replay applies it everywhere, as crash recovery would;
        // recording it failed would leave that instance alone with it (fault schedule seed 1).
        Execution::Unreachable { detail, may_have_arrived: true } => unknown_outcome(
            seq,
            cluster.unavailable(
                req,
                format!(
                    "{detail}; the outcome is unknown: the write is logged and will be applied on every instance"
                ),
            ),
        ),
        Execution::Unreachable { detail, may_have_arrived: false } => {
            let error = cluster.unavailable(req, detail);
            let status = error.status_code();
            (
                outcome(EntryState::Failed, status, None, Some(error.to_string())),
                error.error_response(),
            )
        }
        Execution::Invalid(detail) => {
            let error = ApiError::BadGateway(detail);
            let status = error.status_code();
            (
                outcome(EntryState::Failed, status, None, Some(error.to_string())),
                error.error_response(),
            )
        }
    }
}

/// A write that may have been executed, answered as unknown: it is queued for every instance.
/// No status: a retry under its key is answered 202 queued, not this 503 again.
fn unknown_outcome(seq: Seq, error: ApiError) -> (Resolution, HttpResponse) {
    let resolution = Resolution {
        seq,
        state: EntryState::Queued,
        status: None,
        response: None,
        error: Some(error.to_string()),
        applied_on: None,
    };
    (resolution, error.error_response())
}

/// A retry under a used key: the first answer if the request is the same, else 422.
fn answer_again(request: &WriteRecord, earlier: EntryRow) -> Result<HttpResponse, ApiError> {
    if earlier.method != request.method
        || earlier.path != request.path
        || earlier.body != request.body
    {
        return Err(ApiError::IdempotencyMismatch(format!(
            "Idempotency-Key `{}` was used for a different request (transaction {})",
            request.idempotency_key.as_deref().unwrap_or(""),
            earlier.txn_id
        )));
    }
    let mut response = match (earlier.state, earlier.status) {
        (EntryState::Logged, _) => return Err(in_flight(Some(&earlier.txn_id))),
        (_, Some(status)) => {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            HttpResponse::build(status)
                .content_type("application/json")
                .insert_header(("idempotent-replayed", "true"))
                .body(earlier.response.unwrap_or_default())
        }
        (state, None) => HttpResponse::Accepted()
            .insert_header(("idempotent-replayed", "true"))
            .json(json!({"state": state.as_str(), "message": "the write is logged and will be applied in order"})),
    };
    set_transaction(&mut response, &earlier.txn_id);
    Ok(response)
}

fn in_flight(txn_id: Option<&str>) -> ApiError {
    ApiError::Conflict(match txn_id {
        Some(id) => format!(
            "a request with this Idempotency-Key is still in flight (transaction {id}); retry later"
        ),
        None => "another request with this Idempotency-Key is in flight; retry later".to_string(),
    })
}

fn set_transaction(response: &mut HttpResponse, txn_id: &str) {
    if let Ok(value) = HeaderValue::from_str(txn_id) {
        response.headers_mut().insert(HeaderName::from_static(TRANSACTION_HEADER), value);
    }
}

/// The client's idempotency key: `Idempotency-Key`, or its alias `X-Transaction-Id`; sent once.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let headers = req.headers();
    let values: Vec<&HeaderValue> =
        headers.get_all(IDEMPOTENCY_HEADER).chain(headers.get_all(TRANSACTION_HEADER)).collect();
    let value = match values.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(ApiError::BadRequest(
                "send one Idempotency-Key (or X-Transaction-Id) header, not several".to_string(),
            ));
        }
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
    });
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    })
}
