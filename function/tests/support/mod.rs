//! Test helpers: an in-memory bucket and builders for stream records.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde_json::{json, Value};
use usersync_function::{Config, DeleteScope, ObjectStore, StoreError};

/// A bucket in memory, with chosen keys or prefixes that always fail.
#[derive(Default)]
pub struct MemoryStore {
    pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
    pub failing: HashSet<String>,
    pub calls: Mutex<Vec<String>>,
}

impl MemoryStore {
    pub fn failing(keys: &[&str]) -> Self {
        Self {
            failing: keys.iter().map(|k| (*k).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub fn with_objects(objects: &[(&str, &str)]) -> Self {
        let store = Self::default();
        store.objects.lock().unwrap().extend(
            objects
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())),
        );
        store
    }

    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().unwrap().clone()
    }

    pub fn body(&self, key: &str) -> Option<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|b| serde_json::from_slice(b).unwrap())
    }

    fn check(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{operation} {key}"));
        if self.failing.contains(key) {
            return Err(StoreError {
                operation,
                key: key.to_owned(),
                message: "injected failure".to_owned(),
            });
        }
        Ok(())
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.check("put", key)?;
        self.objects.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check("delete", key)?;
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.check("delete_prefix", prefix)?;
        let mut objects = self.objects.lock().unwrap();
        let before = objects.len();
        objects.retain(|key, _| !key.starts_with(prefix));
        Ok(before - objects.len())
    }
}

pub fn config(scope: DeleteScope) -> Config {
    let mut config =
        Config::from_lookup(|name| (name == "BUCKET_NAME").then(|| "users-data".to_owned()))
            .unwrap();
    config.delete_scope = scope;
    config
}

/// A stream record as Lambda delivers it, for user `name`; `image` is the new image's extra attributes.
pub fn record(event: &str, name: &str, sequence: u64, image: Option<Value>) -> Value {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": 1764000000,
        "Keys": { "name": { "S": name } },
        "SequenceNumber": format!("{sequence:030}"),
        "SizeBytes": 64,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(extra) = image {
        let mut new_image = json!({ "name": { "S": name } });
        for (k, v) in extra.as_object().unwrap() {
            new_image[k] = v.clone();
        }
        dynamodb["NewImage"] = new_image;
    }
    json!({
        "eventID": format!("event-{sequence}"),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-11-25T00:00:00.000",
        "dynamodb": dynamodb
    })
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
