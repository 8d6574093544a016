//! What a replay run works with, gathered before any message is touched: the stack's failure
//! queue, the deployed function's settings (the replay applies records as the function would)
//! and the clients.

use std::collections::HashMap;

use usersync_function::{Config, Mirror, S3Store};

use super::recording_store::RecordingStore;
use super::report::{MessageReport, ReplayReport};
use super::ReplayError;
use crate::stack::{aws_error, describe_stack, outputs_of};
use crate::target::Target;
use crate::template::output;

/// The stack's queue and bucket, the function's logic with its settings, and the clients.
pub(super) struct Context {
    pub(super) stack_name: String,
    pub(super) queue_url: String,
    pub(super) bucket: String,
    pub(super) mirror: Mirror<RecordingStore<S3Store>>,
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) streams: aws_sdk_dynamodbstreams::Client,
}

impl Context {
    /// Reads the stack's outputs and the deployed function's configuration.
    pub(super) async fn load(target: &Target, stack_name: &str) -> Result<Self, ReplayError> {
        let stack =
            describe_stack(target, stack_name)
                .await?
                .ok_or_else(|| ReplayError::NoStack {
                    stack: stack_name.to_owned(),
                    target: target.describe(),
                })?;
        let outputs = outputs_of(&stack);
        let output = |name: &'static str| {
            outputs
                .get(name)
                .cloned()
                .ok_or(ReplayError::MissingOutput {
                    stack: stack_name.to_owned(),
                    output: name,
                })
        };
        let queue_url = output(output::FAILURE_QUEUE_URL)?;
        let function = output(output::FUNCTION_NAME)?;
        let config = function_config(target, &function).await?;
        let bucket = config.bucket.clone();
        let mirror = Mirror {
            // The function's own client: its retries are what a user's request would get.
            store: RecordingStore::new(S3Store::new(
                usersync_function::s3_client_from(&target.sdk, !target.is_aws()),
                config.bucket.clone(),
            )),
            config,
        };
        Ok(Self {
            stack_name: stack_name.to_owned(),
            queue_url,
            bucket,
            mirror,
            sqs: target.sqs(),
            streams: target.dynamodb_streams(),
        })
    }

    /// The run's report, from each message's.
    pub(super) fn report(self, dry_run: bool, messages: Vec<MessageReport>) -> ReplayReport {
        ReplayReport {
            stack_name: self.stack_name,
            queue_url: self.queue_url,
            bucket: self.bucket,
            dry_run,
            messages,
        }
    }
}

/// The deployed function's settings, as its process would read them at cold start.
async fn function_config(target: &Target, function: &str) -> Result<Config, ReplayError> {
    let configuration = target
        .lambda()
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(|err| {
            aws_error(
                format!("read the configuration of function {function}"),
                err,
            )
        })?;
    let variables: HashMap<String, String> = configuration
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    Config::from_lookup(|name| variables.get(name).cloned()).map_err(|err| {
        ReplayError::FunctionConfig {
            function: function.to_owned(),
            reason: err.to_string(),
        }
    })
}
