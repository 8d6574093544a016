//! A users table and a bucket that exist outside any stack, as an account has them before it
//! adopts them (`existing_table`, `existing_bucket`): created by a scenario with the plain
//! DynamoDB and S3 APIs, and deleted by it, also when it fails ([`External`]'s `Drop`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use deployer::target::Target;
use usersync_function::config::DEFAULT_KEY_ATTRIBUTE as KEY_ATTRIBUTE;

use crate::test_stack::{put_items, POLL_INTERVAL};

/// How long a new table, or a table whose stream was just enabled, may take to be `ACTIVE`.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A table and a bucket a scenario made outside any stack. Deleted by [`External::remove`], or,
/// when the scenario fails first, on drop.
pub struct External {
    pub target: Target,
    pub table: String,
    pub bucket: String,
    removed: bool,
}

impl External {
    /// Names a table and a bucket for the scenario, creating nothing yet.
    pub fn new(target: Target, table: String, bucket: String) -> Self {
        Self {
            target,
            table,
            bucket,
            removed: false,
        }
    }

    /// Creates the users table: a single string hash key `name` (the function's default
    /// `KEY_ATTRIBUTE`), on-demand, with no stream yet (see [`External::enable_stream`]); waits
    /// until it is `ACTIVE`.
    pub async fn create_table(&self) -> Result<()> {
        self.target
            .dynamodb()
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .with_context(|| format!("failed to create table {}", self.table))?;
        self.wait_table_active(false).await
    }

    /// Enables the table's stream with new and old images, as the adoption check asks, and waits
    /// until the table is `ACTIVE` with its `LatestStreamArn`.
    ///
    /// Enabled after the table was filled on purpose: the stack's mapping starts at
    /// `TRIM_HORIZON`, so a stream holding the fill's records would have the function mirror
    /// them on its own, and nothing would be left for the reconcile the adoption is followed by.
    /// An account that adopts a table usually has exactly that: users the stream never carried.
    /// (LocalStack 4.14.0 creates the stream on such an update: `update_table` in
    /// `services/dynamodb/provider.py` calls `create_dynamodb_stream`.)
    pub async fn enable_stream(&self) -> Result<()> {
        self.target
            .dynamodb()
            .update_table()
            .table_name(&self.table)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("failed to enable the stream of table {}", self.table))?;
        self.wait_table_active(true).await
    }

    async fn wait_table_active(&self, with_stream: bool) -> Result<()> {
        let started = Instant::now();
        loop {
            let described = self
                .target
                .dynamodb()
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .with_context(|| format!("failed to describe table {}", self.table))?;
            let table = described.table();
            let active = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let streaming = table.is_some_and(|t| {
                t.latest_stream_arn().is_some()
                    && t.stream_specification().is_some_and(|s| s.stream_enabled())
            });
            if active && (streaming || !with_stream) {
                return Ok(());
            }
            if started.elapsed() > ACTIVE_TIMEOUT {
                bail!(
                    "table {} was not ACTIVE{} within {}s: {table:?}",
                    self.table,
                    if with_stream { " with its stream" } else { "" },
                    ACTIVE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Writes `items` into the table with BatchWriteItem.
    pub async fn batch_put(&self, items: Vec<HashMap<String, AttributeValue>>) -> Result<()> {
        put_items(&self.target.dynamodb(), &self.table, items).await
    }

    /// The table's items, counted with a consistent Scan.
    pub async fn count_items(&self) -> Result<usize> {
        let items = deployer::mirror_check::scan_users(&self.target, &self.table)
            .await
            .with_context(|| format!("failed to scan table {}", self.table))?;
        Ok(items.len())
    }

    /// Creates the bucket, in the target's region (us-east-1 takes no location constraint).
    pub async fn create_bucket(&self) -> Result<()> {
        self.target
            .s3()
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .with_context(|| format!("failed to create bucket {}", self.bucket))?;
        Ok(())
    }

    /// Every key of the bucket.
    pub async fn bucket_keys(&self) -> Result<Vec<String>> {
        bucket_keys(&self.target.s3(), &self.bucket).await
    }

    /// Deletes the table and the bucket (emptied first); either may be gone already.
    pub async fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove(&self.target, &self.table, &self.bucket).await
    }
}

impl Drop for External {
    /// A scenario that failed still deletes what it made: on a thread of its own, since a
    /// runtime cannot be blocked on from inside itself (as `TestStack`'s drop does).
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (target, table, bucket) =
            (self.target.clone(), self.table.clone(), self.bucket.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if let Err(err) = runtime.block_on(remove(&target, &table, &bucket)) {
                eprintln!("cleanup: {err:#}");
            }
        });
        let _ = cleanup.join();
    }
}

/// Every key of `bucket`.
pub async fn bucket_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("failed to list bucket {bucket}"))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    Ok(keys)
}

/// Deletes `keys` from `bucket` behind the function's back, 1,000 (DeleteObjects' limit) at a
/// time; fails on the first key S3 could not delete.
pub async fn delete_keys(s3: &aws_sdk_s3::Client, bucket: &str, keys: &[String]) -> Result<()> {
    for chunk in keys.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()?;
        let output = s3
            .delete_objects()
            .bucket(bucket)
            .delete(
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("failed to delete objects of bucket {bucket}"))?;
        // DeleteObjects answers 200 even when single keys fail; those are in `Errors`.
        if let Some(error) = output.errors().first() {
            bail!(
                "failed to delete {:?} from bucket {bucket}: {} {}",
                error.key().unwrap_or_default(),
                error.code().unwrap_or_default(),
                error.message().unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn remove(target: &Target, table: &str, bucket: &str) -> Result<()> {
    let deleted = target
        .dynamodb()
        .delete_table()
        .table_name(table)
        .send()
        .await;
    if let Err(err) = deleted {
        if !err
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
        {
            return Err(err).with_context(|| format!("failed to delete table {table}"));
        }
    }
    let s3 = target.s3();
    let keys = match bucket_keys(&s3, bucket).await {
        Ok(keys) => keys,
        Err(err) if is_no_such_bucket(&err) => return Ok(()),
        Err(err) => return Err(err),
    };
    delete_keys(&s3, bucket, &keys).await?;
    s3.delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| format!("failed to delete bucket {bucket}"))?;
    Ok(())
}

/// Whether listing failed because the bucket does not exist (deleted already).
fn is_no_such_bucket(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<aws_sdk_s3::error::SdkError<
                aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
            >>()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_no_such_bucket())
    })
}
