//! One concurrent writer of the fault schedules and what it knows. It owns its record ids, its
//! collections, tenants and databases, so from the answers it got it knows every state they
//! may end in: one state for a write it saw answered, either state for a write whose answer
//! never came. It never touches an id, a collection or a tenant again once its state is
//! uncertain, so "either" stays exact.
//!
//! Writes look like the official Python client's (chromadb 1.5.9, `FastAPI._submit_batch`):
//! ids, embeddings, metadatas, documents and uris, embeddings mostly base64 (what the client
//! sends when `/pre-flight-checks` says `supports_base64_encoding`), sometimes float lists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::schedule::Rng;
use crate::support::{DB, try_request};

/// A record's possible final states: absent, or present with the document, embedding and
/// metadata of the write of this value (see [`document`], [`embedding`], [`metadata`]).
pub type States = Vec<Option<i64>>;

/// What a writer does besides its record writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Records in the shared collection and in collections it creates and deletes.
    Records,
    /// One collection it deletes and recreates under the same name between record writes.
    Churn,
    /// One collection it renames and whose metadata it changes between record writes.
    Rename,
    /// Tenants, databases and collections in them, with records.
    Tenants,
}

/// The shared collection of the current reset generation (owned by the driver).
pub struct Shared {
    pub generation: u64,
    pub name: String,
    pub id: String,
}

/// What the driver and the writers share.
pub struct Control {
    pub stop: AtomicBool,
    /// Every write holds it for reading; a reset holds it for writing, so no write runs during
    /// a reset and every writer sees the new generation before its next write.
    pub shared: RwLock<Shared>,
}

/// A collection as its writer knows it.
pub struct Collection {
    /// URL prefix of its database, e.g. [`DB`].
    pub scope: String,
    /// Prefix of its name in a fingerprint: `""` in the default database, else `tenant/db/`.
    pub prefix: String,
    /// Its possible final (name, collection metadata) pairs; the last is the current one.
    pub looks: Vec<(String, Value)>,
    /// Its id as the proxy gave it; `None` when the answer never came.
    pub id: Option<String>,
    /// Whether it may exist at the end: `[true]`, `[false]` or both.
    pub exists: Vec<bool>,
    /// No more writes go to it (its existence or name is uncertain, or it is deleted).
    pub frozen: bool,
    /// This writer's records in it.
    pub records: BTreeMap<String, States>,
    /// Ids a write of uncertain outcome touched: never written again.
    pub untouchable: BTreeSet<String>,
}

impl Collection {
    fn new(scope: &str, prefix: &str, name: &str, id: Option<String>, exists: Vec<bool>) -> Self {
        Self {
            scope: scope.to_string(),
            prefix: prefix.to_string(),
            looks: vec![(name.to_string(), Value::Null)],
            frozen: id.is_none(),
            id,
            exists,
            records: BTreeMap::new(),
            untouchable: BTreeSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.looks.last().unwrap().0
    }

    /// Ids whose state is known exactly and that may be written again.
    fn certain(&self) -> Vec<String> {
        let ids =
            self.records.iter().filter(|(id, s)| s.len() == 1 && !self.untouchable.contains(*id));
        ids.map(|(id, _)| id.clone()).collect()
    }
}

/// A tenant as its writer knows it, with its databases.
pub struct Tenant {
    pub name: String,
    pub exists: Vec<bool>,
    /// (name, may exist at the end).
    pub databases: Vec<(String, Vec<bool>)>,
}

/// How a write ended for its client.
pub enum Answer {
    /// 2xx (202 included: logged, applied in order later).
    Acknowledged(Value),
    /// A 4xx at the first attempt: not executed.
    Refused(String),
    /// No definite answer before the deadline, retries with the same Idempotency-Key included.
    Uncertain,
}

/// A record write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Upsert,
    Update,
    Delete,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Upsert => "upsert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    /// The state a record ends in when this write (of `value`) applies to it: an update of an
    /// absent id changes nothing (Chroma answers 200).
    fn apply(self, state: Option<i64>, value: i64) -> Option<i64> {
        match self {
            Op::Add | Op::Upsert => Some(value),
            Op::Update => state.map(|_| value),
            Op::Delete => None,
        }
    }
}

