//! Replaying one message: planning it from the records read back from the stream (which of
//! the batch's records are still there, which are superseded by later ones), applying the plan
//! with the function's own logic, then deleting or releasing the message.

use std::collections::HashSet;

use serde_json::Value;
use usersync_function::{process_batch, Mirror, S3Store};

use super::context::Context;
use super::messages::{delete, release, BatchInfo, MessageError, Received};
use super::recording_store::RecordingStore;
use super::report::{MessageReport, Outcome};
use super::stream::{ShardRead, ShardReads, ShardRecord};
use super::{ReplayError, ReplayOptions};
use crate::streams::sequence::compare_sequence_numbers;

/// What replaying one message amounts to, worked out from the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct MessagePlan {
    /// The batch's records still in the stream, in order.
    pub found: usize,
    /// The batch's records the stream no longer holds (0 when all are there).
    pub missing: u64,
    /// Records to apply: those of users without a later record.
    pub apply: Vec<Value>,
    /// Records skipped because their user has a later record in the stream.
    pub superseded: usize,
}

impl MessagePlan {
    pub fn expired(&self) -> bool {
        self.missing > 0
    }
}

/// Plans the replay of `info` from the records of its shard read from at least its start on
/// (`shard`, in stream order, possibly beginning later when older records were trimmed), and
/// the users that have records in shards descending from it (`later_users`).
pub fn plan_message(
    info: &BatchInfo,
    shard: &[ShardRecord],
    later_users: &HashSet<String>,
) -> MessagePlan {
    use std::cmp::Ordering::{Greater, Less};
    let in_batch: Vec<&ShardRecord> = shard
        .iter()
        .filter(|r| {
            compare_sequence_numbers(&r.sequence_number, &info.start_sequence_number) != Less
                && compare_sequence_numbers(&r.sequence_number, &info.end_sequence_number)
                    != Greater
        })
        .collect();
    let starts_where_it_should = in_batch
        .first()
        .is_some_and(|r| r.sequence_number == info.start_sequence_number);
    let ends_where_it_should = in_batch
        .last()
        .is_some_and(|r| r.sequence_number == info.end_sequence_number);
    let missing = match info.batch_size {
        Some(size) => size.saturating_sub(in_batch.len() as u64),
        None => 0,
    };
    // Without a batch size, or with one that does not match, the ends tell.
    let missing = if missing == 0 && !(starts_where_it_should && ends_where_it_should) {
        1
    } else {
        missing
    };
    let after: HashSet<&str> = shard
        .iter()
        .filter(|r| {
            compare_sequence_numbers(&r.sequence_number, &info.end_sequence_number) == Greater
        })
        .filter_map(|r| r.user.as_deref())
        .collect();
    let mut apply = Vec::new();
    let mut superseded = 0;
    for record in &in_batch {
        let later = record
            .user
            .as_deref()
            .is_some_and(|user| after.contains(user) || later_users.contains(user));
        if later {
            superseded += 1;
        } else {
            apply.push(record.event.clone());
        }
    }
    MessagePlan {
        found: in_batch.len(),
        missing,
        apply,
        superseded,
    }
}

/// Replays one received message (or, in a dry run, works out what it would do) and deletes
/// or releases it.
pub(super) async fn replay_message(
    context: &Context,
    received: Received,
    info: Result<BatchInfo, MessageError>,
    shards: &ShardReads,
    options: ReplayOptions,
) -> Result<MessageReport, ReplayError> {
    let (sqs, queue_url) = (&context.sqs, context.queue_url.as_str());
    let info = match info {
        Ok(info) => info,
        Err(err) => {
            let report = MessageReport {
                message_id: received.id.clone(),
                batch: None,
                records: 0,
                applied: 0,
                superseded: 0,
                outcome: Outcome::Unreadable {
                    reason: err.to_string(),
                },
                deleted: false,
            };
            release(sqs, queue_url, &received).await;
            return Ok(report);
        }
    };
    let plan = plan_from_read(
        &info,
        &shards[&(info.stream_arn.clone(), info.shard_id.clone())],
    );
    let mut report = MessageReport {
        message_id: received.id.clone(),
        batch: Some(info),
        records: plan.found,
        applied: 0,
        superseded: plan.superseded,
        outcome: Outcome::WouldReplay,
        deleted: false,
    };
    if options.dry_run {
        report.applied = plan.apply.len();
        if plan.expired() {
            report.outcome = Outcome::Expired {
                missing: plan.missing,
            };
        }
        release(sqs, queue_url, &received).await;
        return Ok(report);
    }

    let (expired, missing) = (plan.expired(), plan.missing);
    let failure = match apply(&context.mirror, plan.apply).await {
        Ok(applied) => {
            report.applied = applied;
            None
        }
        Err(reason) => Some(reason),
    };
    report.outcome = match (failure, expired) {
        (Some(reason), _) => Outcome::Failed { reason },
        (None, false) => Outcome::Replayed,
        (None, true) if options.discard_expired => Outcome::ExpiredDiscarded { missing },
        (None, true) => Outcome::Expired { missing },
    };
    if matches!(
        report.outcome,
        Outcome::Replayed | Outcome::ExpiredDiscarded { .. }
    ) {
        delete(sqs, queue_url, &received).await?;
        report.deleted = true;
    } else {
        release(sqs, queue_url, &received).await;
    }
    Ok(report)
}

