//! The calls the proxy makes to one instance on its own behalf, for verification, repair and
//! seeding: list databases and collections, read records by id, create and write, each answer
//! taken as JSON.
//!
//! It never retries, never judges health and never logs: its callers decide what a failure
//! means. A write is sent only while this proxy may execute, with a fenced body, as client
//! writes are; reads and writes go to exactly the instance named, never to another.

use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Bytes};
use serde_json::{Value, json};

use crate::http::{Cluster, WritePath};
use crate::identity::MappingTable;
use crate::instance::InstanceId;
use crate::ordering::Turn;
use crate::policy::Claim;
use crate::progress::Applied;
use crate::tls::UpstreamTls;
use crate::upstream::{FencedBody, Headers, Upstream, UpstreamError, UpstreamResponse};
use crate::verify::{Chunk, Record};

/// A failure, as text for reports and logs.
pub type Outcome<T> = Result<T, String>;

/// Collections listed per request.
const COLLECTION_PAGE: usize = 100;
/// Ids listed per request.
pub const ID_PAGE: usize = 1000;

/// A collection as an instance lists it.
#[derive(Clone, Debug)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub metadata: Value,
    /// `configuration_json`: space, HNSW settings, embedding function.
    pub configuration: Value,
}

impl Collection {
    /// The collection object of an answer, if it is one.
    pub fn of(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            name: v.get("name")?.as_str()?.to_string(),
            metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
            configuration: v.get("configuration_json").cloned().unwrap_or(Value::Null),
        })
    }
}

/// Where a collection lives: `tenant`, `database`.
#[derive(Clone, Debug)]
pub struct Place {
    pub tenant: String,
    pub database: String,
}

impl Place {
    /// The database's path in the API.
    pub fn path(&self) -> String {
        format!("/api/v2/tenants/{}/databases/{}", self.tenant, self.database)
    }

    /// `tenant/database`, as scopes and claims name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.database)
    }
}

/// Calls to the cluster's instances.
pub struct Calls {
    cluster: web::Data<Cluster>,
    upstream: Upstream,
}

impl Calls {
    /// Calls to `cluster`'s instances, `https://` ones verified with `tls`.
    pub fn new(cluster: web::Data<Cluster>, tls: &UpstreamTls) -> Self {
        let upstream = Upstream::new(tls, cluster.request_timeout, u64::MAX);
        Self { cluster, upstream }
    }

    /// The cluster called.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// An instance's name, for reports and logs.
    pub fn name(&self, id: InstanceId) -> String {
        self.cluster.instances[id.0].spec.name.to_string()
    }

    /// Fails once this proxy no longer leads.
    pub fn leading(&self) -> Outcome<()> {
        if self.cluster.leadership.may_execute() {
            Ok(())
        } else {
            Err("this proxy no longer leads; run it again on the leader".into())
        }
    }

