//! One concurrent writer of the fault schedules and what it knows. It owns its record ids and
//! its collections, so from the answers it got it knows every state they may end in: one state
//! for a write it saw answered, either state for a write whose answer never came. It never
//! touches an id or a collection again once its state is uncertain, so "either" stays exact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::schedule::Rng;
use crate::support::{DB, try_request};

/// A record's possible final states: absent, or present with metadata `{"v": value}`.
pub type States = Vec<Option<i64>>;

/// A collection as its writer knows it.
pub struct Collection {
    pub name: String,
    /// Its id as the proxy gave it; `None` when the answer never came.
    pub id: Option<String>,
    /// Whether it may exist at the end: `[true]`, `[false]` or both.
    pub exists: Vec<bool>,
    /// No more writes go to it (its existence is uncertain, or it is deleted).
    pub frozen: bool,
    /// This writer's records in it.
    pub records: BTreeMap<String, States>,
}

/// How a write ended for its client.
enum Answer {
    /// 2xx (202 included: logged, applied in order later).
    Acknowledged(Value),
    /// A 4xx at the first attempt: not executed.
    Refused(String),
    /// No definite answer before the deadline, retries with the same Idempotency-Key included.
    Uncertain,
}

/// Longest time one write is retried before its outcome is called uncertain.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

pub struct Writer {
    pub index: usize,
    proxy: String,
    rng: Rng,
    pub collections: Vec<Collection>,
    next_id: usize,
    next_value: i64,
    pub acknowledged: u64,
    pub uncertain: u64,
    /// Valid writes the proxy refused with a 4xx: each is a bug.
    pub refused: Vec<String>,
}

impl Writer {
    /// Writer `index` of the run with this seed; `shared` is a collection every writer uses.
    pub fn new(index: usize, seed: u64, proxy: String, shared: (&str, &str)) -> Self {
        let shared = Collection {
            name: shared.0.to_string(),
            id: Some(shared.1.to_string()),
            exists: vec![true],
            frozen: false,
            records: BTreeMap::new(),
        };
        Self {
            index,
            proxy,
            rng: Rng::new(seed.wrapping_mul(1000).wrapping_add(index as u64)),
            collections: vec![shared],
            next_id: 0,
            next_value: 0,
            acknowledged: 0,
            uncertain: 0,
            refused: Vec::new(),
        }
    }

