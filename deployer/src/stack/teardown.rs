//! Deleting the stack: empty the data bucket, delete the stack, remove uploaded archives.

use super::assets::remove_artifacts;
use super::bucket::delete_all_versions;
use super::wait::{seen_events, wait_for_stack};
use super::{aws_error, describe_stack, StackError};
use crate::console::Console;
use crate::target::Target;
use crate::template::logical_id;

/// What a teardown did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TeardownOutcome {
    /// There was no such stack.
    NothingToTearDown { removed_artifacts: usize },
    TornDown {
        /// Object versions and delete markers removed from the data bucket.
        emptied_objects: usize,
        removed_artifacts: usize,
        /// Whether the data was kept (`retain_data_on_teardown`).
        data_retained: bool,
    },
}

/// Tears `stack` down. Unless `retain_data`, the data bucket is emptied first (every version and
/// delete marker: CloudFormation cannot delete a bucket that holds anything). Unless
/// `keep_assets`, the archives uploaded for the stack are removed afterwards.
pub async fn teardown(
    target: &Target,
    stack: &str,
    retain_data: bool,
    keep_assets: bool,
    console: &mut dyn Console,
) -> Result<TeardownOutcome, StackError> {
    let Some(existing) = describe_stack(target, stack).await? else {
        let removed_artifacts = if keep_assets {
            0
        } else {
            remove_artifacts(target, stack).await?
        };
        return Ok(TeardownOutcome::NothingToTearDown { removed_artifacts });
    };
    if let Some(status) = existing.stack_status().map(|s| s.as_str()) {
        if status.ends_with("_IN_PROGRESS") && status != "REVIEW_IN_PROGRESS" {
            return Err(StackError::Busy {
                stack: stack.to_owned(),
                status: status.to_owned(),
            });
        }
    }
    let stack_id = existing.stack_id().unwrap_or(stack).to_owned();

    let mut emptied_objects = 0;
    if !retain_data {
        if let Some(bucket) = data_bucket(target, stack).await? {
            console.waiting(&format!("emptying bucket {bucket}"));
            emptied_objects = delete_all_versions(target, &bucket, None).await?;
            console.line(&format!(
                "emptied bucket {bucket}: {emptied_objects} object version(s) removed"
            ));
        }
    }

    let seen = seen_events(target, &stack_id).await?;
    target
        .cloudformation()
        .delete_stack()
        .stack_name(&stack_id)
        .send()
        .await
        .map_err(|err| aws_error(format!("delete stack {stack}"), err))?;
    let finished = wait_for_stack(target, &stack_id, seen, console).await?;
    if let Some(status) = finished.status() {
        return Err(StackError::DeleteFailed {
            stack: stack.to_owned(),
            status,
            failures: finished.failures,
        });
    }

    let removed_artifacts = if keep_assets {
        0
    } else {
        remove_artifacts(target, stack).await?
    };
    Ok(TeardownOutcome::TornDown {
        emptied_objects,
        removed_artifacts,
        data_retained: retain_data,
    })
}

/// The physical name of the stack's data bucket, if the stack has one that exists.
async fn data_bucket(target: &Target, stack: &str) -> Result<Option<String>, StackError> {
    let resources = target
        .cloudformation()
        .describe_stack_resources()
        .stack_name(stack)
        .logical_resource_id(logical_id::DATA_BUCKET)
        .send()
        .await;
    let resources = match resources {
        Ok(output) => output,
        // No such resource in the stack (a create that failed early).
        Err(err)
            if aws_sdk_cloudformation::error::ProvideErrorMetadata::code(&err)
                == Some("ValidationError") =>
        {
            return Ok(None)
        }
        Err(err) => {
            return Err(aws_error(
                format!("read the resources of stack {stack}"),
                err,
            ))
        }
    };
    Ok(resources
        .stack_resources()
        .iter()
        .filter(|r| {
            r.resource_status()
                .is_none_or(|s| s.as_str() != "DELETE_COMPLETE")
        })
        .find_map(|r| r.physical_resource_id().map(str::to_owned)))
}
