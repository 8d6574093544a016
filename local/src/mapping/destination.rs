//! The on-failure destination of a stream mapping: when a batch is discarded (its retries
//! exhausted, or its records too old), Lambda sends the batch's coordinates, not its records,
//! to an SQS queue. The message's shape is `deployer::streams::failure_record`; this module
//! sends it.

use serde_json::Value;

use super::settings::queue_name_and_account;

/// A discard message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("the on-failure destination {0} is not an SQS queue ARN (arn:aws:sqs:<region>:<account>:<name>)")]
    NotAQueue(String),
    #[error("failed to find the on-failure queue {arn}: {message}")]
    QueueUrl { arn: String, message: String },
    #[error("failed to send a discarded batch's information to {arn}: {message}")]
    Send { arn: String, message: String },
}

/// An SQS on-failure destination, with its queue URL looked up once.
#[derive(Clone, Debug)]
pub struct QueueDestination {
    client: aws_sdk_sqs::Client,
    arn: String,
    url: String,
}

impl QueueDestination {
    /// Finds the queue `arn` names.
    pub async fn resolve(client: aws_sdk_sqs::Client, arn: &str) -> Result<Self, DestinationError> {
        let (name, account) =
            queue_name_and_account(arn).ok_or_else(|| DestinationError::NotAQueue(arn.into()))?;
        let url = client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|err| DestinationError::QueueUrl {
                arn: arn.into(),
                message: aws_sdk_sqs::error::DisplayErrorContext(err).to_string(),
            })?
            .queue_url
            .ok_or_else(|| DestinationError::QueueUrl {
                arn: arn.into(),
                message: "GetQueueUrl returned no URL".into(),
            })?;
        Ok(Self {
            client,
            arn: arn.into(),
            url,
        })
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Sends one message.
    pub async fn send(&self, message: &Value) -> Result<(), DestinationError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.to_string())
            .send()
            .await
            .map_err(|err| DestinationError::Send {
                arn: self.arn.clone(),
                message: aws_sdk_sqs::error::DisplayErrorContext(err).to_string(),
            })?;
        Ok(())
    }
}
