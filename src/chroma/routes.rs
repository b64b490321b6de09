//! The route table of DESIGN section 8: classifies a request as a read or a write, or refuses it.
//!
//! Never forwards and never guesses: a non-GET request it does not know is refused, because the
//! proxy must not execute a write it cannot replicate.

use actix_web::http::Method;
use uuid::Uuid;

/// The route the official clients call on connect to learn their tenant and databases.
pub const IDENTITY_PATH: &str = "/api/v2/auth/identity";

/// Why a request is refused before it reaches any instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such route (or a write the proxy does not know how to replicate).
    NotFound(String),
    /// A collection id in the path is not a UUID.
    BadCollectionId(String),
}

/// What a request does, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Any read.
    Read,
    Reset,
    CreateTenant,
    UpdateTenant,
    CreateDatabase,
    DeleteDatabase,
    CreateCollection,
    UpdateCollection,
    DeleteCollection,
    ForkCollection,
    Add,
    Update,
    Upsert,
    DeleteRecords,
    AttachFunction,
    DetachFunction,
}

impl Operation {
    /// Writes that change records of one collection (or what runs on them).
    pub fn is_record_write(self) -> bool {
        matches!(
            self,
            Self::Add
                | Self::Update
                | Self::Upsert
                | Self::DeleteRecords
                | Self::AttachFunction
                | Self::DetachFunction
        )
    }

    /// Name stored in the WAL's `kind` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Reset => "reset",
            Self::CreateTenant => "create_tenant",
            Self::UpdateTenant => "update_tenant",
            Self::CreateDatabase => "create_database",
            Self::DeleteDatabase => "delete_database",
            Self::CreateCollection => "create_collection",
            Self::UpdateCollection => "update_collection",
            Self::DeleteCollection => "delete_collection",
            Self::ForkCollection => "fork_collection",
            Self::Add => "add",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::DeleteRecords => "delete_records",
            Self::AttachFunction => "attach_function",
            Self::DetachFunction => "detach_function",
        }
    }

    /// Record writes can wait in the log when no instance is usable (answered 202): the client
    /// needs nothing from their answer. Others (a create's collection, say) cannot.
    pub fn can_queue(self) -> bool {
        matches!(self, Self::Add | Self::Update | Self::Upsert | Self::DeleteRecords)
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What it does.
    pub op: Operation,
    /// The collection id (or, for GET and DELETE by name, the name) in its path, if any.
    pub collection: Option<String>,
    /// The tenant of its path, if any.
    pub tenant: Option<String>,
    /// `tenant/database` of its path, if any.
    pub database: Option<String>,
    /// Whether the answer carries collection objects, whose ids the proxy rewrites.
    pub returns_collections: bool,
    /// Whether the answer is records (get, query, search): nothing in it to rewrite, and it may
    /// be large, so it is streamed above STREAM_THRESHOLD.
    pub returns_records: bool,
    /// A route about the server itself (heartbeat, version, identity...), not about any
    /// tenant's data.
    pub about_server: bool,
}

impl Route {
    /// A route doing `op`, with no collection or database in its path.
    pub fn new(op: Operation) -> Self {
        Self {
            op,
            collection: None,
            tenant: None,
            database: None,
            returns_collections: false,
            returns_records: false,
            about_server: false,
        }
    }

    fn about_server(mut self) -> Self {
        self.about_server = true;
        self
    }

    fn on(op: Operation, collection: &str) -> Self {
        Self { collection: Some(collection.to_string()), ..Self::new(op) }
    }

    fn collections(mut self) -> Self {
        self.returns_collections = true;
        self
    }

    fn records(mut self) -> Self {
        self.returns_records = true;
        self
    }

    /// The collection id in the path, when the path addresses one by id.
    pub fn collection_id(&self) -> Option<&str> {
        self.collection.as_deref().filter(|c| collection_id(c).is_ok())
    }
}

