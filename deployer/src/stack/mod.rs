//! The stack's lifecycle: deploy through change sets, status, teardown; the checks of an
//! existing table and bucket a stack adopts.

mod adopt;
mod assets;
mod bucket;
mod deploy;
mod health;
mod mapping;
mod status;
mod stuck;
mod teardown;
mod wait;

use std::fmt;
use std::time::Duration;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::Stack;
pub use aws_sdk_cloudformation::types::{ResourceStatus, StackStatus};

pub use adopt::{
    adopted_names, adoption_names, check_adoption, check_bucket, check_table, Adoptable,
    AdoptedNames, AdoptionError,
};
pub use assets::{
    account_id, assets_bucket_name, confirm_on_aws, upload_artifact, UploadedArtifact,
};
pub use bucket::delete_all_versions;
pub use deploy::{deploy, DeployOutcome};
pub use health::{
    AlarmReport, HealthReport, MetricTotals, MetricsReport, ALARM_NOT_FOUND, ALARM_RESOURCE_TYPE,
    METRICS_WINDOW,
};
pub use mapping::{disable_mapping, Quieted};
pub use status::{status, MappingReport, ResourceReport, StackReport};
pub use teardown::{teardown, teardown_report, TeardownOutcome, TeardownReport};

use crate::target::Target;

/// A resource that failed, with CloudFormation's reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResourceFailure {
    pub logical_id: String,
    pub resource_type: String,
    #[serde(serialize_with = "as_text")]
    pub status: ResourceStatus,
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
    #[error(
        "failed to {action}: AWS refused the credentials as expired or invalid ({code}: {message}); \
         refresh them (`aws sso login` for an SSO profile, else new AWS_ACCESS_KEY_ID, \
         AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN) or choose others with --profile, then run again"
    )]
    Credentials {
        action: String,
        code: String,
        message: String,
    },
    #[error(
        "failed to {action}: no usable AWS credentials ({reason}); set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or pass --profile (after `aws sso login` for an SSO profile)"
    )]
    NoCredentials { action: String, reason: String },
    #[error(
        "failed to {action}: the service is not reachable ({reason}); check the network and any \
         proxy, or that --endpoint-url names a running service, then run again"
    )]
    Unreachable { action: String, reason: String },
    #[error("stack {stack} is busy ({status}): wait for the running operation to finish, then run the command again")]
    Busy { stack: String, status: StackStatus },
    #[error("failed to plan the changes to stack {stack}: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    #[error("deploy of stack {stack} failed, the stack is {status}; failed resources:\n{}", list(.failures))]
    DeployFailed {
        stack: String,
        status: StackStatus,
        failures: Vec<ResourceFailure>,
    },
    #[error(
        "deleting stack {stack} failed ({status}); failed resources:\n{}\nfix what keeps them \
         from being deleted (the reasons above) and run the teardown again, or delete the stack \
         keeping them with `{}` (then remove them yourself)",
        list(.failures),
        stuck::retain_command(.stack, .failures)
    )]
    DeleteFailed {
        stack: String,
        status: StackStatus,
        failures: Vec<ResourceFailure>,
    },
    /// The stack is in `UPDATE_ROLLBACK_FAILED`, `ROLLBACK_FAILED` or `DELETE_FAILED`, which
    /// only a manual step leaves; the message names it.
    #[error("stack {stack} is {status}: {}", stuck::stuck_message(.stack, .status, .failures))]
    Stuck {
        stack: String,
        status: StackStatus,
        failures: Vec<ResourceFailure>,
    },
    #[error(
        "the assets bucket {bucket} answered 403 Forbidden to a request that expects account \
         {account} to own it: either these credentials lack s3:ListBucket on it (grant \
         s3:ListBucket on arn:aws:s3:::{bucket}), or another AWS account owns it (its name is \
         predictable; nothing is written to or read from it: have its owner delete it, or deploy \
         to another region)"
    )]
    AssetsBucketForbidden { bucket: String, account: String },
    #[error(
        "the assets bucket {bucket} belongs to another AWS account (its name is predictable and \
         was taken first); nothing is written to or read from it: have its owner delete it, or \
         deploy to another region"
    )]
    AssetsBucketTaken { bucket: String },
    #[error("{0}: not confirmed, nothing was changed (pass --yes to confirm in scripts)")]
    Declined(String),
    #[error("timed out after {waited:?} waiting for stack {stack} (last status {status}); check it with `cargo xtask status`")]
    Timeout {
        stack: String,
        status: String,
        waited: Duration,
    },
    #[error(
        "{what} disappeared while {step}: the target lost it, as an emulator does when it \
         restarts; run the deploy again, which creates it afresh"
    )]
    Vanished { what: String, step: String },
    #[error("failed to read the function archive {path} (run `cargo xtask build`)")]
    Artifact {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Error codes with which AWS refuses the credentials themselves, rather than a permission.
const CREDENTIAL_ERROR_CODES: [&str; 10] = [
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "AuthFailure",
    "InvalidToken",
    "TokenRefreshRequired",
];

/// Wraps an SDK error with what was being done, as one line: the service's code and message;
/// refused credentials, missing credentials and an unreachable service each with their fix.
pub fn aws_error<E>(action: impl Into<String>, err: E) -> StackError
where
    E: std::error::Error + ProvideErrorMetadata,
{
    let action = action.into();
    if let Some(code) = err.code() {
        let message = err.message().unwrap_or("no message").to_owned();
        return if CREDENTIAL_ERROR_CODES.contains(&code) {
            StackError::Credentials {
                action,
                code: code.to_owned(),
                message,
            }
        } else {
            StackError::Aws {
                action,
                message: format!("{code}: {message}"),
            }
        };
    }
    // No service error: the request never got an answer. The SDK's own rendering ends in a
    // multi-line Debug dump, so the causes are read one by one instead.
    let causes = causes(&err);
    let deepest = causes.last().cloned().unwrap_or_default();
    if let Some(credentials) = causes.iter().rev().find(|c| c.contains("credential")) {
        return StackError::NoCredentials {
            action,
            reason: credentials.trim_end_matches(['.', ' ']).to_owned(),
        };
    }
    let top = causes.first().map(String::as_str).unwrap_or_default();
    if top.starts_with("dispatch failure") || top.starts_with("timeout") {
        return StackError::Unreachable {
            action,
            reason: deepest,
        };
    }
    StackError::Aws {
        action,
        message: causes.join(": "),
    }
}

/// The first line of `err` and of each of its sources, without repeats.
fn causes(err: &dyn std::error::Error) -> Vec<String> {
    let mut causes: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        let text = cause.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        // "no credentials found in chain. Attempted:" lists the attempts on the lines below.
        let line = line.strip_suffix(" Attempted:").unwrap_or(line).to_owned();
        if !line.is_empty() && !causes.iter().any(|seen| seen.contains(&line)) {
            causes.push(line);
        }
        next = cause.source();
    }
    causes
}

