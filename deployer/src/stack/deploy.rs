//! Creating or updating the stack through a change set.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, Change, ChangeAction, ChangeSetStatus, ChangeSetType, Replacement, StackStatus,
    TemplateStage,
};

use super::stuck::{is_stuck, stuck};
use super::wait::{seen_events, wait_for_stack};
use super::{
    aws_error, describe_stack, in_progress, outputs_of, poll_interval, status_of, StackError,
};
use crate::console::Console;
use crate::target::Target;

/// How long a change set may take to be computed.
const CHANGE_SET_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What a deploy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployOutcome {
    /// The template matched the stack: nothing was executed.
    UpToDate { outputs: BTreeMap<String, String> },
    /// The stack was created (`created`) or updated.
    Deployed {
        created: bool,
        changes: Vec<String>,
        outputs: BTreeMap<String, String>,
    },
}

impl DeployOutcome {
    pub fn outputs(&self) -> &BTreeMap<String, String> {
        match self {
            DeployOutcome::UpToDate { outputs } | DeployOutcome::Deployed { outputs, .. } => {
                outputs
            }
        }
    }
}

/// Creates or updates `stack` to `template_body` through a change set, shows what will change,
/// executes it and waits, printing resource events as they happen.
///
/// A stack left in `ROLLBACK_COMPLETE` by a failed create cannot be updated: it is deleted and
/// created again, once `console` confirms.
pub async fn deploy(
    target: &Target,
    stack: &str,
    template_body: &str,
    console: &mut dyn Console,
) -> Result<DeployOutcome, StackError> {
    let existing = describe_stack(target, stack).await?;
    let change_set_type = match existing.as_ref().map(status_of) {
        None | Some(StackStatus::ReviewInProgress) => ChangeSetType::Create,
        Some(StackStatus::RollbackComplete) => {
            let question = format!(
                "stack {stack} is in ROLLBACK_COMPLETE after a failed create and must be deleted before it can be created again; delete it?"
            );
            if !console.confirm(&question) {
                return Err(StackError::Declined(format!(
                    "stack {stack} is in ROLLBACK_COMPLETE"
                )));
            }
            delete_failed_stack(
                target,
                stack,
                existing.as_ref().and_then(|s| s.stack_id()),
                console,
            )
            .await?;
            ChangeSetType::Create
        }
        Some(status) if in_progress(&status) => {
            return Err(StackError::Busy {
                stack: stack.to_owned(),
                status,
            })
        }
        // No change set can be created for these; name the way out instead of CloudFormation's
        // refusal.
        Some(status) if is_stuck(&status) => return Err(stuck(target, stack, status).await),
        Some(_) => ChangeSetType::Update,
    };
    let creating = change_set_type == ChangeSetType::Create;
    if !creating && deployed_template_matches(target, stack, template_body).await? {
        return Ok(DeployOutcome::UpToDate {
            outputs: existing.as_ref().map(outputs_of).unwrap_or_default(),
        });
    }

    let cfn = target.cloudformation();
    let name = format!(
        "usersync-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    console.waiting("planning changes");
    let created = cfn
        .create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(change_set_type)
        .template_body(template_body)
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .map_err(|err| aws_error(format!("create a change set for stack {stack}"), err))?;
    let change_set = created.id().unwrap_or(&name).to_owned();

    let changes = match wait_for_change_set(target, stack, &change_set).await? {
        Some(changes) => changes,
        None => {
            // Leave no pending change set behind; failing to delete it is harmless.
            let _ = cfn
                .delete_change_set()
                .stack_name(stack)
                .change_set_name(&change_set)
                .send()
                .await;
            let stack_now = describe_stack(target, stack).await?;
            return Ok(DeployOutcome::UpToDate {
                outputs: stack_now.as_ref().map(outputs_of).unwrap_or_default(),
            });
        }
    };
    let count = if changes.is_empty() {
        // Executable with no resource change: only the outputs change (see wait_for_change_set).
        "no resource changes, only outputs".to_owned()
    } else {
        format!("{} change(s)", changes.len())
    };
    console.line(&format!(
        "{} stack {stack} on {}: {count}",
        if creating { "creating" } else { "updating" },
        target.describe(),
    ));
    for change in &changes {
        console.line(change);
    }

    // On a new stack the events start with the change set's REVIEW_IN_PROGRESS; skip those.
    let stack_id = created.stack_id().unwrap_or(stack).to_owned();
    let seen = seen_events(target, &stack_id).await?;
    cfn.execute_change_set()
        .stack_name(stack)
        .change_set_name(&change_set)
        .send()
        .await
        .map_err(|err| {
            if err.message().is_some_and(|m| m.contains("does not exist")) {
                vanished(stack, "its change set was executed")
            } else {
                aws_error(format!("execute the change set of stack {stack}"), err)
            }
        })?;
    let finished = wait_for_stack(target, &stack_id, seen, console).await?;
    // Nothing deletes a stack that is being created or updated: if it is gone, the target
    // lost it.
    let Some(stack_now) = &finished.stack else {
        return Err(vanished(stack, "it was being deployed"));
    };
    let status = status_of(stack_now);
    if !matches!(
        status,
        StackStatus::CreateComplete | StackStatus::UpdateComplete
    ) {
        return Err(StackError::DeployFailed {
            stack: stack.to_owned(),
            status,
            failures: finished.failures,
        });
    }
    Ok(DeployOutcome::Deployed {
        created: creating,
        changes,
        outputs: outputs_of(stack_now),
    })
}

/// The stack (with its change set) is gone in the middle of a deploy.
fn vanished(stack: &str, step: &str) -> StackError {
    StackError::Vanished {
        what: format!("stack {stack}"),
        step: step.to_owned(),
    }
}

/// Whether the stack already runs exactly `template_body`. Checked before any change set: it
/// answers in one call, and emulators whose change sets list every resource as modified would
/// otherwise update a stack that is up to date.
async fn deployed_template_matches(
    target: &Target,
    stack: &str,
    template_body: &str,
) -> Result<bool, StackError> {
    let deployed = target
        .cloudformation()
        .get_template()
        .stack_name(stack)
        .template_stage(TemplateStage::Original)
        .send()
        .await
        .map_err(|err| aws_error(format!("read the deployed template of stack {stack}"), err))?;
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    Ok(
        match (
            deployed.template_body().and_then(parse),
            parse(template_body),
        ) {
            (Some(deployed), Some(wanted)) => deployed == wanted,
            _ => false,
        },
    )
}

/// Waits for the change set; `None` when CloudFormation found nothing to do. A change set
/// computed with no resource change is still executable: it updates the stack's outputs.
async fn wait_for_change_set(
    target: &Target,
    stack: &str,
    change_set: &str,
) -> Result<Option<Vec<String>>, StackError> {
    let cfn = target.cloudformation();
    let started = Instant::now();
    loop {
        let described = cfn
            .describe_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|err| {
                if err.code() == Some("ChangeSetNotFound")
                    || err.message().is_some_and(|m| m.contains("does not exist"))
                {
                    vanished(stack, "its change set was being planned")
                } else {
                    aws_error(format!("read the change set of stack {stack}"), err)
                }
            })?;
        match described.status() {
            Some(ChangeSetStatus::CreateComplete) => {
                let mut changes: Vec<String> =
                    described.changes().iter().map(describe_change).collect();
                let mut token = described.next_token().map(str::to_owned);
                while let Some(next) = token {
                    let page = cfn
                        .describe_change_set()
                        .stack_name(stack)
                        .change_set_name(change_set)
                        .next_token(next)
                        .send()
                        .await
                        .map_err(|err| {
                            aws_error(format!("read the change set of stack {stack}"), err)
                        })?;
                    changes.extend(page.changes().iter().map(describe_change));
                    token = page.next_token().map(str::to_owned);
                }
                // Computed, even with zero changes: when only Outputs differ, CloudFormation
                // creates an executable change set that lists no change, and only executing it
                // updates the outputs (aws/aws-cdk#2029,
                // https://github.com/aws/aws-cdk/pull/2029; reported in aws/aws-cdk#186 and #778).
                return Ok(Some(changes));
            }
            Some(ChangeSetStatus::Failed) => {
                let reason = described.status_reason().unwrap_or("no reason given");
                // AWS's way of saying "nothing to do": the change set FAILS with one of these
                // reasons (aws/aws-cdk#2029 tells the two cases apart by this status; both
                // wordings: aws/aws-cdk#1048, ansible-collections/amazon.aws#507).
                if reason.contains("didn't contain changes")
                    || reason.contains("No updates are to be performed")
                {
                    return Ok(None);
                }
                return Err(StackError::ChangeSetFailed {
                    stack: stack.to_owned(),
                    reason: reason.to_owned(),
                });
            }
            _ if started.elapsed() > CHANGE_SET_TIMEOUT => {
                return Err(StackError::Timeout {
                    stack: stack.to_owned(),
                    status: "change set CREATE_PENDING".to_owned(),
                    waited: CHANGE_SET_TIMEOUT,
                })
            }
            _ => tokio::time::sleep(poll_interval(target)).await,
        }
    }
}