    /// Writes until `stop` is set, then returns itself for the checks.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Self {
        let mut op = 0usize;
        while !stop.load(Ordering::Relaxed) {
            self.one_write(op);
            op += 1;
        }
        self
    }

    fn one_write(&mut self, op: usize) {
        let key = format!("w{}-op{op}", self.index);
        let live: Vec<usize> =
            (0..self.collections.len()).filter(|&i| !self.collections[i].frozen).collect();
        let owned_live = live.iter().filter(|&&i| i > 0).count();
        let roll = self.rng.below(100);
        if owned_live < 3 && roll < 6 {
            return self.create_collection(&key);
        }
        if owned_live > 1 && roll < 9 {
            let c = live[1 + self.rng.below(owned_live)];
            return self.delete_collection(c, &key);
        }
        let c = live[self.rng.below(live.len())];
        let certain: Vec<String> = self.collections[c]
            .records
            .iter()
            .filter(|(_, s)| s.len() == 1)
            .map(|(id, _)| id.clone())
            .collect();
        let present: Vec<String> = certain
            .iter()
            .filter(|id| self.collections[c].records[*id][0].is_some())
            .cloned()
            .collect();
        let value = self.value();
        match self.rng.below(10) {
            0..=3 => {
                let n = 1 + self.rng.below(3);
                let ids = self.new_ids(n);
                self.record_write(c, "add", ids, Some(value), &key);
            }
            4..=5 => {
                let mut ids = self.pick(&certain, 2);
                ids.extend(self.new_ids(1));
                self.record_write(c, "upsert", ids, Some(value), &key);
            }
            6..=7 if !present.is_empty() => {
                let ids = self.pick(&present, 2);
                self.record_write(c, "update", ids, Some(value), &key);
            }
            _ if !certain.is_empty() => {
                let ids = self.pick(&certain, 2);
                self.record_write(c, "delete", ids, None, &key);
            }
            _ => {
                let ids = self.new_ids(1);
                self.record_write(c, "add", ids, Some(value), &key);
            }
        }
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

    fn record_write(
        &mut self,
        c: usize,
        kind: &str,
        ids: Vec<String>,
        value: Option<i64>,
        key: &str,
    ) {
        let collection = &self.collections[c];
        let id = collection.id.as_deref().expect("writes go to collections with a known id");
        let url = format!("{}{DB}/collections/{id}/{kind}", self.proxy);
        let mut body = json!({ "ids": ids });
        if let Some(v) = value {
            body["metadatas"] = json!(ids.iter().map(|_| json!({ "v": v })).collect::<Vec<_>>());
            if kind != "update" {
                let embedding = [v as f64 % 97.0, 1.0, 2.0, 3.0];
                body["embeddings"] = json!(ids.iter().map(|_| embedding).collect::<Vec<_>>());
            }
        }
        let answer = self.send("POST", &url, Some(&body), key);
        let records = &mut self.collections[c].records;
        for id in &ids {
            let states = records.entry(id.clone()).or_insert_with(|| vec![None]);
            match answer {
                Answer::Acknowledged(_) => *states = vec![value],
                Answer::Refused(_) => {}
                Answer::Uncertain if !states.contains(&value) => states.push(value),
                Answer::Uncertain => {}
            }
        }
        self.count(&answer, &format!("{kind} {ids:?} in {}", self.collections[c].name));
    }

    fn create_collection(&mut self, key: &str) {
        let name = format!("w{}-c{}", self.index, self.collections.len());
        let url = format!("{}{DB}/collections", self.proxy);
        let answer = self.send("POST", &url, Some(&json!({ "name": name })), key);
        self.count(&answer, &format!("create {name}"));
        let (id, exists) = match answer {
            Answer::Acknowledged(body) => (body["id"].as_str().map(str::to_string), vec![true]),
            Answer::Refused(_) => return,
            Answer::Uncertain => (None, vec![false, true]),
        };
        let frozen = id.is_none();
        self.collections.push(Collection { name, id, exists, frozen, records: BTreeMap::new() });
    }

    fn delete_collection(&mut self, c: usize, key: &str) {
        let name = self.collections[c].name.clone();
        let url = format!("{}{DB}/collections/{name}", self.proxy);
        let answer = self.send("DELETE", &url, None, key);
        self.count(&answer, &format!("delete collection {name}"));
        let collection = &mut self.collections[c];
        match answer {
            Answer::Acknowledged(_) => collection.exists = vec![false],
            Answer::Refused(_) => return,
            Answer::Uncertain => collection.exists = vec![true, false],
        }
        collection.frozen = true;
    }

    fn count(&mut self, answer: &Answer, what: &str) {
        match answer {
            Answer::Acknowledged(_) => self.acknowledged += 1,
            Answer::Uncertain => self.uncertain += 1,
            Answer::Refused(why) => self.refused.push(format!("{what}: {why}")),
        }
    }

    /// Sends until a definite answer, retrying with the same Idempotency-Key.
    fn send(&self, method: &str, url: &str, body: Option<&Value>, key: &str) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let headers = [("idempotency-key", key)];
        let start = Instant::now();
        let mut answered_before = true;
        while start.elapsed() < WRITE_DEADLINE {
            match try_request(method, url, &headers, bytes.as_deref()) {
                Ok(a) if (200..300).contains(&a.status) => return Answer::Acknowledged(a.body),
                // Another attempt under this key is still running: ask again.
                Ok(a) if a.status == 409 && a.body["message"].to_string().contains("in flight") => {
                }
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
}
