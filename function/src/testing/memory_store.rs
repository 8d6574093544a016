//! A bucket in memory: the [`ObjectStore`] the function's tests and fuzz targets run the
//! handler against, with failures injected by key and every call recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use crate::key::MAX_KEY_BYTES;
use crate::store::{ObjectStore, StoreError};

/// Which keys (or prefixes, for prefix deletes) a [`MemoryStore`] refuses.
#[derive(Clone, Debug, Default)]
pub enum InjectedFailures {
    /// Every operation succeeds.
    #[default]
    None,
    /// Operations on exactly these keys or prefixes fail.
    Keys(BTreeSet<String>),
    /// Operations on any key or prefix containing this text fail.
    Containing(String),
}

impl InjectedFailures {
    fn applies_to(&self, key: &str) -> bool {
        match self {
            InjectedFailures::None => false,
            InjectedFailures::Keys(keys) => keys.contains(key),
            InjectedFailures::Containing(text) => key.contains(text.as_str()),
        }
    }
}

/// A bucket in memory. Each call is recorded as `"<operation> <key>"` before it succeeds or
/// fails.
///
/// It checks what the handler must never do (a key over S3's limit, a prefix delete of
/// something that is not a whole prefix) with debug assertions, which tests and fuzz builds
/// have on: such a call is a bug in the function, never a property of its input.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    failures: InjectedFailures,
    calls: Mutex<Vec<String>>,
}

impl MemoryStore {
    /// A bucket holding `objects` (key, body).
    pub fn with_objects(objects: &[(&str, &str)]) -> Self {
        let store = Self::default();
        store.lock_objects().extend(
            objects
                .iter()
                .map(|(key, body)| ((*key).to_owned(), body.as_bytes().to_vec())),
        );
        store
    }

    /// An empty bucket where operations on exactly `keys` fail.
    pub fn failing(keys: &[&str]) -> Self {
        Self::default().with_failures(InjectedFailures::Keys(
            keys.iter().map(|key| (*key).to_owned()).collect(),
        ))
    }

    /// The same bucket, failing as `failures` says.
    pub fn with_failures(self, failures: InjectedFailures) -> Self {
        Self { failures, ..self }
    }

    /// Every object, by key.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock_objects().clone()
    }

    /// The body at `key` read as JSON, if there is an object there and it is JSON.
    pub fn json_body(&self, key: &str) -> Option<serde_json::Value> {
        self.lock_objects()
            .get(key)
            .and_then(|body| serde_json::from_slice(body).ok())
    }

    /// The calls made so far, in order, as `"<operation> <key>"`.
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn lock_objects(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic elsewhere (a failed assertion in a test) must not hide the bucket's state.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_call(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("{operation} {key}"));
        if self.failures.applies_to(key) {
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
        debug_assert!(key.len() <= MAX_KEY_BYTES, "put of a key over S3's limit");
        self.record_call("put", key)?;
        self.lock_objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.record_call("delete", key)?;
        self.lock_objects().remove(key);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        debug_assert!(prefix.ends_with('/'), "prefix delete of {prefix:?}");
        self.record_call("delete_prefix", prefix)?;
        let mut objects = self.lock_objects();
        let before = objects.len();
        objects.retain(|key, _| !key.starts_with(prefix));
        Ok(before - objects.len())
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<(), StoreError>> {
        debug_assert!(keys.len() <= crate::store::DELETE_OBJECTS_LIMIT);
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("delete_many {}", keys.join(" ")));
        keys.iter()
            .map(|key| {
                if self.failures.applies_to(key) {
                    return Err(StoreError {
                        operation: "delete",
                        key: (*key).to_owned(),
                        message: "injected failure".to_owned(),
                    });
                }
                self.lock_objects().remove(*key);
                Ok(())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn fails_only_where_told_and_records_every_call() {
        let store = MemoryStore::with_objects(&[("a/userdata", "{}"), ("a/extra", "x")])
            .with_failures(InjectedFailures::Containing("FAIL".into()));
        run(async {
            store
                .put("b/userdata", b"{\"n\":1}".to_vec())
                .await
                .unwrap();
            let refused = store.put("FAIL/userdata", Vec::new()).await.unwrap_err();
            assert_eq!(refused.operation, "put");
            assert_eq!(store.delete_prefix("a/").await.unwrap(), 2);
            store.delete("missing/userdata").await.unwrap();
        });
        assert_eq!(store.snapshot().keys().collect::<Vec<_>>(), ["b/userdata"]);
        assert_eq!(
            store.json_body("b/userdata"),
            Some(serde_json::json!({"n": 1}))
        );
        assert_eq!(
            store.calls(),
            [
                "put b/userdata",
                "put FAIL/userdata",
                "delete_prefix a/",
                "delete missing/userdata"
            ]
        );
    }

    #[test]
    fn exact_keys_fail_and_their_neighbours_do_not() {
        let store = MemoryStore::failing(&["bob/userdata"]);
        run(async {
            assert!(store.delete("bob/userdata").await.is_err());
            assert!(store.delete("bob/userdata2").await.is_ok());
        });
    }
}
