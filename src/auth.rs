//! Who may do what (DESIGN 14): the tokens an operator declares, how a request presents one, and
//! what each role, tenant and database list allows.
//!
//! Chroma 1.x has no authentication of its own, so this is where it happens. A token is held in
//! memory only as its SHA-256, and every presented token is hashed and compared in constant time
//! with every declared one. Pure parsing and policy: this module never does I/O (its caller reads
//! the files), never logs, and never returns or formats a token, only its name.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::chroma::routes::{Operation, Route, created_name};

/// The header of the official clients' token provider besides `Authorization: Bearer`.
pub const CHROMA_TOKEN_HEADER: &str = "x-chroma-token";

/// Written for every tenant or every database.
const ALL: &str = "*";

/// Shortest token accepted in clear (`token = ...`): a shorter one can be guessed.
const MIN_TOKEN_LEN: usize = 16;

/// What a token may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Read,
    /// Reads, record writes, and collection create, update, delete and fork.
    Write,
    /// Everything: also reset, tenants, databases and `/admin/*`.
    Admin,
}

impl Role {
    /// The role a Chroma operation needs.
    pub fn needed_for(op: Operation) -> Self {
        use Operation as Op;
        match op {
            Op::Read => Self::Read,
            Op::Add
            | Op::Update
            | Op::Upsert
            | Op::DeleteRecords
            | Op::AttachFunction
            | Op::DetachFunction
            | Op::CreateCollection
            | Op::UpdateCollection
            | Op::DeleteCollection
            | Op::ForkCollection => Self::Write,
            Op::Reset
            | Op::CreateTenant
            | Op::UpdateTenant
            | Op::CreateDatabase
            | Op::DeleteDatabase => Self::Admin,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// One declared token, without the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its name: what logs, metrics and `auth/identity` show.
    pub name: String,
    digest: [u8; 32],
    /// What it may do.
    pub role: Role,
    /// The tenant it may use, or `*` for every tenant.
    pub tenant: String,
    /// The databases it may use in that tenant; `*` for all of them.
    pub databases: Vec<String>,
}

impl Token {
    fn every_tenant(&self) -> bool {
        self.tenant == ALL
    }

    fn every_database(&self) -> bool {
        self.databases.iter().any(|d| d == ALL)
    }

    /// Whether it may use everything: every tenant and every database.
    pub fn unrestricted(&self) -> bool {
        self.every_tenant() && self.every_database()
    }

    fn may_use_tenant(&self, tenant: &str) -> bool {
        self.every_tenant() || self.tenant == tenant
    }

    fn may_use_database(&self, tenant: &str, database: &str) -> bool {
        self.may_use_tenant(tenant)
            && (self.every_database() || self.databases.iter().any(|d| d == database))
    }

    /// Whether this token may do `route` (whose body is `body`), and if not, why.
    pub fn authorize(&self, route: &Route, body: &[u8]) -> Result<(), Denied> {
        let needed = Role::needed_for(route.op);
        if self.role < needed {
            return Err(Denied::Role { needed, held: self.role });
        }
        let path_tenant = route.tenant.as_deref();
        let path_database = route.database.as_deref().and_then(|d| d.split_once('/'));
        match route.op {
            // A reset empties every tenant on every instance.
            Operation::Reset if !self.unrestricted() => Err(Denied::Tenant(
                "a reset empties every tenant: it needs an admin token for tenant `*` and databases [\"*\"]".into(),
            )),
            Operation::CreateTenant => match created_name(body) {
                Some(tenant) if self.every_tenant() || tenant == self.tenant => Ok(()),
                _ => Err(Denied::Tenant("the token may not create that tenant".into())),
            },
            Operation::CreateDatabase => match (path_tenant, created_name(body)) {
                (Some(tenant), Some(database)) if self.may_use_database(tenant, &database) => {
                    Ok(())
                }
                _ => Err(Denied::Database("the token may not create that database".into())),
            },
            _ => match (path_tenant, path_database) {
                (_, Some((tenant, database))) if !self.may_use_database(tenant, database) => {
                    Err(if self.may_use_tenant(tenant) {
                        Denied::Database(format!("the token may not use database `{database}`"))
                    } else {
                        Denied::Tenant(format!("the token may not use tenant `{tenant}`"))
                    })
                }
                (Some(tenant), _) if !self.may_use_tenant(tenant) => {
                    Err(Denied::Tenant(format!("the token may not use tenant `{tenant}`")))
                }
                // Not about one tenant's data, nor about the server: only for every tenant.
                (None, None) if !route.about_server && !self.every_tenant() => Err(
                    Denied::Tenant("this route is not about one tenant: it needs tenant `*`".into()),
                ),
                _ => Ok(()),
            },
        }
    }
}

/// Why a request was refused: 401 for the first three, 403 for the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token.
    #[error("a token is required: send Authorization: Bearer TOKEN or X-Chroma-Token: TOKEN")]
    Missing,
    /// A token not in the expected form.
    #[error("{0}")]
    Malformed(String),
    /// A token no entry declares.
    #[error("unknown token")]
    Unknown,
    /// The token's role does not allow the operation.
    #[error("this needs the `{}` role; the token has `{}`", needed.as_str(), held.as_str())]
    Role { needed: Role, held: Role },
    /// The operation is outside the token's tenant.
    #[error("{0}")]
    Tenant(String),
    /// The operation is outside the token's databases.
    #[error("{0}")]
    Database(String),
}

impl Denied {
    /// Whether the caller is unknown (401) rather than known and refused (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Missing | Self::Malformed(_) | Self::Unknown)
    }

