//! Deleting the stack: quiet the event source mapping, empty the data bucket, delete the stack,
//! remove uploaded archives. An adopted table or bucket is left as it is: it is no resource of
//! the stack, and the teardown neither empties nor deletes it.

use super::adopt::{adopted_names, AdoptedNames};
use super::assets::remove_artifacts;
use super::bucket::delete_all_versions;
use super::mapping::{disable_mapping, Quieted};
use super::stuck::stuck;
use super::wait::{seen_events, wait_for_stack};
use super::{
    aws_error, describe_stack, in_progress, outputs_of, ResourceFailure, ResourceStatus,
    StackError, StackStatus,
};
use crate::console::Console;
use crate::target::Target;
use crate::template::logical_id;

/// How many times the stack's deletion is tried when it fails only because the data bucket was
/// written to after it was emptied.
const MAX_DELETE_ATTEMPTS: usize = 3;
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

/// What a teardown did, and the existing table and bucket the stack had adopted, which it left
/// as they were; serialised as the outcome's fields with `adopted_table` and `adopted_bucket`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TeardownReport {
    #[serde(flatten)]
    pub outcome: TeardownOutcome,
    #[serde(flatten)]
    pub adopted: AdoptedNames,
}

/// Tears `stack` down: [`teardown_report`] without the adopted names.
pub async fn teardown(
    target: &Target,
    stack: &str,
    retain_data: bool,
    keep_assets: bool,
    console: &mut dyn Console,
) -> Result<TeardownOutcome, StackError> {
    Ok(
        teardown_report(target, stack, retain_data, keep_assets, console)
            .await?
            .outcome,
    )
}

