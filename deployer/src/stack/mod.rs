//! The stack's lifecycle: deploy through change sets, status, teardown.

mod assets;
mod deploy;
mod status;
mod teardown;
mod wait;

use std::fmt;
use std::time::Duration;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::Stack;

pub use assets::{account_id, assets_bucket_name, upload_artifact, UploadedArtifact};
pub use deploy::{deploy, DeployOutcome};
pub use status::{status, MappingReport, ResourceReport, StackReport};
pub use teardown::{teardown, TeardownOutcome};

use crate::target::Target;

/// A resource that failed, with CloudFormation's reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResourceFailure {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: String,
}

impl fmt::Display for ResourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) {}: {}",
            self.logical_id, self.resource_type, self.status, self.reason
        )
    }
}

fn list(failures: &[ResourceFailure]) -> String {
    if failures.is_empty() {
        return "  (CloudFormation reported no failed resource)".to_owned();
    }
    failures
        .iter()
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Failures of a lifecycle operation; each names the stack and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("failed to {action}: {message}")]
    Aws { action: String, message: String },
    #[error("stack {stack} is busy ({status}): wait for the running operation to finish, then run the command again")]
    Busy { stack: String, status: String },
    #[error("failed to plan the changes to stack {stack}: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    #[error("deploy of stack {stack} failed, the stack is {status}; failed resources:\n{}", list(.failures))]
    DeployFailed {
        stack: String,
        status: String,
        failures: Vec<ResourceFailure>,
    },
    #[error("deleting stack {stack} failed ({status}); failed resources:\n{}", list(.failures))]
    DeleteFailed {
        stack: String,
        status: String,
        failures: Vec<ResourceFailure>,
    },
    #[error("{0}: not confirmed, nothing was changed (pass --yes to confirm in scripts)")]
    Declined(String),
    #[error("timed out after {waited:?} waiting for stack {stack} (last status {status}); check it with `cargo xtask status`")]
    Timeout {
        stack: String,
        status: String,
        waited: Duration,
    },
    #[error("failed to read the function archive {path}: {source}; run `cargo xtask build`")]
    Artifact {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an SDK error with what was being done, keeping the service's code and message.
pub(crate) fn aws_error<E>(action: impl Into<String>, err: E) -> StackError
where
    E: std::error::Error + ProvideErrorMetadata,
{
    let message = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => aws_sdk_cloudformation::error::DisplayErrorContext(&err).to_string(),
    };
    StackError::Aws {
        action: action.into(),
        message,
    }
}

/// Wraps a request that could not be built (a missing required field: a bug, reported plainly).
pub(crate) fn build_error(action: &str, err: impl std::fmt::Display) -> StackError {
    StackError::Aws {
        action: action.to_owned(),
        message: err.to_string(),
    }
}

/// How often to poll: emulators answer in milliseconds, AWS in seconds.
pub(crate) fn poll_interval(target: &Target) -> Duration {
    if target.is_aws() {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(100)
    }
}

/// The stack named `stack`, or `None` when it does not exist (or was deleted).
pub(crate) async fn describe_stack(
    target: &Target,
    stack: &str,
) -> Result<Option<Stack>, StackError> {
    match target
        .cloudformation()
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
    {
        Ok(output) => Ok(output
            .stacks()
            .iter()
            .find(|s| {
                s.stack_status()
                    .is_none_or(|status| status.as_str() != "DELETE_COMPLETE")
            })
            .cloned()),
        Err(err) if err.message().is_some_and(|m| m.contains("does not exist")) => Ok(None),
        Err(err) => Err(aws_error(format!("describe stack {stack}"), err)),
    }
}

/// A stack's outputs as name → value.
pub(crate) fn outputs_of(stack: &Stack) -> std::collections::BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect()
}

pub(crate) fn status_of(stack: &Stack) -> String {
    stack
        .stack_status()
        .map_or_else(|| "UNKNOWN".to_owned(), |s| s.as_str().to_owned())
}
