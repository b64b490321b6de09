//! The proxy's policy over Chroma's operations:
//!
//! - [`Access`]: whether a request reads or changes state;
//! - [`Scope`]: the part of Chroma's state a write changes and a read depends on, for
//!   read-your-writes routing and replication progress;
//! - [`Claim`]: what a write holds while it runs, and which claims conflict. Claims nest: a
//!   Global claim conflicts with every claim, a Database claim with every claim of its
//!   database and of the collections in it, a Collection claim with the claims of the same
//!   records (or of the whole collection).
//!
//! Pure functions over classified routes and bodies: this module never does I/O, never holds
//! state, and never decides where a request goes.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::chroma::routes::{Operation, Route, created_name};

/// Whether a request reads or changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served by any instance that has applied what it depends on.
    Read,
    /// Logged first, then executed on one instance and replicated to the others.
    Write,
}

impl Access {
    /// Read for [`Operation::Read`], write for everything else.
    pub fn of(op: Operation) -> Self {
        if op == Operation::Read { Self::Read } else { Self::Write }
    }
}

/// The part of Chroma's state a write changes and a read depends on (stored in the WAL by its
/// [`Scope::key`]; the mapping is in `wal::models`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, diesel::AsExpression, diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Scope {
    /// Tenants, databases, reset: everything depends on them.
    Global,
    /// The collections of one database (create, delete, rename, fork), by `tenant/database`.
    Database(String),
    /// The records of one collection, by canonical id.
    Collection(String),
}

/// A scope key read back from the log that no version of the proxy writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope key `{0}`")]
pub struct UnknownScope(pub String);

impl Scope {
    /// The text stored in the WAL's `scope` column.
    pub fn key(&self) -> String {
        match self {
            Self::Global => "global".to_string(),
            Self::Database(d) => format!("database:{d}"),
            Self::Collection(c) => format!("collection:{c}"),
        }
    }

    /// Parses [`Scope::key`]; anything else is an error, never a default.
    pub fn from_key(key: &str) -> Result<Self, UnknownScope> {
        if key == "global" {
            Ok(Self::Global)
        } else if let Some(d) = key.strip_prefix("database:") {
            Ok(Self::Database(d.to_string()))
        } else if let Some(c) = key.strip_prefix("collection:") {
            Ok(Self::Collection(c.to_string()))
        } else {
            Err(UnknownScope(key.to_string()))
        }
    }

    /// The scope a write changes: its collection's records, its database's collections, or
    /// everything (tenants and databases, whose creation every read may depend on).
    pub fn of_write(route: &Route) -> Self {
        use Operation as Op;
        match (route.op, route.collection_id(), &route.database) {
            (op, Some(id), _) if op.is_record_write() => Self::Collection(id.to_string()),
            (
                Op::CreateCollection
                | Op::UpdateCollection
                | Op::DeleteCollection
                | Op::ForkCollection,
                _,
                Some(database),
            ) => Self::Database(database.clone()),
            _ => Self::Global,
        }
    }

    /// The scopes a read depends on: everything, its database, its collection.
    pub fn of_read(route: &Route) -> Vec<Self> {
        let mut scopes = vec![Self::Global];
        scopes.extend(route.database.clone().map(Self::Database));
        scopes.extend(route.collection_id().map(|id| Self::Collection(id.to_string())));
        scopes
    }
}

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(key: &str) -> Result<Self, UnknownScope> {
        Self::from_key(key)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The records of one collection a write changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// All of them (a delete with a filter, an unreadable body, an attached function).
    All,
    /// Only the records with these ids.
    Ids(HashSet<String>),
}

impl Records {
    fn conflicts(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ids(a), Self::Ids(b)) => !a.is_disjoint(b),
            _ => true,
        }
    }
}

/// What a write holds while it is logged, executed and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Everything: reset, tenant create and update.
    Global,
    /// One database (`tenant/database`) and every collection in it: collection create,
    /// update, delete and fork (which so also claims its source), database create and delete.
    Database(String),
    /// Records of one collection (by canonical id) of a database.
    Collection {
        /// `tenant/database` of the collection.
        database: String,
        /// Canonical collection id.
        collection: String,
        /// Which records.
        records: Records,
    },
}

