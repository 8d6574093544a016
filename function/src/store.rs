//! Where user objects are written: S3 in production, an in-memory fake in unit tests.

use std::future::Future;

#[cfg(feature = "s3")]
use aws_sdk_s3::error::DisplayErrorContext;
#[cfg(feature = "s3")]
use aws_sdk_s3::primitives::ByteStream;
#[cfg(feature = "s3")]
use aws_sdk_s3::types::{Delete, Error as S3KeyError, ObjectIdentifier};

/// An S3 operation that failed after the SDK's own retries.
#[derive(Debug, thiserror::Error)]
#[error("failed to {operation} {key:?}: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub key: String,
    pub message: String,
}

/// The three operations the function needs from a bucket. Every one is idempotent, which is
/// what makes replaying a partly applied batch safe.
pub trait ObjectStore: Sync {
    /// Writes `body` as a JSON object at `key`.
    fn put(&self, key: &str, body: Vec<u8>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes the object at `key`; deleting a missing object succeeds.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes every object whose key starts with `prefix`; returns how many there were.
    fn delete_prefix(&self, prefix: &str)
        -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// Deletes the objects at `keys` (at most [`DELETE_OBJECTS_LIMIT`]) with as few requests
    /// as the store allows; one result per key, in the order of `keys`.
    fn delete_many(
        &self,
        keys: &[&str],
    ) -> impl Future<Output = Vec<Result<(), StoreError>>> + Send;
}

/// The most keys one DeleteObjects request may name.
pub const DELETE_OBJECTS_LIMIT: usize = 1000;

/// A bucket reached through the AWS SDK (the `s3` feature).
#[cfg(feature = "s3")]
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

#[cfg(feature = "s3")]
impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

#[cfg(feature = "s3")]
fn store_error(operation: &'static str, key: &str, err: impl std::error::Error) -> StoreError {
    StoreError {
        operation,
        key: key.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    }
}

#[cfg(feature = "s3")]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| store_error("put", key, err))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| store_error("delete", key, err))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut deleted = 0;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| store_error("list objects under", prefix, err))?;
            let keys: Vec<String> = page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect();
            for chunk in keys.chunks(DELETE_OBJECTS_LIMIT) {
                deleted += self.delete_keys(prefix, chunk).await?;
            }
        }
        Ok(deleted)
    }

    /// One DeleteObjects request for all of `keys`: at 20 ms per request and a fraction of a
    /// core (Lambda below 1,769 MB), the function's throughput is its CPU per request, and a
    /// batch's removals then cost one request instead of one each. A key that fails inside
    /// the answer (DeleteObjects answers 200 and lists it under `Errors`, which the SDK does
    /// not retry) is retried alone with DeleteObject and the SDK's retries. One key is a plain
    /// DeleteObject: nothing to save, and no XML body to checksum.
    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<(), StoreError>> {
        debug_assert!(keys.len() <= DELETE_OBJECTS_LIMIT);
        if let [key] = keys {
            return vec![self.delete(key).await];
        }
        let failed_keys: std::collections::HashSet<String> = match self.delete_objects(keys).await {
            Ok(errors) => errors.into_iter().filter_map(|e| e.key).collect(),
            Err(err) => {
                return keys
                    .iter()
                    .map(|key| {
                        Err(StoreError {
                            operation: "delete",
                            key: (*key).to_owned(),
                            message: err.clone(),
                        })
                    })
                    .collect()
            }
        };
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(if failed_keys.contains(*key) {
                self.delete(key).await
            } else {
                Ok(())
            });
        }
        results
    }
}

#[cfg(feature = "s3")]
impl S3Store {
    /// Sends one quiet DeleteObjects for `keys`; returns the keys its answer says failed
    /// (DeleteObjects answers 200 even when single keys fail).
    async fn delete_objects(&self, keys: &[&str]) -> Result<Vec<S3KeyError>, String> {
        let objects = keys
            .iter()
            .map(|key| ObjectIdentifier::builder().key(*key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| DisplayErrorContext(err).to_string())?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|err| DisplayErrorContext(err).to_string())?;
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|err| format!("DeleteObjects failed: {}", DisplayErrorContext(err)))?;
        Ok(output.errors.unwrap_or_default())
    }

    async fn delete_keys(&self, prefix: &str, keys: &[String]) -> Result<usize, StoreError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let errors = self
            .delete_objects(&keys)
            .await
            .map_err(|message| StoreError {
                operation: "delete objects under",
                key: prefix.to_owned(),
                message,
            })?;
        if let Some(first) = errors.first() {
            return Err(StoreError {
                operation: "delete objects under",
                key: prefix.to_owned(),
                message: format!(
                    "{} of {} keys failed, first {:?}: {} {}",
                    errors.len(),
                    keys.len(),
                    first.key().unwrap_or_default(),
                    first.code().unwrap_or("unknown error"),
                    first.message().unwrap_or_default()
                ),
            });
        }
        Ok(keys.len())
    }
}