/// Classifies `method path` (path without the query string).
pub fn classify(method: &Method, path: &str) -> Result<Route, RouteError> {
    use Operation as Op;

    let is_get = method == Method::GET;
    let read = Ok(Route::new(Op::Read));
    if path == "/openapi.json" && is_get {
        return Ok(Route::new(Op::Read).about_server());
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return Err(RouteError::NotFound(format!("no route {method} {path}")));
    };
    // Chroma 1.x answers every /api/v1 route with 410 Gone; let it say so.
    if rest == "v1" || rest.starts_with("v1/") {
        return Ok(Route::new(Op::Read).about_server());
    }
    let segments: Option<Vec<&str>> = match rest.strip_prefix("v2") {
        Some("" | "/") => Some(Vec::new()),
        Some(tail) => tail.strip_prefix('/').map(|t| t.split('/').collect()),
        None => None,
    };
    let m = method.as_str();
    let op = match segments.as_deref() {
        None => None,
        Some(
            []
            | ["heartbeat" | "healthcheck" | "version" | "pre-flight-checks"]
            | ["auth", "identity"],
        ) => get_only(m).map(Route::about_server),
        Some(["reset"]) => (m == "POST").then_some(Route::new(Op::Reset)),
        Some(["tenants"]) => (m == "POST").then_some(Route::new(Op::CreateTenant)),
        Some(["tenants", t]) if valid(t) => read_or(m, "PATCH", Op::UpdateTenant),
        Some(["tenants", t, "databases"]) if valid(t) => read_or(m, "POST", Op::CreateDatabase),
        Some(["tenants", t, "databases", d]) if valid(t) && valid(d) => {
            read_or(m, "DELETE", Op::DeleteDatabase)
        }
        Some(["tenants", t, "databases", d, rest @ ..]) if valid(t) && valid(d) => {
            database_route(m, rest)?
        }
        Some(["collections", crn]) if valid(crn) => get_only(m).map(Route::collections),
        Some(_) => None,
    };
    let database = match segments.as_deref() {
        Some(["tenants", t, "databases", d, ..]) => Some(format!("{t}/{d}")),
        Some(["collections", crn]) => {
            let mut parts = crn.splitn(3, ':');
            match (parts.next(), parts.next()) {
                (Some(t), Some(d)) => Some(format!("{t}/{d}")),
                _ => None,
            }
        }
        _ => None,
    };
    let tenant = match segments.as_deref() {
        Some(["tenants", t, ..]) => Some(t.to_string()),
        _ => database.as_deref().and_then(|d| d.split_once('/')).map(|(t, _)| t.to_string()),
    };
    match op {
        Some(route) => Ok(Route { tenant, database, ..route }),
        None if is_get => read,
        None => Err(RouteError::NotFound(format!(
            "chroma-ha does not forward {method} {path}: it is not a Chroma v2 write it knows how to replicate"
        ))),
    }
}

/// The `name` of a tenant or database create's body.
pub fn created_name(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Create {
        name: String,
    }
    serde_json::from_slice::<Create>(body).ok().map(|c| c.name)
}

/// Routes under `/api/v2/tenants/{t}/databases/{d}/`.
fn database_route(m: &str, rest: &[&str]) -> Result<Option<Route>, RouteError> {
    use Operation as Op;
    Ok(match rest {
        ["collections"] => read_or(m, "POST", Op::CreateCollection).map(Route::collections),
        ["collections_count"] => get_only(m),
        ["collections", "by-id", id] => {
            collection_id(id)?;
            (m == "GET").then(|| Route::on(Op::Read, id).collections())
        }
        // GET and DELETE address a collection by name; PUT (modify) by id.
        ["collections", name] if valid(name) => match m {
            "GET" => Some(Route::on(Op::Read, name).collections()),
            "DELETE" => Some(Route::on(Op::DeleteCollection, name)),
            "PUT" => {
                collection_id(name)?;
                Some(Route::on(Op::UpdateCollection, name))
            }
            _ => None,
        },
        ["collections", id, op @ ..] => {
            collection_id(id)?;
            collection_route(m, id, op)
        }
        _ => None,
    })
}