impl Claim {
    /// The claim of a write. Add, upsert, update and delete by id claim their ids; anything
    /// the proxy cannot narrow down claims the next wider level.
    pub fn of(route: &Route, body: &[u8]) -> Self {
        use Operation as Op;
        let database = route.database.clone();
        match route.op {
            Op::Read | Op::Reset | Op::CreateTenant | Op::UpdateTenant => Self::Global,
            Op::CreateDatabase => {
                created_database(route, body).map_or(Self::Global, Self::Database)
            }
            Op::DeleteDatabase
            | Op::CreateCollection
            | Op::UpdateCollection
            | Op::DeleteCollection
            | Op::ForkCollection => database.map_or(Self::Global, Self::Database),
            Op::Add
            | Op::Update
            | Op::Upsert
            | Op::DeleteRecords
            | Op::AttachFunction
            | Op::DetachFunction => match (database, route.collection_id()) {
                (Some(database), Some(collection)) => Self::Collection {
                    database,
                    collection: collection.to_string(),
                    records: records(route.op, body),
                },
                (Some(database), None) => Self::Database(database),
                (None, _) => Self::Global,
            },
        }
    }

    /// Whether two writes with these claims must not run at once.
    pub fn conflicts(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Global, _) | (_, Self::Global) => true,
            (Self::Database(a), Self::Database(b)) => a == b,
            (Self::Database(d), Self::Collection { database, .. })
            | (Self::Collection { database, .. }, Self::Database(d)) => d == database,
            (
                Self::Collection { collection: a, records: ra, .. },
                Self::Collection { collection: b, records: rb, .. },
            ) => a == b && ra.conflicts(rb),
        }
    }

    /// The scopes whose logged writes an instance must have applied before a write with this
    /// claim runs there: those of every write whose claim can conflict with it, so that it
    /// never overtakes one on any instance. `None`: every scope (a Global claim).
    /// `collections_of(database)` lists the canonical ids of a database's collections.
    pub fn waits_for(
        &self,
        collections_of: impl FnOnce(&str) -> Vec<String>,
    ) -> Option<Vec<Scope>> {
        match self {
            Self::Global => None,
            Self::Database(database) => {
                let mut scopes = vec![Scope::Global, Scope::Database(database.clone())];
                scopes.extend(collections_of(database).into_iter().map(Scope::Collection));
                Some(scopes)
            }
            Self::Collection { database, collection, .. } => Some(vec![
                Scope::Global,
                Scope::Database(database.clone()),
                Scope::Collection(collection.clone()),
            ]),
        }
    }
}

/// `tenant/name` of the database a create names in its body.
fn created_database(route: &Route, body: &[u8]) -> Option<String> {
    let tenant = route.tenant.as_deref()?;
    Some(format!("{tenant}/{}", created_name(body)?))
}