    /// The reason as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::Unknown => "unknown",
            Self::Role { .. } => "role",
            Self::Tenant(_) => "tenant",
            Self::Database(_) => "database",
        }
    }
}

/// Every [`Denied::reason`], for metrics and status.
pub const DENIAL_REASONS: [&str; 6] =
    ["missing", "malformed", "unknown", "role", "tenant", "database"];

/// The token a request presents, if any: `Authorization: Bearer T` or `X-Chroma-Token: T`, once.
/// A request that also names a credential in its query string is refused: query strings end up
/// in access logs.
pub fn presented<'a>(headers: &'a HeaderMap, query: &str) -> Result<Option<&'a str>, Denied> {
    let credential_in_query = query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        matches!(key.as_str(), "token" | "access_token" | "x-chroma-token" | "authorization")
    });
    if credential_in_query {
        return Err(Denied::Malformed(
            "credentials are not accepted in the query string; send them in a header".into(),
        ));
    }
    let bearer: Vec<_> = headers.get_all(AUTHORIZATION).collect();
    let chroma: Vec<_> = headers.get_all(CHROMA_TOKEN_HEADER).collect();
    let text = |value: &'a actix_web::http::header::HeaderValue| {
        value.to_str().map_err(|_| Denied::Malformed("the token is not visible ASCII".into()))
    };
    let token = match (bearer.as_slice(), chroma.as_slice()) {
        ([], []) => return Ok(None),
        ([value], []) => {
            let value = text(value)?;
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Denied::Malformed("expected Authorization: Bearer TOKEN".into()));
            }
            token.trim()
        }
        ([], [value]) => text(value)?.trim(),
        _ => {
            return Err(Denied::Malformed(
                "send one token, in Authorization or X-Chroma-Token, once".into(),
            ));
        }
    };
    if token.is_empty() {
        return Err(Denied::Malformed("the token is empty".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Denied::Malformed("the token is not visible ASCII".into()));
    }
    Ok(Some(token))
}

/// The declared tokens. Empty: the proxy is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Arc<Token>>);

/// One `[[tokens]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: Option<String>,
    token: Option<String>,
    role: Role,
    tenant: String,
    databases: Vec<String>,
}

/// The `[[tokens]]` of a TOML document; nothing else of it is read.
#[derive(Debug, Deserialize)]
struct Document {
    #[serde(default)]
    tokens: Vec<toml::Value>,
}

impl Tokens {
    /// The `[[tokens]]` entries of a TOML document (other keys are left alone); an error names
    /// the entry, by position and name, and what is wrong with it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let document: Document = toml::from_str(text).map_err(|e| {
            format!("not a valid tokens document ([[tokens]] entries): {}", e.message())
        })?;
        let mut tokens = Self::default();
        for (n, value) in document.tokens.into_iter().enumerate() {
            let name = value.get("name").and_then(toml::Value::as_str).unwrap_or("?").to_string();
            let at = |why: String| format!("tokens[{n}] (`{name}`): {why}");
            let entry = Entry::deserialize(value).map_err(|e| at(e.message().to_string()))?;
            tokens.add(Token::try_from(entry).map_err(at)?).map_err(at)?;
        }
        Ok(tokens)
    }

    /// Adds the tokens of `other`; a name declared twice is an error.
    pub fn merge(mut self, other: Self) -> Result<Self, String> {
        for token in other.0 {
            let name = token.name.clone();
            self.add(Arc::unwrap_or_clone(token)).map_err(|e| format!("`{name}`: {e}"))?;
        }
        Ok(self)
    }

    fn add(&mut self, token: Token) -> Result<(), String> {
        if self.0.iter().any(|t| t.name == token.name) {
            return Err("a token of that name is already declared".into());
        }
        if self.0.iter().any(|t| bool::from(t.digest.ct_eq(&token.digest))) {
            return Err("the same token is declared under another name".into());
        }
        self.0.push(Arc::new(token));
        Ok(())
    }

    /// Whether no token is declared (open mode).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names of the declared tokens, for the log.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|t| t.name.as_str()).collect()
    }

    /// The declared token `presented` is. Every entry is compared, in constant time, so how
    /// long this takes says nothing about which entry (or how much of one) matched.
    pub fn find(&self, presented: &str) -> Option<Arc<Token>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token.clone());
            }
        }
        found
    }

    /// The token `presented` by a request's headers and query, or why there is none.
    pub fn caller(&self, headers: &HeaderMap, query: &str) -> Result<Arc<Token>, Denied> {
        let token = presented(headers, query)?.ok_or(Denied::Missing)?;
        self.find(token).ok_or(Denied::Unknown)
    }
}