/// Wraps a request that could not be built (a missing required field: a bug, reported plainly).
pub fn build_error(action: &str, err: impl std::fmt::Display) -> StackError {
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
pub async fn describe_stack(target: &Target, stack: &str) -> Result<Option<Stack>, StackError> {
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
            .find(|s| s.stack_status() != Some(&StackStatus::DeleteComplete))
            .cloned()),
        Err(err) if err.message().is_some_and(|m| m.contains("does not exist")) => Ok(None),
        Err(err) => Err(aws_error(format!("describe stack {stack}"), err)),
    }
}

/// A stack's outputs as name → value.
pub fn outputs_of(stack: &Stack) -> std::collections::BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect()
}

/// A stack's status; one CloudFormation did not give reads as `UNKNOWN`.
pub fn status_of(stack: &Stack) -> StackStatus {
    stack
        .stack_status()
        .cloned()
        .unwrap_or_else(|| StackStatus::from("UNKNOWN"))
}

/// Whether an operation is still running on a stack in `status` (its `*_IN_PROGRESS` states).
pub fn in_progress(status: &StackStatus) -> bool {
    match status {
        StackStatus::CreateInProgress
        | StackStatus::DeleteInProgress
        | StackStatus::ImportInProgress
        | StackStatus::ImportRollbackInProgress
        | StackStatus::ReviewInProgress
        | StackStatus::RollbackInProgress
        | StackStatus::UpdateCompleteCleanupInProgress
        | StackStatus::UpdateInProgress
        | StackStatus::UpdateRollbackCompleteCleanupInProgress
        | StackStatus::UpdateRollbackInProgress => true,
        // A status newer than this SDK: CloudFormation names every running state so.
        other => other.as_str().ends_with("_IN_PROGRESS"),
    }
}

