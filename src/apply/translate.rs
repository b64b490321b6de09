//! One logged write as one instance must receive it, and what that instance's answer implies:
//! the instance's own collection id in the path, a replayed create made idempotent, an update
//! narrowed to the ids the instance has, the identity changes an answer implies, and the answer
//! with canonical ids.
//!
//! Pure translation: never does I/O, never sends anything, never changes the mapping table (the
//! identity changes it works out are applied by [`super::effects`]).

use std::collections::HashSet;

use actix_web::web::Bytes;
use serde_json::Value;

use crate::chroma::ids::{collections_in, rewrite_collection_ids, rewrite_path};
use crate::chroma::routes::{Operation, Route};
use crate::identity::{
    CanonicalId, IdentityChange, InstanceCollectionId, MappingTable, Placement, Translation,
};
use crate::instance::InstanceId;

/// A request ready for one instance.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Path and query with the instance's collection id.
    pub path: String,
    /// Body to send.
    pub body: Bytes,
    /// For an update by ids: ask the instance which of them it has first, and send only those
    /// ([`PresenceCheck`]).
    pub presence: Option<PresenceCheck>,
}

/// Chroma 1.5.9 re-applies its whole log to a collection's vector index after the backfill
/// that the first read of the collection in a process triggers (`apply_log_chunk` in
/// `rust/segment/src/local_hnsw.rs` resets its position on a chunk of already-applied
/// records). Re-applied, an update that named an absent id lands on the record a later add
/// created, and the instance serves the add's document with the update's embedding. So an
/// update is sent with only the ids the instance has when it applies it: every instance has the
/// same records at that point of the log, and a log without such updates re-applies to the
/// same state.
#[derive(Debug, Clone)]
pub struct PresenceCheck {
    /// Path of the collection's `get`, with the instance's collection id.
    pub get_path: String,
    /// Body of that `get`: the update's ids, nothing included.
    pub get_body: Bytes,
    /// Path of the collection itself (`collections/by-id/ID`), read for its `dimension` when
    /// the instance has none of the ids ([`Present::Absent`]).
    pub collection_path: String,
}

/// What is left of an update once the instance said which of its ids it has.
#[derive(Debug, Clone, PartialEq)]
pub enum Present {
    /// Send this: the update, with only the records the instance has.
    Send(Bytes),
    /// The instance has none of the ids; Chroma answers such an update 200 `{}` and changes
    /// nothing, unless its embeddings (of this length, if it has any) do not have the
    /// collection's dimension ([`PresenceCheck::dimension_refusal`]).
    Absent { embedding_length: Option<usize> },
    /// Chroma refuses the whole update, whichever ids it has: its embeddings differ in length.
    /// The message is Chroma's (an `InvalidArgumentError`).
    Refused(String),
}

impl PresenceCheck {
    fn of(route: &Route, path: &str, body: &[u8]) -> Option<Self> {
        if route.op != Operation::Update {
            return None;
        }
        let ids = serde_json::from_slice::<Value>(body).ok()?.get("ids")?.clone();
        let (collection, id) = path.split('?').next()?.strip_suffix("/update")?.rsplit_once('/')?;
        Some(Self {
            get_path: format!("{collection}/{id}/get"),
            get_body: Bytes::from(serde_json::json!({"ids": ids, "include": []}).to_string()),
            collection_path: format!("{collection}/by-id/{id}"),
        })
    }

    /// The update `body` with only the records whose id the `get` answer lists. Chroma checks
    /// an update's embeddings against each other before it looks at its ids, so when records
    /// are left out, that check is made here on the whole update.
    pub fn keep_present(body: &Bytes, answer: &[u8]) -> Result<Present, String> {
        let present: HashSet<String> = serde_json::from_slice::<Value>(answer)
            .ok()
            .and_then(|v| v.get("ids").and_then(Value::as_array).cloned())
            .ok_or("the get answer has no ids")?
            .into_iter()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect();
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
            return Ok(Present::Send(body.clone()));
        };
        let Some(ids) = object.get("ids").and_then(Value::as_array) else {
            return Ok(Present::Send(body.clone()));
        };
        let keep: Vec<bool> =
            ids.iter().map(|id| id.as_str().is_some_and(|id| present.contains(id))).collect();
        if keep.iter().all(|k| *k) {
            return Ok(Present::Send(body.clone()));
        }
        let lengths: HashSet<usize> = object
            .get("embeddings")
            .and_then(Value::as_array)
            .map(|all| all.iter().filter_map(embedding_length).collect())
            .unwrap_or_default();
        if lengths.len() > 1 {
            return Ok(Present::Refused("Inconsistent dimensions in provided embeddings".into()));
        }
        if !keep.iter().any(|k| *k) {
            return Ok(Present::Absent { embedding_length: lengths.into_iter().next() });
        }
        let len = keep.len();
        for column in object.values_mut() {
            if let Value::Array(values) = column
                && values.len() == len
            {
                let mut flags = keep.iter();
                values.retain(|_| *flags.next().unwrap_or(&true));
            }
        }
        Ok(Present::Send(Bytes::from(Value::Object(object).to_string())))
    }

    /// Chroma's refusal of an update none of whose ids the collection has, given the
    /// collection's answer (`collection_path`): its embeddings still must have the collection's
    /// dimension. A collection without a dimension yet takes the update's on Chroma (a case
    /// the proxy cannot reproduce without sending absent ids, so it is left as it is).
    pub fn dimension_refusal(collection: &[u8], embedding_length: usize) -> Option<String> {
        let dimension =
            serde_json::from_slice::<Value>(collection).ok()?.get("dimension")?.as_u64()?;
        (dimension != embedding_length as u64).then(|| {
            format!("Collection expecting embedding with dimension of {dimension}, got {embedding_length}")
        })
    }
}

