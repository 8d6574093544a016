//! Replaying one message: read its batch back from the stream, name the batch's users, repair
//! them from the table (not in a dry run), and say how the message ended. Deleting or releasing
//! it is the caller's.

use super::batch_read::read_batch;
use super::context::Context;
use super::messages::{BatchInfo, MessageError, Received};
use super::repair::repair_users;
use super::report::{MessageReport, Outcome};
use super::users::name_users;
use crate::errors::chain;

/// Replays `received` (or, in a dry run, names its users).
pub(super) async fn replay_message(
    context: &Context,
    received: &Received,
    info: Result<BatchInfo, MessageError>,
    dry_run: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> MessageReport {
    let mut report = MessageReport {
        message_id: received.id.clone(),
        batch: None,
        records: 0,
        users: Vec::new(),
        repaired: 0,
        prefix_objects_deleted: 0,
        skipped: 0,
        outcome: Outcome::WouldReplay,
        deleted: false,
    };
    let info = match info {
        Ok(info) => info,
        Err(err) => {
            report.outcome = Outcome::Unreadable {
                reason: chain(&err),
            };
            return report;
        }
    };
    progress(&format!(
        "message {}: reading shard {} from {} to {}",
        received.id, info.shard_id, info.start_sequence_number, info.end_sequence_number
    ));
    let read = read_batch(&context.streams, &info, context.read_limits).await;
    report.batch = Some(info);
    let read = match read {
        Ok(read) => read,
        Err(err) => {
            report.outcome = Outcome::Failed {
                reason: chain(&err),
            };
            return report;
        }
    };
    let named = name_users(&read.records, &context.config);
    for reason in &named.skipped {
        progress(&format!(
            "message {}: skipped, as the function skips it: {reason}",
            received.id
        ));
    }
    report.records = read.records.len();
    report.users = named.users.iter().map(|u| u.name.clone()).collect();
    report.skipped = named.skipped.len();
    let expired = Outcome::Expired {
        missing: read.missing,
    };
    if dry_run {
        if read.expired() {
            report.outcome = expired;
        }
        return report;
    }

    // An expired batch still names some of its users: repairing them is as safe as any
    // repair, and leaves the whole-table reconcile less to do.
    let done = repair_users(context, &named.users).await;
    report.repaired = done.repaired;
    report.prefix_objects_deleted = done.prefix_objects_deleted;
    report.outcome = match done.failures.first() {
        Some(first) => Outcome::Failed {
            reason: format!(
                "{} of {} user(s) could not be repaired, first {first}; run the replay again",
                done.failures.len(),
                named.users.len()
            ),
        },
        None if read.expired() => expired,
        None => Outcome::Replayed,
    };
    report
}