/// Whether a resource in `status` failed (its `*_FAILED` states).
pub fn resource_failed(status: &ResourceStatus) -> bool {
    match status {
        ResourceStatus::CreateFailed
        | ResourceStatus::DeleteFailed
        | ResourceStatus::ExportFailed
        | ResourceStatus::ExportRollbackFailed
        | ResourceStatus::ImportFailed
        | ResourceStatus::ImportRollbackFailed
        | ResourceStatus::RollbackFailed
        | ResourceStatus::UpdateFailed
        | ResourceStatus::UpdateRollbackFailed => true,
        // A status newer than this SDK: CloudFormation names every failed state so.
        other => other.as_str().ends_with("_FAILED"),
    }
}

/// Serialises a status as CloudFormation spells it (`CREATE_COMPLETE`), for `--output json`.
pub(crate) fn as_text<S, T>(status: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    T: AsRef<str>,
{
    serializer.serialize_str(status.as_ref())
}

#[cfg(test)]
mod tests {
    use std::io::{Error as IoError, ErrorKind};

    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_cloudformation::error::ErrorMetadata;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    type DescribeError = SdkError<DescribeStacksError, HttpResponse>;

    fn service_error(code: &str, message: &str) -> DescribeError {
        let metadata = ErrorMetadata::builder().code(code).message(message).build();
        let response = HttpResponse::new(403.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(DescribeStacksError::generic(metadata), response)
    }

    fn message(err: DescribeError) -> String {
        let message = aws_error("describe stack s", err).to_string();
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        message
    }

    #[test]
    fn typed_statuses_read_as_their_text_did() {
        for text in StackStatus::values() {
            let status = StackStatus::from(*text);
            assert_eq!(
                in_progress(&status),
                text.ends_with("_IN_PROGRESS"),
                "{text}"
            );
        }
        for text in ResourceStatus::values() {
            let status = ResourceStatus::from(*text);
            assert_eq!(
                resource_failed(&status),
                text.ends_with("_FAILED"),
                "{text}"
            );
        }
        // Values this SDK does not know yet.
        assert!(in_progress(&StackStatus::from("EXPORT_IN_PROGRESS")));
        assert!(!in_progress(&StackStatus::from("UNKNOWN")));
        assert!(resource_failed(&ResourceStatus::from("MOVE_FAILED")));
        assert!(!resource_failed(&ResourceStatus::from("MOVE_COMPLETE")));
    }

    #[test]
    fn a_stack_without_a_status_reads_as_unknown() {
        let stack = Stack::builder().build();
        assert_eq!(status_of(&stack).as_str(), "UNKNOWN");
        assert_eq!(status_of(&stack).to_string(), "UNKNOWN");
    }

    #[test]
    fn a_resource_failure_keeps_its_json_and_text() {
        let failure = ResourceFailure {
            logical_id: "DataBucket".to_owned(),
            resource_type: "AWS::S3::Bucket".to_owned(),
            status: ResourceStatus::CreateFailed,
            reason: "already exists".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            serde_json::json!({
                "logical_id": "DataBucket",
                "resource_type": "AWS::S3::Bucket",
                "status": "CREATE_FAILED",
                "reason": "already exists",
            })
        );
        assert_eq!(
            failure.to_string(),
            "DataBucket (AWS::S3::Bucket) CREATE_FAILED: already exists"
        );
    }

    #[test]
    fn a_service_error_keeps_its_code_and_message() {
        assert_eq!(
            message(service_error("ValidationError", "Stack s is broken")),
            "failed to describe stack s: ValidationError: Stack s is broken"
        );
    }

    #[test]
    fn refused_credentials_are_named_with_the_fix() {
        for code in CREDENTIAL_ERROR_CODES {
            let text = message(service_error(code, "The security token is expired"));
            assert!(
                text.starts_with(&format!(
                    "failed to describe stack s: AWS refused the credentials as expired or \
                     invalid ({code}: The security token is expired); refresh them"
                )),
                "{text}"
            );
            assert!(text.contains("aws sso login") && text.contains("--profile"));
        }
    }

    #[test]
    fn missing_credentials_are_named_with_the_fix() {
        let chain = CredentialsError::not_loaded(
            "no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: none",
        );
        let err = SdkError::dispatch_failure(ConnectorError::other(Box::new(chain), None));
        let text = message(err);
        assert!(
            text.starts_with(
                "failed to describe stack s: no usable AWS credentials (no credentials found in \
                 chain); set AWS_ACCESS_KEY_ID"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unreachable_service_is_named_with_the_cause_and_the_fix() {
        let refused = IoError::new(
            ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let err = SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        assert_eq!(
            message(err),
            "failed to describe stack s: the service is not reachable (Connection refused (os \
             error 111)); check the network and any proxy, or that --endpoint-url names a \
             running service, then run again"
        );
    }
}