/// The number of components of one embedding in a request: a list of numbers, or the official
/// clients' base64 string of packed little-endian f32s.
fn embedding_length(embedding: &Value) -> Option<usize> {
    match embedding {
        Value::Array(components) => Some(components.len()),
        Value::String(packed) => {
            let padding = packed.bytes().rev().take_while(|b| *b == b'=').count();
            Some((packed.len() / 4 * 3).saturating_sub(padding) / 4)
        }
        _ => None,
    }
}

/// Why a request cannot be sent to an instance (yet).
#[derive(Debug, Clone, thiserror::Error)]
#[error("collection {0} does not exist on this instance yet")]
pub struct NotOnInstance(pub String);

/// The request as `instance` must receive it. On replay a collection create becomes
/// get_or_create, so applying it twice is harmless.
pub fn prepare(
    route: &Route,
    path_and_query: &str,
    body: &Bytes,
    instance: InstanceId,
    table: &MappingTable,
    replay: bool,
) -> Result<Prepared, NotOnInstance> {
    let path = match route.collection_id() {
        Some(id) => match table.to_instance(id, instance) {
            Translation::Known(local) => rewrite_path(path_and_query, id, &local.0),
            Translation::Unknown => path_and_query.to_string(),
            Translation::Missing => return Err(NotOnInstance(id.to_string())),
        },
        None => path_and_query.to_string(),
    };
    let body = match (replay, route.op) {
        (true, Operation::CreateCollection) => with_get_or_create(body),
        _ => body.clone(),
    };
    let presence = PresenceCheck::of(route, &path, &body);
    Ok(Prepared { path, body, presence })
}

fn with_get_or_create(body: &Bytes) -> Bytes {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => {
            object.insert("get_or_create".into(), Value::Bool(true));
            Bytes::from(Value::Object(object).to_string())
        }
        _ => body.clone(),
    }
}

/// The identity changes implied by `instance` accepting `route` with this answer. `canonical`
/// is the id clients already know for a created collection (replay), if any.
pub fn identity_changes(
    route: &Route,
    request: &[u8],
    answer: &[u8],
    instance: InstanceId,
    table: &MappingTable,
    canonical: Option<&str>,
) -> Vec<IdentityChange> {
    let (tenant, database) = route
        .database
        .as_deref()
        .and_then(|d| d.split_once('/'))
        .map_or((String::new(), String::new()), |(t, d)| (t.to_string(), d.to_string()));
    match route.op {
        Operation::CreateCollection | Operation::ForkCollection => {
            let Ok(body) = serde_json::from_slice::<Value>(answer) else { return Vec::new() };
            collections_in(&body)
                .into_iter()
                .map(|c| {
                    let local = c["id"].as_str().unwrap_or_default().to_string();
                    let tenant = c["tenant"].as_str().unwrap_or(&tenant).to_string();
                    let database = c["database"].as_str().unwrap_or(&database).to_string();
                    let name = c["name"].as_str().unwrap_or_default().to_string();
                    let canonical = canonical
                        .map(|c| CanonicalId(c.to_string()))
                        .or_else(|| table.to_canonical(instance, &local))
                        .unwrap_or_else(|| CanonicalId(local.clone()));
                    IdentityChange::Placed(Placement {
                        canonical,
                        tenant,
                        database,
                        name,
                        instance,
                        local: InstanceCollectionId(local),
                    })
                })
                .collect()
        }
        Operation::DeleteCollection => route
            .collection
            .as_deref()
            .and_then(|name| table.by_name_on(instance, (&tenant, &database, name)))
            .map(|canonical| IdentityChange::Dropped { instance, canonical: Some(canonical) })
            .into_iter()
            .collect(),
        Operation::UpdateCollection => {
            let new_name = serde_json::from_slice::<Value>(request)
                .ok()
                .and_then(|b| b.get("new_name").and_then(Value::as_str).map(str::to_string));
            let Some((id, name)) = route.collection_id().zip(new_name) else { return Vec::new() };
            match table.to_instance(id, instance) {
                Translation::Known(local) => vec![IdentityChange::Placed(Placement {
                    canonical: CanonicalId(id.to_string()),
                    tenant,
                    database,
                    name,
                    instance,
                    local,
                })],
                _ => Vec::new(),
            }
        }
        Operation::Reset => vec![IdentityChange::Dropped { instance, canonical: None }],
        _ => Vec::new(),
    }
}

