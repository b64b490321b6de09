//! Errors the HTTP layer answers itself, each mapped to a status code and Chroma's JSON error
//! shape `{"error": "...", "message": "..."}`.
//!
//! Never includes a header value, token or request body in a message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::chroma::errors::ErrorName;
use crate::chroma::routes::RouteError;
use crate::wal::store::WalError;

/// Response header of a [`ApiError::NotLeader`] answer.
pub const NOT_LEADER_HEADER: &str = "x-chroma-ha-not-leader";

/// A request the proxy answers without an instance's help.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Unknown route, unknown instance, or a write the proxy cannot replicate.
    #[error("{0}")]
    NotFound(String),
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the proxy accepts.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Refused by policy (a protected collection).
    #[error("{0}")]
    Forbidden(String),
    /// Admin endpoints are off because no ADMIN_TOKEN is configured.
    #[error("admin endpoints are disabled: set ADMIN_TOKEN to enable them")]
    AdminDisabled,
    /// A missing, malformed or unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// The write-ahead log store could not answer a read.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A write the log could not take: refused, executed nowhere.
    #[error("{0}; the write was not executed")]
    NotLogged(#[source] WalError),
    /// A request with the same idempotency key is still in flight.
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key reused for a different request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// No instance could serve the request.
    #[error("no usable Chroma instance: {0}")]
    Unavailable(String),
    /// This proxy does not lead, and the request may not be forwarded (again) to the one that
    /// does; nothing was logged or executed. Marked with [`NOT_LEADER_HEADER`], so that the
    /// follower that forwarded it sends it to the new leader.
    #[error("this proxy is not the leader: {0}")]
    NotLeader(String),
    /// An instance's answer could not be passed on.
    #[error("{0}")]
    BadGateway(String),
    /// An actor of the proxy did not answer.
    #[error("the {actor} did not answer: {source}")]
    ActorGone {
        actor: &'static str,
        #[source]
        source: actix::MailboxError,
    },
    /// A task on the blocking pool did not finish.
    #[error("a blocking task failed: {0}")]
    Blocking(#[from] actix_web::error::BlockingError),
    /// An internal part of the proxy did not answer.
    #[error("{0}")]
    Internal(String),
}

/// The status a store error is answered with: an outage is 503 (retry later), a conflict 409,
/// anything else a bug (500).
fn wal_status(e: &WalError) -> StatusCode {
    match e {
        WalError::Unavailable(_) | WalError::Fenced(_) => StatusCode::SERVICE_UNAVAILABLE,
        WalError::Conflict(_) => StatusCode::CONFLICT,
        WalError::Bug(_) | WalError::Migration(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// Wraps the failure of a message to `actor` (`.map_err(ApiError::actor("router"))`).
    pub fn actor(actor: &'static str) -> impl FnOnce(actix::MailboxError) -> Self {
        move |source| Self::ActorGone { actor, source }
    }

    /// The Chroma error name the official clients map to their exception for this condition.
    pub fn name(&self) -> ErrorName {
        match self {
            Self::NotFound(_) => ErrorName::NotFound,
            Self::BadRequest(_) | Self::IdempotencyMismatch(_) => ErrorName::InvalidArgument,
            // Chroma's own names for 413 and 409.
            Self::PayloadTooLarge(_) | Self::Conflict(_) => ErrorName::Chroma,
            Self::AdminDisabled | Self::Forbidden(_) => ErrorName::Authorization,
            Self::Unauthorized(_) => ErrorName::Auth,
            Self::Wal(e) | Self::NotLogged(e) if wal_status(e) == StatusCode::CONFLICT => {
                ErrorName::Chroma
            }
            Self::Unavailable(_)
            | Self::NotLeader(_)
            | Self::Wal(_)
            | Self::NotLogged(_)
            | Self::BadGateway(_)
            | Self::ActorGone { .. }
            | Self::Blocking(_)
            | Self::Internal(_) => ErrorName::Internal,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AdminDisabled | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) | Self::NotLeader(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Wal(e) | Self::NotLogged(e) => wal_status(e),
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::IdempotencyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ActorGone { .. } | Self::Blocking(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::NotLeader(_)) {
            response.insert_header((NOT_LEADER_HEADER, "1"));
        }
        response.json(json!({"error": self.name().as_str(), "message": self.to_string()}))
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound(m) => Self::NotFound(m),
            RouteError::BadCollectionId(m) => Self::BadRequest(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_chromas_name_and_status() {
        let cases = [
            (ApiError::NotFound(String::new()), 404, "NotFoundError"),
            (ApiError::BadRequest(String::new()), 400, "InvalidArgumentError"),
            (ApiError::PayloadTooLarge(1), 413, "ChromaError"),
            (ApiError::Forbidden(String::new()), 403, "AuthorizationError"),
            (ApiError::AdminDisabled, 403, "AuthorizationError"),
            (ApiError::Unauthorized(String::new()), 401, "AuthError"),
            (ApiError::Wal(WalError::Unavailable(String::new())), 503, "InternalError"),
            (ApiError::NotLogged(WalError::Unavailable(String::new())), 503, "InternalError"),
            (ApiError::NotLogged(WalError::Conflict(String::new())), 409, "ChromaError"),
            (ApiError::Wal(WalError::Bug(String::new())), 500, "InternalError"),
            (ApiError::Conflict(String::new()), 409, "ChromaError"),
            (ApiError::IdempotencyMismatch(String::new()), 422, "InvalidArgumentError"),
            (ApiError::Unavailable(String::new()), 503, "InternalError"),
            (ApiError::BadGateway(String::new()), 502, "InternalError"),
            (ApiError::Internal(String::new()), 500, "InternalError"),
        ];
        for (error, status, name) in cases {
            assert_eq!((error.status_code().as_u16(), error.name().as_str()), (status, name));
        }
    }
}