    /// Takes `claim` in the write order, then waits until every instance of `on` has applied
    /// every logged write it conflicts with: while the turn is held, no client write of what
    /// it claims is in flight or owed there.
    pub async fn claimed<'w>(
        &self,
        (writes, table): (&'w WritePath, &MappingTable),
        claim: &Claim,
        on: &[InstanceId],
    ) -> Outcome<Turn<'w>> {
        let turn = writes.order.turn(claim.clone()).await;
        let needed = claim
            .waits_for(|database| {
                let Some((tenant, database)) = database.split_once('/') else { return Vec::new() };
                table.in_database(tenant, database).into_iter().map(|c| c.0).collect()
            })
            .map_or(Applied::Everything, Applied::Scopes);
        let timeout = self.cluster.request_timeout;
        for id in on {
            if !self.cluster.progress.wait_current(*id, &needed, timeout).await {
                return Err(format!(
                    "{} still owes writes of this collection after {timeout:?} (replay backlog); checked again next time",
                    self.name(*id)
                ));
            }
        }
        Ok(turn)
    }

    /// A read of one instance: its status and JSON answer (`null` when empty).
    pub async fn call(
        &self,
        instance: InstanceId,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Outcome<(StatusCode, Value)> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(instance, method, path, bytes, false).await
    }

    /// A write to one instance, sent only while this proxy may execute.
    pub async fn write(
        &self,
        instance: InstanceId,
        method: Method,
        path: &str,
        body: Value,
    ) -> Outcome<(StatusCode, Value)> {
        self.leading()?;
        let bytes = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        self.send(instance, method, path, bytes, true).await
    }

    async fn send(
        &self,
        instance: InstanceId,
        method: Method,
        path: &str,
        body: Bytes,
        fenced: bool,
    ) -> Outcome<(StatusCode, Value)> {
        let cluster = &self.cluster;
        let url = &cluster.instances[instance.0].spec.url;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let failed = |e: UpstreamError| format!("{} {method} {path}: {e}", self.name(instance));
        let answer: UpstreamResponse = if fenced {
            let body = FencedBody::new(body, &cluster.leadership);
            let request = (path, Headers::Exactly(&headers), body);
            self.upstream
                .send(url, &method, request, cluster.write_timeout)
                .await
                .map_err(failed)?
        } else {
            let request = (path, Headers::Exactly(&headers), body);
            self.upstream
                .send(url, &method, request, cluster.request_timeout)
                .await
                .map_err(failed)?
        };
        let value = if answer.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&answer.body).into_owned())
            })
        };
        Ok((answer.status, value))
    }

    /// The names of `tenant`'s databases on `instance`; `None` when it lacks the tenant. The
    /// tenant itself is asked first: Chroma 1.5.9 lists (and makes) databases of a tenant it
    /// does not have, so an empty list does not say the tenant is there.
    pub async fn databases(
        &self,
        instance: InstanceId,
        tenant: &str,
    ) -> Outcome<Option<Vec<String>>> {
        let path = format!("/api/v2/tenants/{tenant}");
        let (status, answer) = self.call(instance, Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ok(status, &answer, &path)?;
        let path = format!("{path}/databases");
        let (status, answer) = self.call(instance, Method::GET, &path, None).await?;
        ok(status, &answer, &path)?;
        let names = answer.as_array().into_iter().flatten();
        Ok(Some(names.filter_map(|db| db.get("name")?.as_str().map(str::to_string)).collect()))
    }

    /// Makes `place`'s tenant and database on `target` where `theirs` (the tenant's databases
    /// there, as [`Calls::databases`] answered; `None`: no tenant) says it lacks them, and
    /// keeps `theirs` up to date. One made meanwhile by someone else is fine.
    pub async fn ensure_place(
        &self,
        target: InstanceId,
        place: &Place,
        theirs: &mut Option<Vec<String>>,
    ) -> Outcome<()> {
        let make = |path: String, name: String| async move {
            let (status, answer) =
                self.write(target, Method::POST, &path, json!({ "name": name })).await?;
            if status == StatusCode::CONFLICT {
                return Ok(());
            }
            ok(status, &answer, &path)
        };
        if theirs.is_none() {
            make("/api/v2/tenants".into(), place.tenant.clone()).await?;
        }
        let databases = theirs.get_or_insert_with(Vec::new);
        if !databases.contains(&place.database) {
            let path = format!("/api/v2/tenants/{}/databases", place.tenant);
            make(path, place.database.clone()).await?;
            databases.push(place.database.clone());
        }
        Ok(())
    }

    /// Every collection of `place` on `instance`, a missing database as none.
    pub async fn collections(
        &self,
        instance: InstanceId,
        place: &Place,
    ) -> Outcome<Vec<Collection>> {
        let mut all = Vec::new();
        loop {
            let path = format!(
                "{}/collections?limit={COLLECTION_PAGE}&offset={}",
                place.path(),
                all.len()
            );
            let (status, answer) = self.call(instance, Method::GET, &path, None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(all);
            }
            ok(status, &answer, &path)?;
            let page: Vec<Collection> =
                answer.as_array().into_iter().flatten().filter_map(Collection::of).collect();
            let last = page.len() < COLLECTION_PAGE;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }

    /// Collection `name` of `place` on `instance`, if it has it.
    pub async fn by_name(
        &self,
        instance: InstanceId,
        place: &Place,
        name: &str,
    ) -> Outcome<Option<Collection>> {
        let path = format!("{}/collections/{name}", place.path());
        let (status, answer) = self.call(instance, Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ok(status, &answer, &path)?;
        Ok(Collection::of(&answer))
    }

    /// How many records `c` holds on `instance`.
    pub async fn count(&self, instance: InstanceId, place: &Place, c: &Collection) -> Outcome<u64> {
        let path = format!("{}/collections/{}/count", place.path(), c.id);
        let (status, answer) = self.call(instance, Method::GET, &path, None).await?;
        ok(status, &answer, &path)?;
        Ok(answer.as_u64().unwrap_or(0))
    }

    /// Creates `like` (its name, metadata and configuration) in `place` on `target`; with
    /// `get_or_create`, one already there of that name is answered as it is.
    pub async fn create(
        &self,
        target: InstanceId,
        place: &Place,
        like: &Collection,
        get_or_create: bool,
    ) -> Outcome<Collection> {
        let mut body = json!({"name": like.name, "get_or_create": get_or_create});
        if !like.metadata.is_null() {
            body["metadata"] = like.metadata.clone();
        }
        if !like.configuration.is_null() {
            body["configuration"] = like.configuration.clone();
        }
        let path = format!("{}/collections", place.path());
        let (status, answer) = self.write(target, Method::POST, &path, body).await?;
        ok(status, &answer, &path)?;
        Collection::of(&answer).ok_or_else(|| "the create's answer names no collection".into())
    }

    /// One page of `c`'s ids on `instance`, from `offset`: [`ID_PAGE`] of them, fewer on the
    /// last page.
    pub async fn id_page(
        &self,
        instance: InstanceId,
        place: &Place,
        c: &Collection,
        offset: usize,
    ) -> Outcome<Vec<String>> {
        let path = format!("{}/collections/{}/get", place.path(), c.id);
        let body = json!({"include": [], "limit": ID_PAGE, "offset": offset});
        let (status, answer) = self.call(instance, Method::POST, &path, Some(body)).await?;
        ok(status, &answer, &path)?;
        Ok(strings(&answer["ids"]))
    }

    /// The records of `ids` in `c` on `instance`, with everything a record carries.
    pub async fn read(
        &self,
        instance: InstanceId,
        place: &Place,
        c: &Collection,
        ids: &[String],
    ) -> Outcome<Chunk> {
        let path = format!("{}/collections/{}/get", place.path(), c.id);
        let body = json!({"ids": ids, "include": ["documents", "metadatas", "embeddings", "uris"]});
        let (status, answer) = self.call(instance, Method::POST, &path, Some(body)).await?;
        ok(status, &answer, &path)?;
        let column = |name: &str, i: usize| answer[name].get(i).cloned().unwrap_or(Value::Null);
        Ok(strings(&answer["ids"])
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let record = Record {
                    document: column("documents", i),
                    metadata: column("metadatas", i),
                    embedding: column("embeddings", i),
                    uri: column("uris", i),
                };
                (id, record)
            })
            .collect())
    }

    /// Writes `records` into `c` on `target` with `verb` (`add` or `upsert`).
    pub async fn put(
        &self,
        target: InstanceId,
        (place, c): (&Place, &Collection),
        verb: &str,
        records: &[(&String, &Record)],
    ) -> Outcome<()> {
        if records.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&Record) -> &Value| -> Value {
            let values: Vec<&Value> = records.iter().map(|(_, r)| f(r)).collect();
            if values.iter().all(|v| v.is_null()) { Value::Null } else { json!(values) }
        };
        let body = json!({
            "ids": records.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "embeddings": column(|r| &r.embedding),
            "documents": column(|r| &r.document),
            "metadatas": column(|r| &r.metadata),
            "uris": column(|r| &r.uri),
        });
        let path = format!("{}/collections/{}/{verb}", place.path(), c.id);
        let (status, answer) = self.write(target, Method::POST, &path, body).await?;
        ok(status, &answer, &path)
    }
}

/// An answer that must be a success, or the error naming it.
pub fn ok(status: StatusCode, answer: &Value, path: &str) -> Outcome<()> {
    if status.is_success() {
        Ok(())
    } else {
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| answer.to_string(), str::to_string);
        Err(format!("{path} answered {status}: {message}"))
    }
}

/// The strings of a JSON array.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}