/// Routes under `.../collections/{id}/`.
fn collection_route(m: &str, id: &str, op: &[&str]) -> Option<Route> {
    use Operation as Op;
    let on = |op| Some(Route::on(op, id));
    match (m, op) {
        ("POST", ["add"]) => on(Op::Add),
        ("POST", ["update"]) => on(Op::Update),
        ("POST", ["upsert"]) => on(Op::Upsert),
        ("POST", ["delete"]) => on(Op::DeleteRecords),
        ("POST", ["fork"]) => on(Op::ForkCollection).map(Route::collections),
        ("POST", ["get" | "query" | "search"]) => on(Op::Read).map(Route::records),
        ("GET", ["count" | "indexing_status" | "fork_count"]) => on(Op::Read),
        ("POST", ["functions", "attach"]) => on(Op::AttachFunction),
        ("POST", ["attached_functions", name, "detach"]) if valid(name) => on(Op::DetachFunction),
        ("GET", ["functions", name]) if valid(name) => on(Op::Read),
        _ => None,
    }
}

fn get_only(m: &str) -> Option<Route> {
    (m == "GET").then_some(Route::new(Operation::Read))
}

fn read_or(m: &str, write_method: &str, write: Operation) -> Option<Route> {
    if m == "GET" {
        Some(Route::new(Operation::Read))
    } else {
        (m == write_method).then_some(Route::new(write))
    }
}

fn valid(segment: &str) -> bool {
    !segment.is_empty()
}

/// Whether `text` has the shape of a collection id (a UUID).
pub fn is_collection_id(text: &str) -> bool {
    collection_id(text).is_ok()
}