/// The canonical id of the collection a replayed create names, when the create's answer was
/// never recorded (the proxy stopped mid-write): the mapping of that name that the instances
/// which applied this create (`created_on`) have and `instance` lacks, so the create joins it
/// rather than founding a second canonical id.
pub fn known_by_name(
    route: &Route,
    request: &[u8],
    (instance, created_on): (InstanceId, &[InstanceId]),
    table: &MappingTable,
) -> Option<String> {
    if route.op != Operation::CreateCollection {
        return None;
    }
    let (tenant, database) = route.database.as_deref()?.split_once('/')?;
    let body = serde_json::from_slice::<Value>(request).ok()?;
    let name = body.get("name")?.as_str()?;
    table.lacked_by(instance, (tenant, database, name), created_on).map(|c| c.0)
}

/// `answer` with every collection id of `instance` replaced by its canonical id.
pub fn canonical_answer(
    route: &Route,
    answer: Bytes,
    instance: InstanceId,
    table: &MappingTable,
) -> Bytes {
    if !route.returns_collections {
        return answer;
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&answer) else { return answer };
    if rewrite_collection_ids(&mut body, |id| table.to_canonical(instance, id).map(|c| c.0)) {
        Bytes::from(body.to_string())
    } else {
        answer
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;
    use serde_json::json;

    use super::*;
    use crate::chroma::routes::classify;

    const P: &str = "/api/v2/tenants/t/databases/d/collections";
    const C: &str = "11111111-2222-3333-4444-555555555555";
    const R: &str = "99999999-8888-7777-6666-555555555555";

    /// Instance `instance` has collection C (named `docs`) as `local`.
    fn place(table: &MappingTable, instance: usize, local: &str) {
        table.apply(&IdentityChange::Placed(Placement {
            canonical: CanonicalId(C.into()),
            tenant: "t".into(),
            database: "d".into(),
            name: "docs".into(),
            instance: InstanceId(instance),
            local: InstanceCollectionId(local.into()),
        }));
    }

    fn route(method: Method, path: &str) -> Route {
        classify(&method, path).unwrap()
    }

    #[test]
    fn a_replayed_create_is_get_or_create_and_ids_are_translated() {
        let table = MappingTable::new(2);
        let create = route(Method::POST, P);
        let prepared =
            prepare(&create, P, &Bytes::from(r#"{"name":"docs"}"#), InstanceId(1), &table, true)
                .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&prepared.body).unwrap()["get_or_create"], true);

        let add_path = format!("{P}/{C}/add");
        let add = route(Method::POST, &add_path);
        place(&table, 0, C);
        assert!(prepare(&add, &add_path, &Bytes::new(), InstanceId(1), &table, true).is_err());
        place(&table, 1, R);
        let prepared =
            prepare(&add, &add_path, &Bytes::new(), InstanceId(1), &table, true).unwrap();
        assert_eq!(prepared.path, format!("{P}/{R}/add"));
    }

    #[test]
    fn an_update_keeps_only_the_ids_the_instance_has() {
        let update_path = format!("{P}/{C}/update");
        let update = route(Method::POST, &update_path);
        let body = Bytes::from(
            json!({"ids": ["a", "b", "c"], "embeddings": ["AAA", "BBB", "CCC"], "documents": ["1", "2", "3"], "metadatas": null})
                .to_string(),
        );
        let table = MappingTable::new(1);
        let prepared = prepare(&update, &update_path, &body, InstanceId(0), &table, false).unwrap();
        let check = prepared.presence.expect("an update is checked");
        assert_eq!(check.get_path, format!("{P}/{C}/get"));
        assert_eq!(
            serde_json::from_slice::<Value>(&check.get_body).unwrap(),
            json!({"ids": ["a", "b", "c"], "include": []})
        );
        assert_eq!(check.collection_path, format!("{P}/by-id/{C}"));
        let Present::Send(kept) =
            PresenceCheck::keep_present(&body, br#"{"ids": ["c", "a"]}"#).unwrap()
        else {
            panic!("two of the ids are there")
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&kept).unwrap(),
            json!({"ids": ["a", "c"], "embeddings": ["AAA", "CCC"], "documents": ["1", "3"], "metadatas": null})
        );
        // "AAA" is base64 of 2 bytes: no whole f32, so a length of 0 components.
        assert_eq!(
            PresenceCheck::keep_present(&body, br#"{"ids": []}"#).unwrap(),
            Present::Absent { embedding_length: Some(0) }
        );
        let all = PresenceCheck::keep_present(&body, br#"{"ids": ["a", "b", "c"]}"#).unwrap();
        assert_eq!(all, Present::Send(body.clone()));
        assert!(PresenceCheck::keep_present(&Bytes::from_static(b"{}"), b"{}").is_err());
        let add = route(Method::POST, &format!("{P}/{C}/add"));
        assert!(
            prepare(&add, &update_path, &body, InstanceId(0), &table, false)
                .unwrap()
                .presence
                .is_none()
        );
    }

    #[test]
    fn creates_record_and_deletes_forget() {
        let table = MappingTable::new(2);
        let answer = json!({"id": R, "name": "docs", "tenant": "t", "database": "d", "configuration_json": {}});
        let changes = identity_changes(
            &route(Method::POST, P),
            b"{}",
            answer.to_string().as_bytes(),
            InstanceId(1),
            &table,
            Some(C),
        );
        let [IdentityChange::Placed(record)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((record.canonical.0.as_str(), record.local.0.as_str()), (C, R));

        table.apply(&changes[0]);
        let delete = route(Method::DELETE, &format!("{P}/docs"));
        let changes = identity_changes(&delete, b"", b"{}", InstanceId(1), &table, None);
        assert!(matches!(changes.as_slice(), [IdentityChange::Dropped { canonical: Some(_), .. }]));
        let answer = canonical_answer(
            &route(Method::GET, &format!("{P}/docs")),
            Bytes::from(json!({"id": R, "name": "docs", "configuration_json": {}}).to_string()),
            InstanceId(1),
            &table,
        );
        assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["id"], C);
    }

    /// Fault schedule seed 47: a create recovered after a proxy crash has no recorded answer;
    /// replayed to the replica it must join the canonical id the primary's answer gave clients,
    /// and never a mapping the replica already has.
    #[test]
    fn a_recovered_create_joins_the_collection_clients_know_by_name() {
        let table = MappingTable::new(2);
        let create = route(Method::POST, P);
        let body = br#"{"name":"docs","get_or_create":true}"#;
        let on_replica = (InstanceId(1), &[InstanceId(0)][..]);
        assert_eq!(known_by_name(&create, body, on_replica, &table), None);
        place(&table, 0, C);
        assert_eq!(known_by_name(&create, body, on_replica, &table).as_deref(), Some(C));
        // Fault schedule seed 2: the primary has not applied this create; what it holds under
        // the name is an older collection.
        assert_eq!(known_by_name(&create, body, (InstanceId(1), &[]), &table), None);
        place(&table, 1, R);
        assert_eq!(known_by_name(&create, body, on_replica, &table), None);
    }

    #[test]
    fn an_update_of_absent_ids_is_still_checked_for_its_dimension() {
        let update = |embeddings: Value| {
            Bytes::from(json!({"ids": ["a", "b"], "embeddings": embeddings}).to_string())
        };
        let none_there = br#"{"ids": []}"#;
        let one_there = br#"{"ids": ["a"]}"#;
        // Chroma's own checks, in its order: the embeddings against each other first.
        let mixed = update(json!([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]));
        let refused = Present::Refused("Inconsistent dimensions in provided embeddings".into());
        assert_eq!(PresenceCheck::keep_present(&mixed, one_there).unwrap(), refused);
        assert_eq!(PresenceCheck::keep_present(&mixed, none_there).unwrap(), refused);
        // Then, with none of the ids there, against the collection's dimension. 16 bytes of
        // base64 ("AACAPwAAAEAAAEBAAACAQA==", 4 f32s) count as 4 components.
        let packed = update(json!(["AACAPwAAAEAAAEBAAACAQA==", "AACAPwAAAEAAAEBAAACAQA=="]));
        let absent = PresenceCheck::keep_present(&packed, none_there).unwrap();
        assert_eq!(absent, Present::Absent { embedding_length: Some(4) });
        assert_eq!(
            PresenceCheck::dimension_refusal(br#"{"id": "x", "dimension": 3}"#, 4).as_deref(),
            Some("Collection expecting embedding with dimension of 3, got 4")
        );
        assert_eq!(PresenceCheck::dimension_refusal(br#"{"dimension": 4}"#, 4), None);
        assert_eq!(PresenceCheck::dimension_refusal(br#"{"dimension": null}"#, 4), None);
        let no_embeddings = Bytes::from(json!({"ids": ["a"], "documents": ["x"]}).to_string());
        assert_eq!(
            PresenceCheck::keep_present(&no_embeddings, none_there).unwrap(),
            Present::Absent { embedding_length: None }
        );
    }
}
