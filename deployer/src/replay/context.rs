//! What a replay run works with, gathered before any message is touched: the stack's failure
//! queue, the deployed mirror (table, bucket and the function's settings, read by
//! `reconcile::DeployedMirror` as the function reads them) and the clients.

use usersync_function::{Config, S3Store};

use super::batch_read::ReadLimits;
use super::report::{ExpiredReconcile, MessageReport, ReplayReport};
use super::ReplayError;
use crate::reconcile::{DeployedMirror, DynamoTable, UserRepairer};
use crate::target::Target;
use crate::template::output;

/// The stack's queue, the table and bucket with the function's settings, and the clients.
pub(super) struct Context {
    pub(super) stack_name: String,
    pub(super) queue_url: String,
    pub(super) config: Config,
    pub(super) table: DynamoTable,
    /// The function's own store: its client's retries are what a user's write would get.
    pub(super) store: S3Store,
    /// For listing a removed user's prefix (`prefix_cleanup`).
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) streams: aws_sdk_dynamodbstreams::Client,
    pub(super) read_limits: ReadLimits,
}

impl Context {
    /// Reads the stack's outputs and the deployed function's configuration.
    pub(super) async fn load(target: &Target, stack_name: &str) -> Result<Self, ReplayError> {
        let mirror = DeployedMirror::load(target, stack_name).await?;
        let queue_url = mirror.output(output::FAILURE_QUEUE_URL)?.to_owned();
        Ok(Self {
            stack_name: stack_name.to_owned(),
            queue_url,
            table: mirror.table_reader(target),
            store: mirror.s3_store(target),
            config: mirror.config,
            s3: target.s3(),
            sqs: target.sqs(),
            streams: target.dynamodb_streams(),
            read_limits: ReadLimits::default(),
        })
    }

    /// Repairs users from the table's current state, as the function would write them.
    pub(super) fn repairer(&self) -> UserRepairer<'_, DynamoTable, S3Store> {
        UserRepairer {
            reader: &self.table,
            store: &self.store,
            config: &self.config,
            hook: None,
        }
    }

    /// The run's report, from each message's.
    pub(super) fn report(
        &self,
        dry_run: bool,
        messages: Vec<MessageReport>,
        expired_reconcile: Option<ExpiredReconcile>,
    ) -> ReplayReport {
        ReplayReport {
            stack_name: self.stack_name.clone(),
            queue_url: self.queue_url.clone(),
            bucket: self.config.bucket.clone(),
            dry_run,
            messages,
            expired_reconcile,
        }
    }
}