/// Checks that a path segment is a hyphenated UUID (8-4-4-4-12 hex digits), the only form Chroma
/// gives out. `Uuid::try_parse` alone also takes the simple, braced and `urn:uuid:` forms (32, 38
/// and 45 characters); at 36 characters it takes only the hyphenated one.
fn collection_id(segment: &str) -> Result<(), RouteError> {
    if segment.len() == 36 && Uuid::try_parse(segment).is_ok() {
        Ok(())
    } else {
        Err(RouteError::BadCollectionId(format!(
            "`{segment}` is not a collection id (expected a UUID)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/api/v2/tenants/default_tenant/databases/default_database";
    const ID: &str = "5f1b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

    #[derive(Debug, PartialEq, Eq)]
    enum Access {
        Read,
        Write,
    }

    fn check(method: &str, path: &str) -> Result<Access, RouteError> {
        classify(&Method::from_bytes(method.as_bytes()).unwrap(), path)
            .map(|r| if r.op == Operation::Read { Access::Read } else { Access::Write })
    }

    #[test]
    fn the_route_table() {
        use Access::{Read, Write};
        let c = format!("{P}/collections/{ID}");
        let cases: Vec<(&str, String, Access)> = vec![
            ("GET", "/api/v2".into(), Read),
            ("GET", "/api/v2/heartbeat".into(), Read),
            ("GET", "/api/v2/healthcheck".into(), Read),
            ("GET", "/api/v2/version".into(), Read),
            ("GET", "/api/v2/pre-flight-checks".into(), Read),
            ("GET", "/api/v2/auth/identity".into(), Read),
            ("POST", "/api/v2/reset".into(), Write),
            ("POST", "/api/v2/tenants".into(), Write),
            ("GET", "/api/v2/tenants/t".into(), Read),
            ("PATCH", "/api/v2/tenants/t".into(), Write),
            ("GET", "/api/v2/tenants/t/databases".into(), Read),
            ("POST", "/api/v2/tenants/t/databases".into(), Write),
            ("GET", P.into(), Read),
            ("DELETE", P.into(), Write),
            ("POST", format!("{P}/collections"), Write),
            ("GET", format!("{P}/collections"), Read),
            ("GET", format!("{P}/collections_count"), Read),
            ("GET", format!("{P}/collections/my-docs"), Read),
            ("DELETE", format!("{P}/collections/my-docs"), Write),
            ("PUT", c.clone(), Write),
            ("GET", format!("{P}/collections/by-id/{ID}"), Read),
            ("POST", format!("{c}/fork"), Write),
            ("GET", format!("{c}/fork_count"), Read),
            ("POST", format!("{c}/add"), Write),
            ("POST", format!("{c}/update"), Write),
            ("POST", format!("{c}/upsert"), Write),
            ("POST", format!("{c}/delete"), Write),
            ("GET", format!("{c}/count"), Read),
            ("GET", format!("{c}/indexing_status"), Read),
            ("POST", format!("{c}/get"), Read),
            ("POST", format!("{c}/query"), Read),
            ("POST", format!("{c}/search"), Read),
            ("GET", "/api/v2/collections/t:d:name".into(), Read),
            ("POST", format!("{c}/functions/attach"), Write),
            ("POST", format!("{c}/attached_functions/f/detach"), Write),
            ("GET", format!("{c}/functions/f"), Read),
            ("GET", "/api/v2/something-new".into(), Read),
            ("POST", "/api/v1/collections".into(), Read),
            ("GET", "/openapi.json".into(), Read),
        ];
        for (method, path, expected) in cases {
            assert_eq!(check(method, &path), Ok(expected), "{method} {path}");
        }
    }

    #[test]
    fn writes_name_their_operation_and_scope() {
        let c = format!("{P}/collections/{ID}");
        let route =
            |m: &str, p: &str| classify(&Method::from_bytes(m.as_bytes()).unwrap(), p).unwrap();
        let db = Some("default_tenant/default_database".to_string());
        let add = route("POST", &format!("{c}/add"));
        assert_eq!((add.op, add.collection_id(), &add.database), (Operation::Add, Some(ID), &db));
        assert_eq!(route("POST", &format!("{c}/delete")).op, Operation::DeleteRecords);
        let delete = route("DELETE", &format!("{P}/collections/docs"));
        assert_eq!(
            (delete.op, delete.collection.as_deref()),
            (Operation::DeleteCollection, Some("docs"))
        );
        let create = route("POST", &format!("{P}/collections"));
        assert!(create.returns_collections && create.op == Operation::CreateCollection);
        let query = route("POST", &format!("{c}/query"));
        assert_eq!(query.tenant.as_deref(), Some("default_tenant"));
        assert_eq!(route("POST", "/api/v2/tenants/t/databases").tenant.as_deref(), Some("t"));
        assert!(!query.returns_collections && query.returns_records);
        assert!(route("POST", &format!("{c}/get")).returns_records);
        assert!(!route("GET", &format!("{c}/count")).returns_records);
        assert!(!route("GET", &format!("{P}/collections")).returns_records);
        assert!(route("GET", &format!("{P}/collections/docs")).returns_collections);
        assert_eq!(route("GET", "/api/v2/collections/t:d:docs").database.as_deref(), Some("t/d"));
        assert!(Operation::Upsert.can_queue() && !Operation::CreateCollection.can_queue());
    }

    #[test]
    fn unknown_writes_and_paths_are_refused() {
        for (method, path) in [
            ("POST", "/api/v2/something-new".to_string()),
            ("DELETE", "/api/v2/tenants".to_string()),
            ("POST", format!("{P}/collections/{ID}/compact")),
            ("GET", "/admin/nothing".to_string()),
            ("POST", "/".to_string()),
            ("POST", "/api/v2x/reset".to_string()),
        ] {
            assert!(
                matches!(check(method, &path), Err(RouteError::NotFound(_))),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn malformed_collection_ids_are_refused() {
        for path in [
            format!("{P}/collections/not-a-uuid/add"),
            format!("{P}/collections/by-id/123"),
            format!("{P}/collections/{}/query", &ID[..35]),
            format!("{P}/collections/zf1b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b/count"),
            format!("{P}/collections/5f1b1a2e3-c4d-4e5f-8a9b-0c1d2e3f4a5b/count"),
            format!("{P}/collections/{}é/count", &ID[..34]),
            format!("{P}/collections/{ID}0/count"),
        ] {
            let method =
                if path.ends_with("count") || path.contains("by-id") { "GET" } else { "POST" };
            assert!(matches!(check(method, &path), Err(RouteError::BadCollectionId(_))), "{path}");
        }
        assert!(matches!(
            check("PUT", &format!("{P}/collections/name")),
            Err(RouteError::BadCollectionId(_))
        ));
    }

    #[test]
    fn only_the_hyphenated_uuid_form_is_a_collection_id() {
        assert!(is_collection_id(ID));
        assert!(is_collection_id(&ID.to_uppercase()));
        let simple = ID.replace('-', "");
        for other in [simple, format!("{{{ID}}}"), format!("urn:uuid:{ID}")] {
            assert!(Uuid::try_parse(&other).is_ok(), "{other}");
            assert!(!is_collection_id(&other), "{other}");
        }
    }
}
