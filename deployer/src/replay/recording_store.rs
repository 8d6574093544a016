//! An object store that remembers its first error, so a failed replay can say why.

use std::sync::Mutex;

use usersync_function::{ObjectStore, StoreError};

/// An [`ObjectStore`] that remembers the first error, so a failed replay can say why.
pub(super) struct RecordingStore<S> {
    inner: S,
    first_error: Mutex<Option<String>>,
}

impl<S> RecordingStore<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            first_error: Mutex::new(None),
        }
    }

    pub(super) fn clear(&self) {
        *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(err) = &result {
            self.first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| err.to_string());
        }
        result
    }
}

impl<S: ObjectStore + Send> ObjectStore for RecordingStore<S> {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.note(self.inner.put(key, body).await)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.note(self.inner.delete(key).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.note(self.inner.delete_prefix(prefix).await)
    }
}