impl TryFrom<Entry> for Token {
    type Error = String;

    fn try_from(entry: Entry) -> Result<Self, String> {
        let name_ok = !entry.name.is_empty()
            && entry.name.len() <= 64
            && entry.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err("name must be 1 to 64 letters, digits, `.`, `_` or `-`".into());
        }
        let digest = match (entry.sha256, entry.token) {
            (Some(hex), None) => parse_digest(&hex)?,
            (None, Some(token)) => {
                if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "token must be at least {MIN_TOKEN_LEN} visible ASCII characters"
                    ));
                }
                Sha256::digest(token.as_bytes()).into()
            }
            _ => return Err("give exactly one of `sha256` (hex of the token) or `token`".into()),
        };
        if entry.tenant.is_empty() {
            return Err("tenant must be a tenant name or `*`".into());
        }
        let databases: BTreeSet<&String> = entry.databases.iter().collect();
        if databases.is_empty() || databases.iter().any(|d| d.is_empty()) {
            return Err("databases must list database names, or be [\"*\"]".into());
        }
        if databases.contains(&ALL.to_string()) && databases.len() > 1 {
            return Err("databases is either [\"*\"] or a list of names, not both".into());
        }
        Ok(Self {
            name: entry.name,
            digest,
            role: entry.role,
            tenant: entry.tenant,
            databases: databases.into_iter().cloned().collect(),
        })
    }
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bad = || "sha256 must be 64 hex digits (sha256sum of the token)".to_string();
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (n, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * n..2 * n + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::chroma::routes::classify;

    const READER: &str = "reader-token-0123456789";
    const WRITER: &str = "writer-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn tokens() -> Tokens {
        let writer_hash: String =
            Sha256::digest(WRITER.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Tokens::from_toml(&format!(
            r#"
            primary_url = "ignored: only [[tokens]] is read"
            [[tokens]]
            name = "reader"
            token = "{READER}"
            role = "read"
            tenant = "acme"
            databases = ["sales"]
            [[tokens]]
            name = "writer"
            sha256 = "{writer_hash}"
            role = "write"
            tenant = "acme"
            databases = ["*"]
            [[tokens]]
            name = "root"
            token = "{ADMIN}"
            role = "admin"
            tenant = "*"
            databases = ["*"]
            "#
        ))
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn may(token: &str, method: &str, path: &str, body: &str) -> Result<(), Denied> {
        let caller = tokens().find(token).unwrap();
        let route = classify(&Method::from_bytes(method.as_bytes()).unwrap(), path).unwrap();
        caller.authorize(&route, body.as_bytes())
    }

    #[test]
    fn tokens_are_found_by_either_header_and_never_in_the_query() {
        let tokens = tokens();
        let bearer = headers(&[("authorization", &format!("Bearer {READER}"))]);
        assert_eq!(tokens.caller(&bearer, "").unwrap().name, "reader");
        let chroma = headers(&[("x-chroma-token", WRITER)]);
        assert_eq!(tokens.caller(&chroma, "limit=3").unwrap().name, "writer");
        assert_eq!(tokens.caller(&headers(&[]), ""), Err(Denied::Missing));
        let wrong = headers(&[("x-chroma-token", "not-a-declared-token-at-all")]);
        assert_eq!(tokens.caller(&wrong, ""), Err(Denied::Unknown));
        for bad in [
            headers(&[("authorization", "Bearer ")]),
            headers(&[("authorization", &format!("Basic {READER}"))]),
            headers(&[("x-chroma-token", READER), ("x-chroma-token", READER)]),
            headers(&[("authorization", &format!("Bearer {READER}")), ("x-chroma-token", READER)]),
        ] {
            assert!(matches!(tokens.caller(&bad, ""), Err(Denied::Malformed(_))), "{bad:?}");
        }
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer t\xc3\xa9").unwrap());
        assert!(matches!(tokens.caller(&non_ascii, ""), Err(Denied::Malformed(_))));
        let query = tokens.caller(&bearer, &format!("limit=1&token={READER}"));
        assert!(matches!(query, Err(Denied::Malformed(_))));
    }

    #[test]
    fn roles_nest() {
        let d = "/api/v2/tenants/acme/databases/sales";
        let c = "11111111-2222-3333-4444-555555555555";
        assert_eq!(may(READER, "POST", &format!("{d}/collections/{c}/query"), "{}"), Ok(()));
        assert_eq!(
            may(READER, "POST", &format!("{d}/collections/{c}/add"), "{}"),
            Err(Denied::Role { needed: Role::Write, held: Role::Read })
        );
        assert_eq!(may(WRITER, "POST", &format!("{d}/collections/{c}/add"), "{}"), Ok(()));
        assert_eq!(may(WRITER, "POST", &format!("{d}/collections"), r#"{"name":"x"}"#), Ok(()));
        assert!(matches!(may(WRITER, "POST", "/api/v2/reset", ""), Err(Denied::Role { .. })));
        assert_eq!(may(ADMIN, "POST", "/api/v2/reset", ""), Ok(()));
        let create_db = "/api/v2/tenants/acme/databases";
        assert!(matches!(
            may(WRITER, "POST", create_db, r#"{"name":"new"}"#),
            Err(Denied::Role { .. })
        ));
        assert_eq!(may(ADMIN, "POST", create_db, r#"{"name":"new"}"#), Ok(()));
    }

    #[test]
    fn tenants_and_databases_bound_a_token() {
        assert_eq!(
            may(READER, "GET", "/api/v2/tenants/acme/databases/sales/collections", ""),
            Ok(())
        );
        assert!(matches!(
            may(READER, "GET", "/api/v2/tenants/acme/databases/hr/collections", ""),
            Err(Denied::Database(_))
        ));
        assert!(matches!(
            may(WRITER, "GET", "/api/v2/tenants/other/databases/sales/collections", ""),
            Err(Denied::Tenant(_))
        ));
        assert!(matches!(may(WRITER, "GET", "/api/v2/tenants/other", ""), Err(Denied::Tenant(_))));
        assert!(matches!(
            may(WRITER, "GET", "/api/v2/collections/other:sales:docs", ""),
            Err(Denied::Tenant(_))
        ));
        assert_eq!(may(READER, "GET", "/api/v2/heartbeat", ""), Ok(()));
        assert_eq!(may(READER, "GET", "/api/v2/auth/identity", ""), Ok(()));
        // An unknown GET with no tenant in it is forwarded as a read: only for every tenant.
        assert!(matches!(may(WRITER, "GET", "/api/v2/unknown", ""), Err(Denied::Tenant(_))));
        assert_eq!(may(ADMIN, "GET", "/api/v2/unknown", ""), Ok(()));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let bad = |entry: &str| Tokens::from_toml(&format!("[[tokens]]\n{entry}")).unwrap_err();
        let base = r#"role = "read"
tenant = "t"
databases = ["*"]"#;
        let short = bad(&format!("name = \"ci\"\ntoken = \"short\"\n{base}"));
        assert!(short.starts_with("tokens[0] (`ci`): token must be at least 16"), "{short}");
        let both = bad(&format!("name = \"ci\"\ntoken = \"{READER}\"\nsha256 = \"00\"\n{base}"));
        assert!(both.contains("exactly one of"), "{both}");
        let hex = bad(&format!("name = \"ci\"\nsha256 = \"xyz\"\n{base}"));
        assert!(hex.contains("64 hex digits"), "{hex}");
        let role = bad(
            "name = \"ci\"\ntoken = \"0123456789abcdef\"\nrole = \"root\"\ntenant = \"t\"\ndatabases = [\"*\"]",
        );
        assert!(role.starts_with("tokens[0] (`ci`):") && role.contains("root"), "{role}");
        let twice = format!(
            "[[tokens]]\nname = \"a\"\ntoken = \"{READER}\"\n{base}\n[[tokens]]\nname = \"a\"\ntoken = \"{WRITER}\"\n{base}"
        );
        assert!(
            Tokens::from_toml(&twice)
                .unwrap_err()
                .starts_with("tokens[1] (`a`): a token of that name")
        );
        assert!(Tokens::from_toml("").unwrap().is_empty());
    }
}