/// Tears `stack` down. Unless `retain_data`, the event source mapping is disabled first (and
/// waited for until `Disabled`), so that no invocation writes to the data bucket, then the bucket
/// is emptied (every version and delete marker: CloudFormation cannot delete a bucket that holds
/// anything). Unless `keep_assets`, the archives uploaded for the stack are removed afterwards.
///
/// A table or bucket the stack adopted (its `AdoptedTable` and `AdoptedBucket` outputs) is left
/// as it is, said through `console` and in the report: the bucket is not emptied, and neither is
/// in the stack, so deleting the stack deletes neither.
///
/// A stack in `ROLLBACK_FAILED` or `DELETE_FAILED` can only be deleted, which is what this does;
/// one in `UPDATE_ROLLBACK_FAILED` must have its rollback continued first
/// ([`StackError::Stuck`] says how).
pub async fn teardown_report(
    target: &Target,
    stack: &str,
    retain_data: bool,
    keep_assets: bool,
    console: &mut dyn Console,
) -> Result<TeardownReport, StackError> {
    let Some(existing) = describe_stack(target, stack).await? else {
        let removed_artifacts = if keep_assets {
            0
        } else {
            remove_artifacts(target, stack).await?
        };
        return Ok(TeardownReport {
            outcome: TeardownOutcome::NothingToTearDown { removed_artifacts },
            adopted: AdoptedNames::default(),
        });
    };
    if let Some(status) = existing.stack_status() {
        if in_progress(status) && *status != StackStatus::ReviewInProgress {
            return Err(StackError::Busy {
                stack: stack.to_owned(),
                status: status.clone(),
            });
        }
        // The rollback must be continued before anything else; the other two stuck states
        // (ROLLBACK_FAILED, DELETE_FAILED) are deleted as any other stack.
        if *status == StackStatus::UpdateRollbackFailed {
            return Err(stuck(target, stack, status.clone()).await);
        }
    }
    let stack_id = existing.stack_id().unwrap_or(stack).to_owned();
    let adopted = adopted_names(&outputs_of(&existing));
    if let Some(table) = &adopted.table {
        console.line(&format!(
            "table {table} was adopted, not created by the stack: leaving it and its items as \
             they are"
        ));
    }
    if let Some(bucket) = &adopted.bucket {
        console.line(&format!(
            "bucket {bucket} was adopted, not created by the stack: leaving it and its objects as \
             they are (not emptied)"
        ));
    }

    let mut emptied_objects = 0;
    let data_bucket = if retain_data {
        None
    } else {
        quiet_mapping(target, stack, console).await?;
        if adopted.bucket.is_some() {
            None
        } else {
            live_resource(target, stack, logical_id::DATA_BUCKET).await?
        }
    };
    if let Some(bucket) = &data_bucket {
        emptied_objects += empty_bucket(target, bucket, console).await?;
    }

    let mut attempt = 1;
    loop {
        let seen = seen_events(target, &stack_id).await?;
        target
            .cloudformation()
            .delete_stack()
            .stack_name(&stack_id)
            .send()
            .await
            .map_err(|err| aws_error(format!("delete stack {stack}"), err))?;
        let finished = wait_for_stack(target, &stack_id, seen, console).await?;
        let Some(status) = finished.status() else {
            break;
        };
        // An invocation still running when the mapping reached Disabled can write to the bucket
        // after it was emptied, and CloudFormation then cannot delete it: "For Amazon S3
        // buckets, you must delete all objects in the bucket for deletion to succeed"
        // (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-deletionpolicy.html).
        // Empty it again and delete again, a bounded number of times, rather than wait out a
        // whole function timeout before the first try.
        let written_after_emptying =
            !finished.failures.is_empty() && finished.failures.iter().all(bucket_not_empty);
        match &data_bucket {
            Some(bucket) if written_after_emptying && attempt < MAX_DELETE_ATTEMPTS => {
                console.line(&format!(
                    "bucket {bucket} was written to after it was emptied; emptying it again"
                ));
                emptied_objects += empty_bucket(target, bucket, console).await?;
                attempt += 1;
                continue;
            }
            _ => {}
        }
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
    Ok(TeardownReport {
        outcome: TeardownOutcome::TornDown {
            emptied_objects,
            removed_artifacts,
            data_retained: retain_data,
        },
        adopted,
    })
}

/// Whether `failure` is the data bucket refusing deletion because it holds objects: S3's
/// `BucketNotEmpty`, "The bucket you tried to delete is not empty"
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteBucket.html: every object
/// version and delete marker must be deleted first).
fn bucket_not_empty(failure: &ResourceFailure) -> bool {
    failure.logical_id == logical_id::DATA_BUCKET
        && (failure.reason.contains("BucketNotEmpty") || failure.reason.contains("not empty"))
}

/// Empties `bucket`, saying so; returns how many versions and delete markers were removed.
async fn empty_bucket(
    target: &Target,
    bucket: &str,
    console: &mut dyn Console,
) -> Result<usize, StackError> {
    console.waiting(&format!("emptying bucket {bucket}"));
    let removed = delete_all_versions(target, bucket, None).await?;
    console.line(&format!(
        "emptied bucket {bucket}: {removed} object version(s) removed"
    ));
    Ok(removed)
}

/// Disables the stack's event source mapping and waits for it, if the stack has one that is
/// enabled and the target serves the API.
async fn quiet_mapping(
    target: &Target,
    stack: &str,
    console: &mut dyn Console,
) -> Result<(), StackError> {
    // Its physical id is the mapping's UUID.
    let Some(uuid) = live_resource(target, stack, logical_id::EVENT_SOURCE_MAPPING).await? else {
        return Ok(());
    };
    match disable_mapping(target, &uuid, console).await? {
        Quieted::Disabled => console.line(&format!("event source mapping {uuid} is disabled")),
        Quieted::AlreadyQuiet => {}
        Quieted::NotServed => console.line(&format!(
            "{} does not serve Lambda event source mappings; mapping {uuid} was left as it is",
            target.describe()
        )),
        Quieted::StillDisabling => console.line(&format!(
            "event source mapping {uuid} is still disabling; going on (a late write to the bucket \
             is emptied again)"
        )),
    }
    Ok(())
}

/// The physical id of the stack's resource `logical` (a bucket's name, a mapping's UUID), if
/// the stack has one that was not deleted.
async fn live_resource(
    target: &Target,
    stack: &str,
    logical: &str,
) -> Result<Option<String>, StackError> {
    let resources = target
        .cloudformation()
        .describe_stack_resources()
        .stack_name(stack)
        .logical_resource_id(logical)
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
        .filter(|r| r.resource_status() != Some(&ResourceStatus::DeleteComplete))
        .find_map(|r| r.physical_resource_id().map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teardown_report_keeps_the_outcome_s_json_and_adds_the_adopted_names() {
        let report = TeardownReport {
            outcome: TeardownOutcome::TornDown {
                emptied_objects: 0,
                removed_artifacts: 1,
                data_retained: false,
            },
            adopted: AdoptedNames {
                table: Some("people".to_owned()),
                bucket: Some("people-mirror".to_owned()),
            },
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "outcome": "torn_down",
                "emptied_objects": 0,
                "removed_artifacts": 1,
                "data_retained": false,
                "adopted_table": "people",
                "adopted_bucket": "people-mirror",
            })
        );
        let nothing = TeardownReport {
            outcome: TeardownOutcome::NothingToTearDown {
                removed_artifacts: 0,
            },
            adopted: AdoptedNames::default(),
        };
        assert_eq!(
            serde_json::to_value(&nothing).unwrap(),
            serde_json::json!({
                "outcome": "nothing_to_tear_down",
                "removed_artifacts": 0,
                "adopted_table": null,
                "adopted_bucket": null,
            })
        );
    }
}
