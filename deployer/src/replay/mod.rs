//! `cargo xtask replay-failures`: repairs the users of the batches the event source mapping
//! gave up on, from the table's current state.
//!
//! When a batch exhausts its retries (or its records get too old), Lambda sends the batch's
//! coordinates, not its records, to the stack's failure queue: the shard, the first and last
//! sequence numbers, the batch size and the stream. The table is the truth, and the batch's
//! records are only old news of it: replaying a message reads those records back from the
//! stream while it still holds them (24 hours on AWS) only to learn which users they name, then
//! repairs each of those users from a consistent read of the table (`reconcile::user`), exactly
//! as the deployed function would write them. A write made to the table meanwhile is therefore
//! never undone, whatever the stream shows or does not show yet. The message is deleted once
//! every user is repaired.
//!
//! Two things the table cannot say are taken from the records:
//! - **Removed prefixes.** Under `DELETE_SCOPE=prefix`, a REMOVE clears the user's whole
//!   prefix, and the user may have been written again since. The objects under the prefix older
//!   than the REMOVE are deleted before the user's repair puts its current object back
//!   (`prefix_cleanup`).
//! - **Expired records.** A message whose records the stream no longer holds cannot name all
//!   its users. The users it still names are repaired and the message kept and reported; with
//!   `reconcile_expired` the whole table is reconciled with repair instead, and those messages
//!   deleted if nothing failed (`expired`).
//!
//! Messages that are kept (or read in a dry run) are made visible again at the end of their
//! turn, so a second run sees them at once.
//!
//! One module per step: `context` (the stack's queue, the deployed mirror, the clients),
//! `messages` (receive, parse, order, release or delete), `batch_read` (a batch's records from
//! its shard), `users` (the users they name), `repair` and `prefix_cleanup` (repairing them),
//! `per_message` (one message from read to outcome), `expired` (the whole-table reconcile for
//! expired messages) and `report` (what happened).

mod batch_read;
mod context;
mod expired;
mod messages;
mod per_message;
mod prefix_cleanup;
mod repair;
mod report;
#[cfg(test)]
mod scripted;
#[cfg(test)]
mod tests;
mod users;

pub use crate::streams::sequence::compare_sequence_numbers;
pub use batch_read::BatchReadError;
pub use messages::{parse_message, BatchInfo, MessageError};
pub use report::{ExpiredReconcile, MessageReport, Outcome, ReplayReport};

use crate::reconcile::DeployedMirrorError;
use crate::stack::StackError;
use crate::target::Target;
use context::Context;
use expired::WholeTableReconcile;

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Read and report the users each message names; repair nothing, delete nothing.
    pub dry_run: bool,
    /// When messages have records no longer in the stream, reconcile the whole table with
    /// repair, then delete those messages if nothing failed.
    pub reconcile_expired: bool,
}

/// Why the replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Mirror(#[from] DeployedMirrorError),
    #[error(transparent)]
    Stack(#[from] StackError),
}

/// Replays the failure queue of `stack_name` on `target`; `progress` hears about each step.
pub async fn replay_failures(
    target: &Target,
    stack_name: &str,
    options: ReplayOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ReplayReport, ReplayError> {
    let context = Context::load(target, stack_name).await?;
    let reconciler = expired::StackReconcile { target, stack_name };
    run(&context, options, &reconciler, progress).await
}

/// Replays every message of the queue in `context`.
async fn run(
    context: &Context,
    options: ReplayOptions,
    reconciler: &impl WholeTableReconcile,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ReplayReport, ReplayError> {
    let received = messages::receive_all(&context.sqs, &context.queue_url).await?;
    progress(&format!(
        "{} message(s) in the failure queue of stack {}",
        received.len(),
        context.stack_name
    ));
    let (sqs, queue_url) = (&context.sqs, context.queue_url.as_str());
    let mut reports = Vec::new();
    // Expired messages kept for the whole-table reconcile, with their report's index.
    let mut held = Vec::new();
    for (received, info) in messages::in_stream_order(received) {
        let mut report =
            per_message::replay_message(context, &received, info, options.dry_run, progress).await;
        match report.outcome {
            Outcome::Replayed => {
                messages::delete(sqs, queue_url, &received).await?;
                report.deleted = true;
            }
            Outcome::Expired { .. } if options.reconcile_expired && !options.dry_run => {
                held.push((received, reports.len()));
            }
            _ => messages::release(sqs, queue_url, &received).await,
        }
        reports.push(report);
    }
    let expired_reconcile = if held.is_empty() {
        None
    } else {
        Some(expired::reconcile_held(context, reconciler, held, &mut reports, progress).await?)
    };
    Ok(context.report(options.dry_run, reports, expired_reconcile))
}

/// Callers spawn the replay (the end-to-end suite's scenarios are `Send` futures): a change that
/// makes its future lose `Send` fails to compile here rather than there.
#[allow(dead_code, reason = "a compile-time check, never called")]
fn replay_future_is_send(target: &Target) {
    fn is_send<T: Send>(_: T) {}
    is_send(replay_failures(
        target,
        "stack",
        ReplayOptions::default(),
        &mut |_| {},
    ));
}