/// The ids of an add, upsert, update or delete by id; all records otherwise.
fn records(op: Operation, body: &[u8]) -> Records {
    #[derive(Deserialize)]
    struct ById {
        ids: Option<Vec<String>>,
        #[serde(rename = "where")]
        filter: Option<IgnoredAny>,
        where_document: Option<IgnoredAny>,
    }
    if !matches!(
        op,
        Operation::Add | Operation::Upsert | Operation::Update | Operation::DeleteRecords
    ) {
        return Records::All;
    }
    match serde_json::from_slice::<ById>(body) {
        Ok(ById { ids: Some(ids), filter: None, where_document: None }) if !ids.is_empty() => {
            Records::Ids(ids.into_iter().collect())
        }
        _ => Records::All,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;
    use crate::chroma::routes::classify;

    const T: &str = "/api/v2/tenants/t";
    const D: &str = "/api/v2/tenants/t/databases/d";
    const C1: &str = "11111111-2222-3333-4444-555555555555";
    const C2: &str = "66666666-2222-3333-4444-555555555555";
    const C3: &str = "77777777-2222-3333-4444-555555555555";

    /// The claim of `method path body`.
    fn claim(method: &str, path: &str, body: &str) -> Claim {
        let route = classify(&Method::from_bytes(method.as_bytes()).unwrap(), path).unwrap();
        Claim::of(&route, body.as_bytes())
    }

    /// One write of every operation kind, named, with its claim.
    fn kinds() -> Vec<(&'static str, Claim)> {
        let c = |id: &str, op: &str| format!("{D}/collections/{id}/{op}");
        vec![
            ("reset", claim("POST", "/api/v2/reset", "")),
            ("create tenant", claim("POST", "/api/v2/tenants", r#"{"name":"t2"}"#)),
            ("update tenant", claim("PATCH", T, "{}")),
            ("create database d", claim("POST", &format!("{T}/databases"), r#"{"name":"d"}"#)),
            ("create database e", claim("POST", &format!("{T}/databases"), r#"{"name":"e"}"#)),
            ("delete database d", claim("DELETE", D, "")),
            ("create collection", claim("POST", &format!("{D}/collections"), r#"{"name":"x"}"#)),
            ("update collection", claim("PUT", &format!("{D}/collections/{C1}"), "{}")),
            ("delete collection", claim("DELETE", &format!("{D}/collections/x"), "")),
            ("fork c1", claim("POST", &c(C1, "fork"), r#"{"new_name":"y"}"#)),
            ("add c1 a", claim("POST", &c(C1, "add"), r#"{"ids":["a"]}"#)),
            ("upsert c1 a b", claim("POST", &c(C1, "upsert"), r#"{"ids":["a","b"]}"#)),
            ("update c1 b", claim("POST", &c(C1, "update"), r#"{"ids":["b"]}"#)),
            ("delete c1 c", claim("POST", &c(C1, "delete"), r#"{"ids":["c"]}"#)),
            ("delete c1 where", claim("POST", &c(C1, "delete"), r#"{"where":{"k":1}}"#)),
            ("attach c1", claim("POST", &c(C1, "functions/attach"), "{}")),
            ("add c2 a", claim("POST", &c(C2, "add"), r#"{"ids":["a"]}"#)),
            (
                "add other db",
                claim("POST", &format!("{T}/databases/e/collections/{C3}/add"), r#"{"ids":["z"]}"#),
            ),
        ]
    }

    /// The pairs that may run at once; every other pair of distinct kinds conflicts.
    const COMMUTING: &[(&str, &str)] = &[
        ("create database d", "create database e"),
        ("create database e", "delete database d"),
        ("create database e", "create collection"),
        ("create database e", "update collection"),
        ("create database e", "delete collection"),
        ("create database e", "fork c1"),
        ("create database e", "add c1 a"),
        ("create database e", "upsert c1 a b"),
        ("create database e", "update c1 b"),
        ("create database e", "delete c1 c"),
        ("create database e", "delete c1 where"),
        ("create database e", "attach c1"),
        ("create database e", "add c2 a"),
        ("create database d", "add other db"),
        ("delete database d", "add other db"),
        ("create collection", "add other db"),
        ("update collection", "add other db"),
        ("delete collection", "add other db"),
        ("fork c1", "add other db"),
        ("add c1 a", "add other db"),
        ("upsert c1 a b", "add other db"),
        ("update c1 b", "add other db"),
        ("delete c1 c", "add other db"),
        ("delete c1 where", "add other db"),
        ("attach c1", "add other db"),
        ("add c2 a", "add other db"),
        ("add c1 a", "update c1 b"),
        ("add c1 a", "delete c1 c"),
        ("upsert c1 a b", "delete c1 c"),
        ("update c1 b", "delete c1 c"),
        ("add c1 a", "add c2 a"),
        ("upsert c1 a b", "add c2 a"),
        ("update c1 b", "add c2 a"),
        ("delete c1 c", "add c2 a"),
        ("delete c1 where", "add c2 a"),
        ("attach c1", "add c2 a"),
    ];

    #[test]
    fn every_pair_of_kinds_conflicts_or_not_as_claims_nest() {
        let kinds = kinds();
        for (i, (a, claim_a)) in kinds.iter().enumerate() {
            for (b, claim_b) in &kinds[i..] {
                let commutes =
                    a != b && COMMUTING.iter().any(|(x, y)| (x, y) == (a, b) || (x, y) == (b, a));
                assert_eq!(claim_a.conflicts(claim_b), !commutes, "{a} / {b}");
                assert_eq!(claim_b.conflicts(claim_a), !commutes, "{b} / {a} (symmetric)");
            }
        }
        for (x, y) in COMMUTING {
            assert!(kinds.iter().any(|(k, _)| k == x) && kinds.iter().any(|(k, _)| k == y));
        }
    }

    #[test]
    fn claims_follow_the_operation_and_the_body() {
        let add = |body: &str| claim("POST", &format!("{D}/collections/{C1}/add"), body);
        let ids = |ids: &[&str]| Claim::Collection {
            database: "t/d".into(),
            collection: C1.into(),
            records: Records::Ids(ids.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(add(r#"{"ids":["a","b"],"embeddings":[[1],[2]]}"#), ids(&["a", "b"]));
        let whole = Claim::Collection {
            database: "t/d".into(),
            collection: C1.into(),
            records: Records::All,
        };
        assert_eq!(add("not json"), whole);
        assert_eq!(add(r#"{"ids":[]}"#), whole);
        assert_eq!(add(r#"{"ids":["a"],"where_document":{"$contains":"x"}}"#), whole);
        assert_eq!(
            claim("POST", &format!("{T}/databases"), "not json"),
            Claim::Global,
            "a database create whose name cannot be read claims everything"
        );
        assert_eq!(claim("DELETE", D, ""), Claim::Database("t/d".into()));
    }

    /// A write waits for what its claim conflicts with: a collection delete for the record
    /// writes of every collection of its database (fault schedule seed 26), a database delete
    /// for everything in it, a reset for everything (reset schedule seed 1).
    #[test]
    fn a_write_waits_for_every_scope_it_conflicts_with() {
        let in_d = |d: &str| if d == "t/d" { vec![C1.to_string()] } else { Vec::new() };
        let waits = |method, path: &str, body| claim(method, path, body).waits_for(in_d);
        let database = vec![Scope::Global, Scope::Database("t/d".into())];
        let with_c1 = [database.clone(), vec![Scope::Collection(C1.into())]].concat();
        assert_eq!(waits("DELETE", &format!("{D}/collections/docs"), ""), Some(with_c1.clone()));
        assert_eq!(waits("DELETE", D, ""), Some(with_c1.clone()));
        assert_eq!(waits("POST", "/api/v2/reset", ""), None);
        assert_eq!(waits("POST", "/api/v2/tenants", r#"{"name":"x"}"#), None);
        let add = waits("POST", &format!("{D}/collections/{C1}/add"), r#"{"ids":["a"]}"#);
        assert_eq!(add, Some(with_c1));
        let other = waits("POST", &format!("{D}/collections/{C2}/upsert"), "{}");
        assert_eq!(other, Some([database, vec![Scope::Collection(C2.into())]].concat()));
        let created = waits("POST", &format!("{T}/databases"), r#"{"name":"e"}"#);
        assert_eq!(created, Some(vec![Scope::Global, Scope::Database("t/e".into())]));
    }

    #[test]
    fn scopes_of_writes_and_reads() {
        let route =
            |m: &str, p: &str| classify(&Method::from_bytes(m.as_bytes()).unwrap(), p).unwrap();
        let add = route("POST", &format!("{D}/collections/{C1}/add"));
        assert_eq!(Scope::of_write(&add), Scope::Collection(C1.into()));
        let delete = route("DELETE", &format!("{D}/collections/docs"));
        assert_eq!(Scope::of_write(&delete), Scope::Database("t/d".into()));
        assert_eq!(Scope::of_write(&route("POST", "/api/v2/reset")), Scope::Global);
        assert_eq!(Scope::of_write(&route("DELETE", D)), Scope::Global);
        let query = route("POST", &format!("{D}/collections/{C1}/query"));
        assert_eq!(
            Scope::of_read(&query),
            [Scope::Global, Scope::Database("t/d".into()), Scope::Collection(C1.into())]
        );
        assert_eq!(Access::of(query.op), Access::Read);
        assert_eq!(Access::of(add.op), Access::Write);
    }

    #[test]
    fn scope_keys_round_trip_and_unknown_keys_are_errors() {
        for s in [Scope::Global, Scope::Database("t/d".into()), Scope::Collection("x".into())] {
            assert_eq!(Scope::from_key(&s.key()), Ok(s));
        }
        assert_eq!(Scope::from_key(""), Err(UnknownScope(String::new())));
        assert!(Scope::from_key("tenant:x").is_err());
    }
}