/// The plan for `info` from its shard's read; a shard that could no longer be read leaves
/// nothing to apply and every record missing.
fn plan_from_read(info: &BatchInfo, read: &ShardRead) -> MessagePlan {
    match &read.records {
        Ok(records) => plan_message(info, records, &read.later_users),
        Err(_) => MessagePlan {
            found: 0,
            missing: info.batch_size.unwrap_or(1).max(1),
            apply: Vec::new(),
            superseded: 0,
        },
    }
}

/// Applies `records` with the function's logic; returns how many were applied, or why some
/// could not be.
async fn apply(
    mirror: &Mirror<RecordingStore<S3Store>>,
    records: Vec<Value>,
) -> Result<usize, String> {
    if records.is_empty() {
        return Ok(0);
    }
    mirror.store.clear();
    let applying = records.len();
    let (response, _summary) = process_batch(mirror, records).await;
    if response.batch_item_failures.is_empty() {
        return Ok(applying);
    }
    Err(format!(
        "{} user(s) could not be applied ({}); run the replay again",
        response.batch_item_failures.len(),
        mirror
            .store
            .first_error()
            .unwrap_or_else(|| "no error recorded".to_owned())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::user_identity;
    use serde_json::json;

    fn record(seq: u32, user: &str) -> ShardRecord {
        ShardRecord::from_event(
            json!({"dynamodb": {"Keys": {"name": {"S": user}}, "SequenceNumber": seq.to_string()}}),
            seq.to_string(),
        )
    }

    fn info(start: u32, end: u32, size: Option<u64>) -> BatchInfo {
        BatchInfo {
            shard_id: "s".into(),
            start_sequence_number: start.to_string(),
            end_sequence_number: end.to_string(),
            batch_size: size,
            stream_arn: "a".into(),
            condition: None,
        }
    }

    fn sequences(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["dynamodb"]["SequenceNumber"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_batch_is_its_records_from_start_to_end() {
        let shard = [
            record(8, "a"),
            record(9, "b"),
            record(10, "c"),
            record(11, "d"),
            record(12, "e"),
        ];
        let plan = plan_message(&info(9, 11, Some(3)), &shard, &HashSet::new());
        assert_eq!(plan.found, 3);
        assert!(!plan.expired());
        assert_eq!(sequences(&plan.apply), ["9", "10", "11"]);
        assert_eq!(plan.superseded, 0);
    }

    #[test]
    fn users_with_later_records_are_superseded() {
        let shard = [
            record(9, "a"),
            record(10, "b"),
            record(11, "a"),
            record(12, "c"),
            record(13, "b"),
        ];
        // b is written again after the batch: its record in the batch is skipped. a's two
        // records are both inside the batch and both applied, in order.
        let later_in_child = HashSet::from([user_identity(&record(0, "c").event).unwrap()]);
        let plan = plan_message(&info(9, 12, Some(4)), &shard, &later_in_child);
        assert_eq!(sequences(&plan.apply), ["9", "11"]);
        assert_eq!(
            plan.superseded, 2,
            "b (later in the shard), c (later in a child)"
        );
    }

    #[test]
    fn records_no_longer_in_the_stream_are_counted_as_missing() {
        // The shard now starts at 11: 9 and 10 were trimmed.
        let shard = [record(11, "c"), record(12, "d")];
        let plan = plan_message(&info(9, 11, Some(3)), &shard, &HashSet::new());
        assert_eq!(plan.found, 1);
        assert_eq!(plan.missing, 2);
        assert!(plan.expired());
        assert_eq!(sequences(&plan.apply), ["11"]);
        // Without a batch size the ends tell.
        let plan = plan_message(&info(9, 11, None), &shard, &HashSet::new());
        assert!(plan.expired());
        let plan = plan_message(&info(9, 11, Some(3)), &[], &HashSet::new());
        assert_eq!(plan.missing, 3);
    }
}
