//! Waiting for a stack operation, showing resource events as they happen.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Stack, StackEvent, StackStatus};

use super::{
    aws_error, describe_stack, in_progress, poll_interval, resource_failed, status_of,
    ResourceFailure, StackError,
};
use crate::console::Console;
use crate::target::Target;

/// The longest a single stack operation is waited for.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);

/// How an operation ended.
pub(crate) struct Finished {
    /// The stack as it ended (its status, outputs), `None` when it is gone (a completed
    /// delete).
    pub stack: Option<Stack>,
    /// Resources that failed during the operation.
    pub failures: Vec<ResourceFailure>,
}

impl Finished {
    /// The stack's final status, `None` when it is gone.
    pub fn status(&self) -> Option<StackStatus> {
        self.stack.as_ref().map(status_of)
    }
}

/// Streams the events of `stack_id` that are not in `seen` and returns them, oldest first.
async fn new_events(
    target: &Target,
    stack_id: &str,
    seen: &mut HashSet<String>,
) -> Result<Vec<StackEvent>, StackError> {
    let mut fresh = Vec::new();
    let mut pages = target
        .cloudformation()
        .describe_stack_events()
        .stack_name(stack_id)
        .into_paginator()
        .send();
    'pages: while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            // A deleted stack's events may vanish on emulators; nothing more to show.
            Err(err)
                if aws_sdk_cloudformation::error::ProvideErrorMetadata::message(&err)
                    .is_some_and(|m| m.contains("does not exist")) =>
            {
                break
            }
            Err(err) => {
                return Err(aws_error(
                    format!("read the events of stack {stack_id}"),
                    err,
                ))
            }
        };
        // Newest first: stop at the first event already shown.
        for event in page.stack_events() {
            // Emulators may leave out event IDs; what happened to which resource, when, is unique too.
            let id = event.event_id().map(str::to_owned).unwrap_or_else(|| {
                format!(
                    "{}/{:?}/{:?}",
                    event.logical_resource_id().unwrap_or_default(),
                    event.resource_status(),
                    event.timestamp()
                )
            });
            if !seen.insert(id) {
                break 'pages;
            }
            fresh.push(event.clone());
        }
    }
    fresh.reverse();
    Ok(fresh)
}

/// Marks every event that exists now as seen, so only later ones are shown.
pub(crate) async fn seen_events(
    target: &Target,
    stack_id: &str,
) -> Result<HashSet<String>, StackError> {
    let mut seen = HashSet::new();
    new_events(target, stack_id, &mut seen).await?;
    Ok(seen)
}

fn describe_event(event: &StackEvent) -> String {
    let status = event.resource_status().map(|s| s.as_str()).unwrap_or("-");
    let mut line = format!(
        "  {status:<28} {:<22} {}",
        event.logical_resource_id().unwrap_or("-"),
        event.resource_type().unwrap_or("-")
    );
    if let Some(reason) = event.resource_status_reason().filter(|r| !r.is_empty()) {
        line.push_str(&format!("  {reason}"));
    }
    line
}

fn failure_of(event: &StackEvent) -> Option<ResourceFailure> {
    let status = event.resource_status()?;
    if !resource_failed(status) {
        return None;
    }
    Some(ResourceFailure {
        logical_id: event.logical_resource_id().unwrap_or("-").to_owned(),
        resource_type: event.resource_type().unwrap_or("-").to_owned(),
        status: status.clone(),
        reason: event
            .resource_status_reason()
            .unwrap_or("no reason given")
            .to_owned(),
    })
}

/// Waits until `stack_id` leaves its `*_IN_PROGRESS` states, printing each new event.
pub(crate) async fn wait_for_stack(
    target: &Target,
    stack_id: &str,
    mut seen: HashSet<String>,
    console: &mut dyn Console,
) -> Result<Finished, StackError> {
    let started = Instant::now();
    let mut failures = Vec::new();
    loop {
        // Status first, events second: events read after a final status include every event
        // up to it, so a failure that finishes between the two reads is still reported.
        let stack = describe_stack(target, stack_id).await?;
        let status = stack.as_ref().map(status_of);
        for event in new_events(target, stack_id, &mut seen).await? {
            console.line(&describe_event(&event));
            // The stack's own failure event repeats the first resource failure's reason.
            if event.resource_type() != Some("AWS::CloudFormation::Stack") {
                failures.extend(failure_of(&event));
            }
        }
        match &status {
            None => return Ok(Finished { stack, failures }),
            Some(s) if !in_progress(s) => return Ok(Finished { stack, failures }),
            Some(s) => {
                console.waiting(&format!("{s} ({}s)", started.elapsed().as_secs()));
                if started.elapsed() > MAX_WAIT {
                    return Err(StackError::Timeout {
                        stack: stack_id.to_owned(),
                        status: s.to_string(),
                        waited: MAX_WAIT,
                    });
                }
            }
        }
        tokio::time::sleep(poll_interval(target)).await;
    }
}
