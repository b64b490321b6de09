//! The error names of Chroma's JSON error body `{"error": NAME, "message": ...}`. The official
//! clients map NAME to their exception types (Python: `chromadb.errors.error_types`), so an
//! answer the proxy makes itself must use one of these names or the client raises a bare
//! exception.
//!
//! Names only: nothing here decides which condition gets which name.

/// A name the official clients know, with the status Chroma answers it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    /// 404: no such collection, tenant, database or route.
    NotFound,
    /// 400: the request is malformed or names something invalid.
    InvalidArgument,
    /// 401: no credentials, or unknown ones.
    Auth,
    /// 403: credentials that do not allow this request.
    Authorization,
    /// 409 "already exists", 413 "length limit exceeded": Chroma's catch-all name.
    Chroma,
    /// 5xx: the server could not do what was asked.
    Internal,
}

impl ErrorName {
    /// The `error` field as Chroma spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NotFoundError",
            Self::InvalidArgument => "InvalidArgumentError",
            Self::Auth => "AuthError",
            Self::Authorization => "AuthorizationError",
            Self::Chroma => "ChromaError",
            Self::Internal => "InternalError",
        }
    }

    /// Every name, for tests that check them against the official client.
    pub const ALL: [Self; 6] = [
        Self::NotFound,
        Self::InvalidArgument,
        Self::Auth,
        Self::Authorization,
        Self::Chroma,
        Self::Internal,
    ];
}
