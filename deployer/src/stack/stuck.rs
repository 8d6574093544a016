//! Stacks that CloudFormation leaves stuck: `UPDATE_ROLLBACK_FAILED`, `ROLLBACK_FAILED` and
//! `DELETE_FAILED` take no update, and only a manual step gets them out. `deploy` and `teardown`
//! name the state, the resources that failed and that step, rather than passing on the error
//! CloudFormation gives for an operation the state does not allow.

use super::{aws_error, list, resource_failed, ResourceFailure, ResourceStatus, StackError};
use super::{StackStatus, Target};

/// Whether `status` is one of the states only a manual step leaves.
pub(crate) fn is_stuck(status: &StackStatus) -> bool {
    matches!(
        status,
        StackStatus::UpdateRollbackFailed | StackStatus::RollbackFailed | StackStatus::DeleteFailed
    )
}

/// The error for `stack`, found in the stuck `status`, listing its failed resources.
pub(crate) async fn stuck(target: &Target, stack: &str, status: StackStatus) -> StackError {
    match failed_resources(target, stack).await {
        Ok(failures) => StackError::Stuck {
            stack: stack.to_owned(),
            status,
            failures,
        },
        Err(err) => err,
    }
}

/// The stack's resources whose current status is a `*_FAILED` one, with CloudFormation's reason.
async fn failed_resources(
    target: &Target,
    stack: &str,
) -> Result<Vec<ResourceFailure>, StackError> {
    let described = target
        .cloudformation()
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| aws_error(format!("read the resources of stack {stack}"), err))?;
    Ok(described
        .stack_resources()
        .iter()
        .filter_map(|resource| {
            let status = resource.resource_status()?;
            resource_failed(status).then(|| ResourceFailure {
                logical_id: resource.logical_resource_id().unwrap_or("-").to_owned(),
                resource_type: resource.resource_type().unwrap_or("-").to_owned(),
                status: status.clone(),
                reason: resource
                    .resource_status_reason()
                    .unwrap_or("no reason given")
                    .to_owned(),
            })
        })
        .collect())
}

/// The logical ids of the failures in `status`, space-separated as the AWS CLI takes a list; a
/// placeholder when CloudFormation named none.
fn ids_in(failures: &[ResourceFailure], status: &ResourceStatus) -> String {
    let ids: Vec<&str> = failures
        .iter()
        .filter(|f| f.status == *status)
        .map(|f| f.logical_id.as_str())
        .collect();
    if ids.is_empty() {
        "<logical ids of the resources that failed>".to_owned()
    } else {
        ids.join(" ")
    }
}

/// The command that deletes `stack` keeping the resources that could not be deleted.
///
/// `RetainResources` applies to stacks in `DELETE_FAILED` only: "Retaining resources is useful
/// when you can't delete a resource, such as a non-empty S3 bucket, but you want to delete the
/// stack" (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DeleteStack.html,
/// and https://repost.aws/knowledge-center/cloudformation-stack-delete-failed).
pub(crate) fn retain_command(stack: &str, failures: &[ResourceFailure]) -> String {
    format!(
        "aws cloudformation delete-stack --stack-name {stack} --retain-resources {}",
        ids_in(failures, &ResourceStatus::DeleteFailed)
    )
}

/// What `Display` of [`StackError::Stuck`] says after the state: why the stack is stuck, what
/// failed, and the step that gets it out.
pub(crate) fn stuck_message(
    stack: &str,
    status: &StackStatus,
    failures: &[ResourceFailure],
) -> String {
    let failed = list(failures);
    match status {
        // A stack in UPDATE_ROLLBACK_FAILED takes no update; ContinueUpdateRollback brings it to
        // UPDATE_ROLLBACK_COMPLETE, skipping (`ResourcesToSkip`) only resources in UPDATE_FAILED
        // because their rollback failed
        // (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-continueupdaterollback.html,
        // https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_ContinueUpdateRollback.html).
        StackStatus::UpdateRollbackFailed => format!(
            "CloudFormation could not roll back a failed update, and the stack takes no other \
             change until that rollback completes; resources that failed:\n{failed}\nfix what \
             made them fail, then run `aws cloudformation continue-update-rollback --stack-name \
             {stack}` (adding `--resources-to-skip {}` for resources that cannot be rolled back, \
             which are then left as they are), and run the command again",
            ids_in(failures, &ResourceStatus::UpdateFailed)
        ),
        // ROLLBACK_FAILED: a failed create whose rollback could not delete everything; such a
        // stack can only be deleted ("Delete the stack or view the stack events", stack status
        // codes: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/view-stack-events.html#cfn-console-view-stack-data-resources-status-codes).
        StackStatus::RollbackFailed => format!(
            "CloudFormation could not delete what a failed create left behind, and the stack can \
             only be deleted; resources that failed:\n{failed}\ndelete it with `cargo xtask \
             teardown` (should a resource still resist, the stack ends in DELETE_FAILED and \
             `{}` deletes it keeping that resource), then deploy again",
            retain_command(stack, failures)
        ),
        StackStatus::DeleteFailed => format!(
            "an earlier deletion did not finish, and the stack can only be deleted; resources \
             that failed:\n{failed}\nfix what keeps them from being deleted (the reasons above) \
             and run `cargo xtask teardown`, or delete the stack keeping them with `{}` (then \
             remove them yourself); then deploy again",
            retain_command(stack, failures)
        ),
        other => format!("resources that failed:\n{failed}\n(no known way out of {other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(logical_id: &str, status: ResourceStatus) -> ResourceFailure {
        ResourceFailure {
            logical_id: logical_id.to_owned(),
            resource_type: "AWS::S3::Bucket".to_owned(),
            status,
            reason: "reason".to_owned(),
        }
    }

    #[test]
    fn only_the_three_stuck_states_are_stuck() {
        for text in StackStatus::values() {
            let status = StackStatus::from(*text);
            assert_eq!(
                is_stuck(&status),
                matches!(
                    *text,
                    "UPDATE_ROLLBACK_FAILED" | "ROLLBACK_FAILED" | "DELETE_FAILED"
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn the_commands_name_the_resources_in_the_matching_state() {
        let failures = [
            failure("DataBucket", ResourceStatus::DeleteFailed),
            failure("MirrorFunction", ResourceStatus::UpdateFailed),
            failure("UsersTable", ResourceStatus::DeleteFailed),
        ];
        assert_eq!(
            retain_command("s", &failures),
            "aws cloudformation delete-stack --stack-name s --retain-resources DataBucket UsersTable"
        );
        let message = stuck_message("s", &StackStatus::UpdateRollbackFailed, &failures);
        assert!(
            message.contains("--stack-name s` (adding `--resources-to-skip MirrorFunction`"),
            "{message}"
        );
        assert!(retain_command("s", &[]).ends_with("<logical ids of the resources that failed>"));
    }
}
