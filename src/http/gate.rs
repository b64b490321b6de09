//! The gate every request passes first (DESIGN 14): with tokens declared, who the caller is and
//! whether its token allows the request; the admin endpoints' check (ADMIN_TOKEN, or an admin
//! token for every tenant); the count of refusals per reason; the reload of the tokens on
//! SIGHUP.
//!
//! Never logs, forwards, stores or echoes a token, and never logs a refused request (refusals
//! are counted): a client guessing tokens must not be able to fill the log. ADMIN_TOKEN is kept
//! only as its SHA-256.

use std::sync::{Arc, RwLock};

use actix_web::HttpRequest;
use log::{error, info};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::auth::{DENIAL_REASONS, Denied, Role, Token, Tokens, presented};
use crate::chroma::routes::Route;
use crate::config::TokenSources;
use crate::stats::bump;

/// Who may pass, and how many were refused.
pub struct Gate {
    tokens: RwLock<Arc<Tokens>>,
    admin_digest: Option<[u8; 32]>,
    sources: TokenSources,
    /// Refusals per reason, in the order of [`DENIAL_REASONS`] (the counters of `/metrics`).
    denied: Vec<Counter>,
}

impl Gate {
    /// A gate letting in `tokens` (none: open mode) and, on `/admin/*`, `admin_token`,
    /// counting refusals in `denied` (one counter per [`DENIAL_REASONS`]).
    pub fn new(
        tokens: Tokens,
        admin_token: Option<&str>,
        sources: TokenSources,
        denied: Vec<Counter>,
    ) -> Self {
        Self {
            tokens: RwLock::new(Arc::new(tokens)),
            admin_digest: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            sources,
            denied,
        }
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether no token is declared: every Chroma request passes.
    pub fn is_open(&self) -> bool {
        self.tokens().is_empty()
    }

    /// Counts the refusal and turns it into the client's 401 or 403.
    fn deny(&self, denied: Denied) -> ApiError {
        let reason = denied.reason();
        if let Some(counter) =
            DENIAL_REASONS.iter().position(|r| *r == reason).and_then(|n| self.denied.get(n))
        {
            bump(counter);
        }
        if denied.is_unauthenticated() {
            ApiError::Unauthorized(denied.to_string())
        } else {
            ApiError::Forbidden(denied.to_string())
        }
    }

    /// The caller of a Chroma request: its token, or `None` in open mode.
    pub fn caller(&self, req: &HttpRequest) -> Result<Option<Arc<Token>>, ApiError> {
        let tokens = self.tokens();
        if tokens.is_empty() {
            return Ok(None);
        }
        tokens.caller(req.headers(), req.query_string()).map(Some).map_err(|d| self.deny(d))
    }

    /// Whether `caller` may do `route` with this body.
    pub fn authorize(&self, caller: &Token, route: &Route, body: &[u8]) -> Result<(), ApiError> {
        caller.authorize(route, body).map_err(|d| self.deny(d))
    }

    /// Whether `req` may use `/admin/*`: ADMIN_TOKEN, or a declared admin token for every tenant
    /// and database. With neither configured the admin endpoints are off (403).
    pub fn admin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let tokens = self.tokens();
        if self.admin_digest.is_none() && tokens.is_empty() {
            return Err(ApiError::AdminDisabled);
        }
        let given = presented(req.headers(), req.query_string())
            .map_err(|d| self.deny(d))?
            .ok_or_else(|| self.deny(Denied::Missing))?;
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if self.admin_digest.is_some_and(|admin| bool::from(admin.ct_eq(&digest))) {
            return Ok(());
        }
        match tokens.find(given) {
            Some(token) if token.role < Role::Admin => {
                Err(self.deny(Denied::Role { needed: Role::Admin, held: token.role }))
            }
            Some(token) if !token.unrestricted() => Err(self.deny(Denied::Tenant(
                "/admin/* needs ADMIN_TOKEN or an admin token for tenant `*` and databases [\"*\"]"
                    .into(),
            ))),
            Some(_) => Ok(()),
            None => Err(self.deny(Denied::Unknown)),
        }
    }

    /// Re-reads the tokens (on SIGHUP); a bad file keeps the tokens in force and says why.
    pub fn reload(&self) {
        match self.sources.load() {
            Ok(tokens) => {
                info!("auth: tokens reloaded: {}", describe(&tokens));
                *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
            }
            Err(e) => error!("auth: tokens not reloaded, the previous ones stay in force: {e}"),
        }
    }

    /// Refusals since startup, per reason.
    pub fn denials(&self) -> Vec<(&'static str, u64)> {
        DENIAL_REASONS.iter().zip(&self.denied).map(|(r, n)| (*r, n.get())).collect()
    }

    /// `tokens` (with their names) or `open`, for status.
    pub fn mode(&self) -> &'static str {
        if self.is_open() { "open" } else { "tokens" }
    }
}

/// The token names, for the log; never the tokens.
pub fn describe(tokens: &Tokens) -> String {
    if tokens.is_empty() {
        "none (open mode)".to_string()
    } else {
        format!("{} ({})", tokens.names().len(), tokens.names().join(", "))
    }
}
