//! Errors the HTTP layer answers itself, each mapped to a status code and Chroma's JSON error
//! shape `{"error": "...", "message": "..."}`.
//!
//! Never includes a header value, token or request body in a message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::chroma::routes::RouteError;

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
    /// Missing or wrong admin bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The write-ahead log store cannot be used.
    #[error("{0}")]
    WalUnavailable(String),
    /// A request with the same idempotency key is still in flight.
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key reused for a different request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// No instance could serve the request.
    #[error("no usable Chroma instance: {0}")]
    Unavailable(String),
    /// An instance's answer could not be passed on.
    #[error("{0}")]
    BadGateway(String),
    /// An internal part of the proxy did not answer.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NotFound",
            Self::BadRequest(_) => "InvalidArgument",
            Self::PayloadTooLarge(_) => "PayloadTooLarge",
            Self::AdminDisabled | Self::Forbidden(_) => "Forbidden",
            Self::Unauthorized => "Unauthorized",
            Self::Unavailable(_) | Self::WalUnavailable(_) => "ServiceUnavailable",
            Self::Conflict(_) => "Conflict",
            Self::IdempotencyMismatch(_) => "IdempotencyKeyReused",
            Self::BadGateway(_) => "BadGateway",
            Self::Internal(_) => "InternalError",
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
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) | Self::WalUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::IdempotencyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({"error": self.kind(), "message": self.to_string()}))
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
