//! `cargo xtask replay-failures`: applies the records whose batches the event source mapping
//! gave up on.
//!
//! When a batch exhausts its retries (or its records get too old), Lambda sends the batch's
//! coordinates, not its records, to the stack's failure queue: the shard, the first and last
//! sequence numbers, the batch size and the stream. Replaying a message means reading those
//! records back from the stream while it still holds them (24 hours on AWS), applying them with
//! the function's own logic (in this process, with the deployed function's settings), and
//! deleting the message once every record is applied.
//!
//! Two things make a naive replay wrong, and are handled:
//! - **Later writes.** A discarded record may be older than a record of the same user that the
//!   mapping applied after it moved on; replaying the old one would undo the newer one. A
//!   user's records are therefore skipped (as *superseded*) when the stream holds a later
//!   record of the same user, in the same shard after the batch or in a shard descending from
//!   it. The later record was applied by the mapping, or sits in another message of the queue
//!   and is replayed with it (messages are replayed in stream order).
//! - **Expired records.** Records the stream no longer holds cannot be replayed. Those still
//!   there are applied; the message is kept and reported, unless `discard_expired` is set.
//!
//! Messages that are kept (or read in a dry run) are made visible again at the end, so a second
//! run sees them at once.
//!
//! The run goes in phases, one module each: `context` (the stack's queue, the function's
//! settings, the clients), `messages` (receive, parse, put in stream order, release or
//! delete), `stream` (read each shard's lineage once), `apply` (plan and apply one
//! message) and `report` (what happened).

mod apply;
mod context;
mod messages;
mod recording_store;
mod report;
mod stream;

pub use crate::streams::sequence::compare_sequence_numbers;
pub use apply::{plan_message, MessagePlan};
pub use messages::{parse_message, BatchInfo, MessageError};
pub use report::{MessageReport, Outcome, ReplayReport};
pub use stream::{user_identity, ShardRecord};

use crate::stack::StackError;
use crate::target::Target;
use context::Context;

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Read and report; apply nothing, delete nothing.
    pub dry_run: bool,
    /// Delete a message whose records are partly or wholly gone from the stream (after applying
    /// the ones still there), instead of keeping it.
    pub discard_expired: bool,
}

/// Why the replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("stack {stack} does not exist on {target}: nothing to replay")]
    NoStack { stack: String, target: String },
    #[error("stack {stack} has no {output} output: deploy it with `cargo xtask deploy` first")]
    MissingOutput { stack: String, output: &'static str },
    #[error("the deployed function {function} has an invalid configuration: {reason}")]
    FunctionConfig { function: String, reason: String },
    #[error("failed to list the shards of the stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Stack(#[from] StackError),
}

/// Replays the failure queue of `stack_name` on `target`; `progress` hears about each step.
pub async fn replay_failures(
    target: &Target,
    stack_name: &str,
    options: ReplayOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ReplayReport, ReplayError> {
    let context = Context::load(target, stack_name).await?;
    let received = messages::receive_all(&context.sqs, &context.queue_url).await?;
    progress(&format!(
        "{} message(s) in the failure queue of stack {stack_name}",
        received.len()
    ));
    let parsed = messages::in_stream_order(received);
    let shards = stream::read_shards(&context.streams, &parsed, progress).await?;
    let mut reports = Vec::new();
    for (received, info) in parsed {
        reports.push(apply::replay_message(&context, received, info, &shards, options).await?);
    }
    Ok(context.report(options.dry_run, reports))
}