/// Longest time one write is retried before its outcome is called uncertain.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// The document a write of `value` gives record `id`.
pub fn document(id: &str, value: i64) -> String {
    format!("{id}:{value}")
}

/// The embedding a write of `value` gives a record: exact in float32, distinct per value.
pub fn embedding(value: i64) -> [f32; 4] {
    let n = (value & 0xffff_ffff) as u32;
    [(n % 1024) as f32 / 8.0, (value >> 32) as f32, (n / 1024 % 1024) as f32, 1.0]
}

/// The record metadata a write of `value` gives a record.
pub fn metadata(value: i64) -> Value {
    json!({ "v": value })
}

/// An embedding as the official client 1.5.9 sends it when the server supports base64
/// (`chromadb.api.types.pack_embedding_safely`): `struct.pack("<{n}f")`, standard base64.
pub fn base64_embedding(embedding: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub struct Writer {
    pub index: usize,
    pub role: Role,
    proxy: String,
    /// The other proxy, tried when this one refuses the connection (as a load balancer does).
    other: String,
    rng: Rng,
    pub collections: Vec<Collection>,
    pub tenants: Vec<Tenant>,
    generation: u64,
    next_id: usize,
    next_name: usize,
    next_value: i64,
    pub acknowledged: u64,
    pub uncertain: u64,
    /// Valid writes the proxy refused with a 4xx: each is a bug.
    pub refused: Vec<String>,
}

impl Writer {
    /// Writer `index` of the run with this seed; `shared` is the collection every writer uses.
    pub fn new(index: usize, role: Role, seed: u64, proxies: [String; 2], shared: &Shared) -> Self {
        let [proxy, other] = proxies;
        Self {
            index,
            role,
            proxy,
            other,
            rng: Rng::new(seed.wrapping_mul(1000).wrapping_add(index as u64)),
            collections: vec![Collection::new(
                DB,
                "",
                &shared.name,
                Some(shared.id.clone()),
                vec![true],
            )],
            tenants: Vec::new(),
            generation: shared.generation,
            next_id: 0,
            next_name: 0,
            next_value: 0,
            acknowledged: 0,
            uncertain: 0,
            refused: Vec::new(),
        }
    }

    /// Writes until `stop` is set, then returns itself for the checks.
    pub fn run(mut self, control: Arc<Control>) -> Self {
        let mut op = 0usize;
        while !control.stop.load(Ordering::Relaxed) {
            let shared = control.shared.read().unwrap();
            if shared.generation != self.generation {
                self.after_reset(&shared);
            }
            self.one_write(op);
            drop(shared);
            op += 1;
        }
        self
    }

    /// Everything written before an acknowledged reset is gone. Only a create whose answer never
    /// came may still run after it, and then it makes an empty collection or tenant.
    fn after_reset(&mut self, shared: &Shared) {
        for c in &mut self.collections {
            c.exists = if c.id.is_none() && c.exists.contains(&true) {
                vec![false, true]
            } else {
                vec![false]
            };
            c.frozen = true;
            c.records.clear();
            c.looks.drain(..c.looks.len() - 1);
        }
        for t in &mut self.tenants {
            t.exists = if t.exists == [false, true] { vec![false, true] } else { vec![false] };
            for (_, exists) in &mut t.databases {
                *exists = vec![false];
            }
        }
        self.collections.push(Collection::new(
            DB,
            "",
            &shared.name,
            Some(shared.id.clone()),
            vec![true],
        ));
        self.generation = shared.generation;
    }

    fn one_write(&mut self, op: usize) {
        let key = format!("w{}-op{op}", self.index);
        let live: Vec<usize> =
            (0..self.collections.len()).filter(|&i| !self.collections[i].frozen).collect();
        // The shared collection of this generation is always the first live one.
        let owned: Vec<usize> = live[1..].to_vec();
        let roll = self.rng.below(100);
        match self.role {
            Role::Records => {
                if owned.len() < 3 && roll < 6 {
                    let name = self.fresh_name("c");
                    return self.create_collection(DB, "", &name, &key);
                }
                if owned.len() > 1 && roll < 9 {
                    let c = owned[self.rng.below(owned.len())];
                    self.delete_collection(c, &key);
                    return;
                }
                let c = live[self.rng.below(live.len())];
                self.record_write(c, &key)
            }
            Role::Churn => {
                let Some(&c) = owned.last() else {
                    let name = self.fresh_name("churn");
                    return self.create_collection(DB, "", &name, &key);
                };
                if roll < 12 {
                    return self.churn(c, &key);
                }
                self.record_write(c, &key)
            }
            Role::Rename => {
                let Some(&c) = owned.last() else {
                    let name = self.fresh_name("named");
                    return self.create_collection(DB, "", &name, &key);
                };
                if roll < 15 {
                    return self.modify(c, &key);
                }
                self.record_write(c, &key)
            }
            Role::Tenants => self.tenant_write(&owned, roll, &key),
        }
    }

    fn fresh_name(&mut self, kind: &str) -> String {
        self.next_name += 1;
        format!("w{}-{kind}{}", self.index, self.next_name)
    }

    fn value(&mut self) -> i64 {
        self.next_value += 1;
        (self.index as i64) << 32 | self.next_value
    }

    fn new_ids(&mut self, n: usize) -> Vec<String> {
        let ids = (self.next_id..self.next_id + n).map(|i| format!("w{}-r{i}", self.index));
        let ids = ids.collect();
        self.next_id += n;
        ids
    }

    fn pick(&mut self, pool: &[String], most: usize) -> Vec<String> {
        let mut picked: Vec<String> = Vec::new();
        for _ in 0..most.min(pool.len()) {
            let id = &pool[self.rng.below(pool.len())];
            if !picked.contains(id) {
                picked.push(id.clone());
            }
        }
        picked
    }

    /// One record write to collection `c`: add (new ids, or ids deleted before), upsert,
    /// update (present ids, or absent ones: a no-op), delete.
    fn record_write(&mut self, c: usize, key: &str) {
        let certain = self.collections[c].certain();
        let records = &self.collections[c].records;
        let (present, absent): (Vec<String>, Vec<String>) =
            certain.iter().cloned().partition(|id| records[id][0].is_some());
        let (op, ids) = match self.rng.below(20) {
            0..=6 => {
                let n = 1 + self.rng.below(3);
                (Op::Add, self.new_ids(n))
            }
            7 if !absent.is_empty() => (Op::Add, self.pick(&absent, 2)),
            8..=10 => {
                let mut ids = self.pick(&certain, 2);
                ids.extend(self.new_ids(1));
                (Op::Upsert, ids)
            }
            11..=13 if !present.is_empty() => (Op::Update, self.pick(&present, 2)),
            14 if !absent.is_empty() => {
                let mut ids = self.pick(&absent, 1);
                ids.extend(self.pick(&present, 1));
                (Op::Update, ids)
            }
            15 => (Op::Update, self.new_ids(1)),
            _ if !certain.is_empty() => (Op::Delete, self.pick(&certain, 2)),
            _ => (Op::Add, self.new_ids(1)),
        };
        let value = self.value();
        let base64 = self.rng.below(4) != 0;
        let collection = &self.collections[c];
        let id = collection.id.as_deref().expect("writes go to collections with a known id");
        let url = format!("{}{}/collections/{id}/{}", self.proxy, collection.scope, op.path());
        let body = if op == Op::Delete {
            json!({ "ids": ids, "where": null, "where_document": null })
        } else {
            let e = embedding(value);
            let embeddings: Vec<Value> = ids
                .iter()
                .map(|_| if base64 { json!(base64_embedding(&e)) } else { json!(e) })
                .collect();
            json!({
                "ids": ids,
                "embeddings": embeddings,
                "metadatas": ids.iter().map(|_| metadata(value)).collect::<Vec<_>>(),
                "documents": ids.iter().map(|id| document(id, value)).collect::<Vec<_>>(),
                "uris": null,
            })
        };
        let answer = self.send("POST", &url, Some(&body), key);
        let collection = &mut self.collections[c];
        for id in &ids {
            let states = collection.records.entry(id.clone()).or_insert_with(|| vec![None]);
            let after: States = states.iter().map(|s| op.apply(*s, value)).collect();
            match answer {
                Answer::Acknowledged(_) => *states = after,
                Answer::Refused(_) => {}
                Answer::Uncertain => {
                    states.extend(after);
                    collection.untouchable.insert(id.clone());
                }
            }
            states.sort();
            states.dedup();
        }
        let what = format!("{} {ids:?} in {}", op.path(), self.collections[c].name());
        self.count(&answer, &what);
    }

    fn create_collection(&mut self, scope: &str, prefix: &str, name: &str, key: &str) {
        let url = format!("{}{scope}/collections", self.proxy);
        let answer = self.send("POST", &url, Some(&json!({ "name": name })), key);
        self.count(&answer, &format!("create {prefix}{name}"));
        let (id, exists) = match answer {
            Answer::Acknowledged(body) => (body["id"].as_str().map(str::to_string), vec![true]),
            Answer::Refused(_) => return,
            Answer::Uncertain => (None, vec![false, true]),
        };
        self.collections.push(Collection::new(scope, prefix, name, id, exists));
    }

    fn delete_collection(&mut self, c: usize, key: &str) -> bool {
        let collection = &self.collections[c];
        let name = collection.name().to_string();
        let url = format!("{}{}/collections/{name}", self.proxy, collection.scope);
        let answer = self.send("DELETE", &url, None, key);
        self.count(&answer, &format!("delete collection {name}"));
        let collection = &mut self.collections[c];
        collection.frozen = true;
        match answer {
            Answer::Acknowledged(_) => {
                collection.exists = vec![false];
                true
            }
            Answer::Refused(_) => {
                collection.frozen = false;
                false
            }
            Answer::Uncertain => {
                collection.exists = vec![true, false];
                false
            }
        }
    }

    /// Deletes collection `c` and creates it again under the same name: its records are gone,
    /// it has a new id. Uncertainty freezes it (the next write creates another one).
    fn churn(&mut self, c: usize, key: &str) {
        if !self.delete_collection(c, key) {
            return;
        }
        let collection = &mut self.collections[c];
        collection.records.clear();
        collection.untouchable.clear();
        let name = collection.name().to_string();
        collection.looks = vec![(name.clone(), Value::Null)];
        collection.id = None;
        let url = format!("{}{DB}/collections", self.proxy);
        let answer =
            self.send("POST", &url, Some(&json!({ "name": name })), &format!("{key}-again"));
        self.count(&answer, &format!("create {name} again"));
        let collection = &mut self.collections[c];
        match answer {
            Answer::Acknowledged(body) => {
                collection.id = body["id"].as_str().map(str::to_string);
                collection.exists = vec![true];
                collection.frozen = collection.id.is_none();
            }
            Answer::Refused(_) => {}
            Answer::Uncertain => collection.exists = vec![false, true],
        }
    }

    /// Renames collection `c`, changes its metadata, or both, as `Collection.modify` sends it.
    fn modify(&mut self, c: usize, key: &str) {
        let (old_name, old_metadata) = self.collections[c].looks.last().unwrap().clone();
        let what = self.rng.below(3);
        let new_name = (what != 1).then(|| self.fresh_name("named"));
        let new_metadata = (what != 0).then(|| json!({ "m": self.next_name, "by": "modify" }));
        let collection = &self.collections[c];
        let id = collection.id.as_deref().unwrap();
        let url = format!("{}{}/collections/{id}", self.proxy, collection.scope);
        let body = json!({
            "new_name": new_name,
            "new_metadata": new_metadata,
            "new_configuration": null,
        });
        let answer = self.send("PUT", &url, Some(&body), key);
        self.count(&answer, &format!("modify {old_name}: {body}"));
        let after = (new_name.unwrap_or(old_name), new_metadata.unwrap_or(old_metadata));
        let collection = &mut self.collections[c];
        match answer {
            Answer::Acknowledged(_) => collection.looks = vec![after],
            Answer::Refused(_) => {}
            Answer::Uncertain => {
                collection.looks.push(after);
                collection.frozen = true;
            }
        }
    }

    /// Tenants, databases in them, collections in those, records in those collections.
    fn tenant_write(&mut self, owned: &[usize], roll: usize, key: &str) {
        let live_tenant = self.tenants.iter().rposition(|t| t.exists == [true]);
        let Some(t) = live_tenant.filter(|_| roll >= 3) else {
            return self.create_tenant(key);
        };
        let live_db = self.tenants[t].databases.iter().rposition(|(_, e)| e == &[true]);
        let Some(d) = live_db.filter(|_| roll >= 8) else {
            return self.create_database(t, key);
        };
        let tenant = self.tenants[t].name.clone();
        let database = self.tenants[t].databases[d].0.clone();
        let prefix = format!("{tenant}/{database}/");
        let here: Vec<usize> =
            owned.iter().copied().filter(|&c| self.collections[c].prefix == prefix).collect();
        if here.is_empty() || roll < 12 {
            let scope = format!("/api/v2/tenants/{tenant}/databases/{database}");
            let name = self.fresh_name("c");
            return self.create_collection(&scope, &prefix, &name, key);
        }
        let c = owned[self.rng.below(owned.len())];
        self.record_write(c, key)
    }

    fn create_tenant(&mut self, key: &str) {
        let name = self.fresh_name("tenant");
        let url = format!("{}/api/v2/tenants", self.proxy);
        let answer = self.send("POST", &url, Some(&json!({ "name": name })), key);
        self.count(&answer, &format!("create tenant {name}"));
        let exists = match answer {
            Answer::Acknowledged(_) => vec![true],
            Answer::Refused(_) => return,
            Answer::Uncertain => vec![false, true],
        };
        self.tenants.push(Tenant { name, exists, databases: Vec::new() });
    }

    fn create_database(&mut self, t: usize, key: &str) {
        let name = self.fresh_name("db");
        let url = format!("{}/api/v2/tenants/{}/databases", self.proxy, self.tenants[t].name);
        let answer = self.send("POST", &url, Some(&json!({ "name": name })), key);
        self.count(&answer, &format!("create database {}/{name}", self.tenants[t].name));
        let exists = match answer {
            Answer::Acknowledged(_) => vec![true],
            Answer::Refused(_) => return,
            Answer::Uncertain => vec![false, true],
        };
        self.tenants[t].databases.push((name, exists));
    }

    fn count(&mut self, answer: &Answer, what: &str) {
        match answer {
            Answer::Acknowledged(_) => self.acknowledged += 1,
            Answer::Uncertain => self.uncertain += 1,
            Answer::Refused(why) => self.refused.push(format!("w{} {what}: {why}", self.index)),
        }
    }

    /// Sends until a definite answer, retrying with the same Idempotency-Key.
    fn send(&self, method: &str, url: &str, body: Option<&Value>, key: &str) -> Answer {
        let other = url.replacen(&self.proxy, &self.other, 1);
        send_to(method, &[url, &other], body, key)
    }
}

/// Sends until a definite answer, retrying with the same Idempotency-Key.
pub fn send(method: &str, url: &str, body: Option<&Value>, key: &str) -> Answer {
    send_to(method, &[url], body, key)
}

/// As [`send`], moving on to the next URL of `urls` (the same request through another proxy)
/// whenever one refuses the connection or does not answer.
fn send_to(method: &str, urls: &[&str], body: Option<&Value>, key: &str) -> Answer {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    let headers = [("idempotency-key", key)];
    let start = Instant::now();
    let mut answered_before = true;
    let mut next = 0;
    while start.elapsed() < WRITE_DEADLINE {
        let url = urls[next % urls.len()];
        let answer = try_request(method, url, &headers, bytes.as_deref());
        if answer.is_err() {
            next += 1;
        }
        match answer {
            Ok(a) if (200..300).contains(&a.status) => return Answer::Acknowledged(a.body),
            // Another attempt under this key is still running: ask again.
            Ok(a) if a.status == 409 && a.body["message"].to_string().contains("in flight") => {}
            // An earlier attempt may have run: a refusal now says nothing about it.
            Ok(a) if a.status < 500 && answered_before => {
                return Answer::Refused(format!("{} {}", a.status, a.body));
            }
            Ok(a) if a.status < 500 => return Answer::Uncertain,
            // 5xx (unlogged, or no instance able to answer) or no answer at all: retry.
            Ok(_) | Err(_) => answered_before = false,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Answer::Uncertain
}

#[test]
fn embeddings_are_packed_as_the_official_client_packs_them() {
    let e = embedding(7 << 32 | 123_457);
    let script = format!(
        "from chromadb.api.types import pack_embedding_safely\nprint(pack_embedding_safely({:?}))",
        e.to_vec()
    );
    let out = std::process::Command::new(crate::support::venv().join("bin/python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), base64_embedding(&e));
    assert_eq!(base64_embedding(&[1.0]), "AACAPw==");
    assert_eq!(base64_embedding(&[1.0, 2.0]), "AACAPwAAAEA=");
}