/// One line per change: `+ Add    UsersTable  AWS::DynamoDB::Table`.
fn describe_change(change: &Change) -> String {
    let Some(resource) = change.resource_change() else {
        return "  ? (a change CloudFormation did not describe)".to_owned();
    };
    let sign = match resource.action() {
        Some(ChangeAction::Add) => '+',
        Some(ChangeAction::Remove) => '-',
        Some(ChangeAction::Modify) => '~',
        _ => '?',
    };
    let action = resource.action().map_or("?", ChangeAction::as_str);
    let mut line = format!(
        "  {sign} {action:<7} {:<22} {}",
        resource.logical_resource_id().unwrap_or("-"),
        resource.resource_type().unwrap_or("-")
    );
    if let Some(replacement) = resource.replacement().filter(|r| **r != Replacement::False) {
        line.push_str(&format!("  (replacement: {})", replacement.as_str()));
    }
    line
}

async fn delete_failed_stack(
    target: &Target,
    stack: &str,
    stack_id: Option<&str>,
    console: &mut dyn Console,
) -> Result<(), StackError> {
    let stack_id = stack_id.unwrap_or(stack).to_owned();
    let seen = seen_events(target, &stack_id).await?;
    target
        .cloudformation()
        .delete_stack()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| aws_error(format!("delete stack {stack}"), err))?;
    let finished = wait_for_stack(target, &stack_id, seen, console).await?;
    match finished.status() {
        None => Ok(()),
        Some(status) => Err(StackError::DeleteFailed {
            stack: stack.to_owned(),
            status,
            failures: finished.failures,
        }),
    }
}
