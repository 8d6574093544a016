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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use usersync_function::{process_batch, Config, Mirror, ObjectStore, S3Store, StoreError};

use crate::stack::{aws_error, describe_stack, outputs_of, StackError};
use crate::streams::reader::{ReadError, ReadPosition, ShardReader, MAX_RECORDS_PER_READ};
use crate::streams::shards::{describe_shards, ShardListing};
use crate::target::Target;
use crate::template::output;

/// How long received messages stay hidden from other readers while a replay works on them.
const VISIBILITY_TIMEOUT_S: i32 = 900;
/// Reads of an open shard that come back empty in a row, past every batch read from it, before
/// its tip counts as reached.
const EMPTY_READS_AT_TIP: u32 = 3;
/// The same before the last batch's end was seen: DynamoDB Streams may answer empty several
/// times on the way through a shard, and stopping short would count the batch's records as
/// gone. The bound only matters for a shard whose every record was trimmed.
const EMPTY_READS_BEFORE_THE_END: u32 = 100;

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Read and report; apply nothing, delete nothing.
    pub dry_run: bool,
    /// Delete a message whose records are partly or wholly gone from the stream (after applying
    /// the ones still there), instead of keeping it.
    pub discard_expired: bool,
}

/// A failure-queue message's `DDBStreamBatchInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    /// Records in the discarded batch, when the message says.
    pub batch_size: Option<u64>,
    pub stream_arn: String,
    /// `RetryAttemptsExhausted`, `RecordAgeExceeded`, …
    pub condition: Option<String>,
}

/// A message body that is not a stream batch's failure record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error(
        "the message has no DDBStreamBatchInfo: it does not come from a DynamoDB stream mapping"
    )]
    NoBatchInfo,
    #[error("DDBStreamBatchInfo has no {0}")]
    MissingField(&'static str),
}

/// Reads the `DDBStreamBatchInfo` of a failure-queue message (Lambda's on-failure record for a
/// DynamoDB stream batch).
pub fn parse_message(body: &str) -> Result<BatchInfo, MessageError> {
    let message: Value =
        serde_json::from_str(body).map_err(|err| MessageError::NotJson(err.to_string()))?;
    let info = message
        .get("DDBStreamBatchInfo")
        .filter(|info| info.is_object())
        .ok_or(MessageError::NoBatchInfo)?;
    let text = |field: &'static str| {
        info.get(field)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or(MessageError::MissingField(field))
    };
    Ok(BatchInfo {
        shard_id: text("shardId")?,
        start_sequence_number: text("startSequenceNumber")?,
        end_sequence_number: text("endSequenceNumber")?,
        batch_size: info.get("batchSize").and_then(Value::as_u64),
        stream_arn: text("streamArn")?,
        condition: message
            .pointer("/requestContext/condition")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Orders DynamoDB stream sequence numbers, which are decimal numbers of varying length.
pub fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Which user a stream record is about: its `Keys`, in a canonical form.
pub fn user_identity(event: &Value) -> Option<String> {
    let keys = event.pointer("/dynamodb/Keys")?.as_object()?;
    let sorted: BTreeMap<&String, String> = keys.iter().map(|(k, v)| (k, v.to_string())).collect();
    Some(
        sorted
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// A record read back from the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardRecord {
    pub sequence_number: String,
    pub user: Option<String>,
    pub event: Value,
}

impl ShardRecord {
    pub fn from_event(event: Value, sequence_number: String) -> Self {
        Self {
            user: user_identity(&event),
            sequence_number,
            event,
        }
    }
}

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

/// How a message ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Every record applied (or superseded); the message was deleted.
    Replayed,
    /// Dry run: what would be applied; nothing changed.
    WouldReplay,
    /// Some records are no longer in the stream; the ones left were applied (not in a dry
    /// run) and the message kept.
    Expired { missing: u64 },
    /// As `Expired`, and the message deleted (`discard_expired`).
    ExpiredDiscarded { missing: u64 },
    /// Applying failed; the message was kept for a later run.
    Failed { reason: String },
    /// Not a stream batch's failure record; kept.
    Unreadable { reason: String },
}

impl Outcome {
    /// A short word for the text report.
    pub fn label(&self) -> String {
        match self {
            Outcome::Replayed => "replayed, message deleted".to_owned(),
            Outcome::WouldReplay => "would be replayed (dry run)".to_owned(),
            Outcome::Expired { missing } => format!(
                "{missing} record(s) no longer in the stream; message kept (pass --discard-expired to delete it)"
            ),
            Outcome::ExpiredDiscarded { missing } => {
                format!("{missing} record(s) no longer in the stream; message deleted (--discard-expired)")
            }
            Outcome::Failed { reason } => format!("failed, message kept: {reason}"),
            Outcome::Unreadable { reason } => format!("not replayable, message kept: {reason}"),
        }
    }
}

/// One message's replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub message_id: String,
    pub batch: Option<BatchInfo>,
    /// The batch's records found in the stream.
    pub records: usize,
    /// Records applied to the bucket (in a dry run: that would be).
    pub applied: usize,
    /// Records skipped because their user has a later record in the stream.
    pub superseded: usize,
    pub outcome: Outcome,
    pub deleted: bool,
}

/// The whole run, as `--output json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub stack_name: String,
    pub queue_url: String,
    pub bucket: String,
    pub dry_run: bool,
    pub messages: Vec<MessageReport>,
}

impl ReplayReport {
    pub fn deleted(&self) -> usize {
        self.messages.iter().filter(|m| m.deleted).count()
    }

    pub fn kept(&self) -> usize {
        self.messages.len() - self.deleted()
    }

    /// Messages kept because something went wrong (not merely a dry run).
    pub fn kept_with_problems(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| !m.deleted && m.outcome != Outcome::WouldReplay)
            .count()
    }

    pub fn records_applied(&self) -> usize {
        self.messages.iter().map(|m| m.applied).sum()
    }

    /// One line for the end of the text report.
    pub fn summary(&self) -> String {
        if self.messages.is_empty() {
            return format!(
                "the failure queue of stack {} is empty: nothing to replay",
                self.stack_name
            );
        }
        if self.dry_run {
            let would_replay = self
                .messages
                .iter()
                .filter(|m| m.outcome == Outcome::WouldReplay)
                .count();
            return format!(
                "{} message(s): {would_replay} would be replayed and deleted, {} kept; {} record(s) would be applied to {} (dry run: nothing changed)",
                self.messages.len(),
                self.messages.len() - would_replay,
                self.records_applied(),
                self.bucket
            );
        }
        format!(
            "{} message(s): {} replayed and deleted, {} kept; {} record(s) applied to {}",
            self.messages.len(),
            self.deleted(),
            self.kept(),
            self.records_applied(),
            self.bucket
        )
    }
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

/// A received message.
struct Received {
    id: String,
    receipt: String,
    body: String,
}

/// Replays the failure queue of `stack_name` on `target`; `progress` hears about each step.
pub async fn replay_failures(
    target: &Target,
    stack_name: &str,
    options: ReplayOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ReplayReport, ReplayError> {
    let stack = describe_stack(target, stack_name)
        .await?
        .ok_or_else(|| ReplayError::NoStack {
            stack: stack_name.to_owned(),
            target: target.describe(),
        })?;
    let outputs = outputs_of(&stack);
    let output = |name: &'static str| {
        outputs
            .get(name)
            .cloned()
            .ok_or(ReplayError::MissingOutput {
                stack: stack_name.to_owned(),
                output: name,
            })
    };
    let queue_url = output(output::FAILURE_QUEUE_URL)?;
    let function = output(output::FUNCTION_NAME)?;
    let config = function_config(target, &function).await?;
    let bucket = config.bucket.clone();
    let mirror = Mirror {
        // The function's own client: its retries are what a user's request would get.
        store: RecordingStore::new(S3Store::new(
            usersync_function::s3_client_from(&target.sdk, !target.is_aws()),
            config.bucket.clone(),
        )),
        config,
    };

    let sqs = target.sqs();
    let streams = target.dynamodb_streams();
    let received = receive_all(&sqs, &queue_url).await?;
    progress(&format!(
        "{} message(s) in the failure queue of stack {stack_name}",
        received.len()
    ));

    // Parse, then replay in stream order: per stream and shard, by first sequence number.
    let mut parsed: Vec<(Received, Result<BatchInfo, MessageError>)> = received
        .into_iter()
        .map(|m| {
            let info = parse_message(&m.body);
            (m, info)
        })
        .collect();
    parsed.sort_by(|(_, a), (_, b)| match (a, b) {
        (Ok(a), Ok(b)) => (&a.stream_arn, &a.shard_id)
            .cmp(&(&b.stream_arn, &b.shard_id))
            .then_with(|| {
                compare_sequence_numbers(&a.start_sequence_number, &b.start_sequence_number)
            }),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => std::cmp::Ordering::Equal,
    });

    // Read each shard once, from the earliest start any of its messages needs to past the
    // latest end; each stream's shards are listed once.
    let mut listings: HashMap<String, Vec<ShardListing>> = HashMap::new();
    let mut shards: HashMap<(String, String), ShardRead> = HashMap::new();
    for (_, info) in &parsed {
        let Ok(info) = info else { continue };
        let key = (info.stream_arn.clone(), info.shard_id.clone());
        if shards.contains_key(&key) {
            continue;
        }
        // `parsed` is in stream order: this is the shard's earliest message.
        let latest_end = parsed
            .iter()
            .filter_map(|(_, i)| i.as_ref().ok())
            .filter(|i| i.stream_arn == info.stream_arn && i.shard_id == info.shard_id)
            .map(|i| i.end_sequence_number.as_str())
            .max_by(|a, b| compare_sequence_numbers(a, b))
            .unwrap_or(&info.end_sequence_number);
        progress(&format!(
            "reading shard {} of {} from sequence number {}",
            info.shard_id, info.stream_arn, info.start_sequence_number
        ));
        let listing = match listings.get(&info.stream_arn) {
            Some(listing) => listing,
            None => {
                let listing = match describe_shards(&streams, &info.stream_arn).await {
                    Ok(listing) => listing,
                    // No stream, no later records (and no records to replay either).
                    Err(ReadError::StreamGone { .. }) => Vec::new(),
                    Err(err) => return Err(ReplayError::Stream(err.to_string())),
                };
                listings.entry(info.stream_arn.clone()).or_insert(listing)
            }
        };
        let read = read_lineage(&streams, listing, info, latest_end).await?;
        if let Err(reason) = &read.records {
            progress(&format!("shard {}: {reason}", info.shard_id));
        }
        shards.insert(key, read);
    }

    let mut messages = Vec::new();
    for (received, info) in parsed {
        let info = match info {
            Ok(info) => info,
            Err(err) => {
                messages.push(MessageReport {
                    message_id: received.id.clone(),
                    batch: None,
                    records: 0,
                    applied: 0,
                    superseded: 0,
                    outcome: Outcome::Unreadable {
                        reason: err.to_string(),
                    },
                    deleted: false,
                });
                release(&sqs, &queue_url, &received).await;
                continue;
            }
        };
        let read = &shards[&(info.stream_arn.clone(), info.shard_id.clone())];
        let plan = match &read.records {
            Ok(records) => plan_message(&info, records, &read.later_users),
            Err(_) => MessagePlan {
                found: 0,
                missing: info.batch_size.unwrap_or(1).max(1),
                apply: Vec::new(),
                superseded: 0,
            },
        };
        let mut report = MessageReport {
            message_id: received.id.clone(),
            batch: Some(info.clone()),
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
            release(&sqs, &queue_url, &received).await;
            messages.push(report);
            continue;
        }

        let expired = plan.expired();
        let failure = if plan.apply.is_empty() {
            None
        } else {
            mirror.store.clear();
            let applying = plan.apply.len();
            let (response, _summary) = process_batch(&mirror, plan.apply).await;
            if response.batch_item_failures.is_empty() {
                report.applied = applying;
                None
            } else {
                Some(format!(
                    "{} user(s) could not be applied ({}); run the replay again",
                    response.batch_item_failures.len(),
                    mirror
                        .store
                        .first_error()
                        .unwrap_or_else(|| "no error recorded".to_owned())
                ))
            }
        };
        report.outcome = match (failure, expired) {
            (Some(reason), _) => Outcome::Failed { reason },
            (None, false) => Outcome::Replayed,
            (None, true) if options.discard_expired => Outcome::ExpiredDiscarded {
                missing: plan.missing,
            },
            (None, true) => Outcome::Expired {
                missing: plan.missing,
            },
        };
        if matches!(
            report.outcome,
            Outcome::Replayed | Outcome::ExpiredDiscarded { .. }
        ) {
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(&received.receipt)
                .send()
                .await
                .map_err(|err| {
                    aws_error(
                        format!("delete message {} from {queue_url}", received.id),
                        err,
                    )
                })?;
            report.deleted = true;
        } else {
            release(&sqs, &queue_url, &received).await;
        }
        messages.push(report);
    }
    Ok(ReplayReport {
        stack_name: stack_name.to_owned(),
        queue_url,
        bucket,
        dry_run: options.dry_run,
        messages,
    })
}

/// The deployed function's settings, as its process would read them at cold start.
async fn function_config(target: &Target, function: &str) -> Result<Config, ReplayError> {
    let configuration = target
        .lambda()
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(|err| {
            aws_error(
                format!("read the configuration of function {function}"),
                err,
            )
        })?;
    let variables: HashMap<String, String> = configuration
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    Config::from_lookup(|name| variables.get(name).cloned()).map_err(|err| {
        ReplayError::FunctionConfig {
            function: function.to_owned(),
            reason: err.to_string(),
        }
    })
}

/// Every message of the queue, each hidden from other readers while the replay runs.
async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<Received>, ReplayError> {
    let mut all: Vec<Received> = Vec::new();
    let mut ids = HashSet::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_TIMEOUT_S)
            // A short long-poll: asks every SQS server, not a sample, so an empty answer
            // means an empty queue.
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|err| aws_error(format!("read the failure queue {queue_url}"), err))?;
        let batch = output.messages();
        if batch.is_empty() {
            break;
        }
        for message in batch {
            let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else {
                continue;
            };
            if ids.insert(id.to_owned()) {
                all.push(Received {
                    id: id.to_owned(),
                    receipt: receipt.to_owned(),
                    body: message.body().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    Ok(all)
}

/// Makes a message visible again at once; a failure only delays it until its timeout.
async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, message: &Received) {
    let _ = sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(&message.receipt)
        .visibility_timeout(0)
        .send()
        .await;
}

/// One shard's records from a sequence number on, and the users of the shards after it.
struct ShardRead {
    /// The shard's records from the earliest start on; an error when the shard cannot be read
    /// any more (expired, or the stream is gone).
    records: Result<Vec<ShardRecord>, String>,
    /// Users with records in shards descending from this one.
    later_users: HashSet<String>,
}

/// Reads the shard of `info` from its start to past `until` (or to its end), and the users
/// of the shards descending from it in `listing`.
async fn read_lineage(
    streams: &aws_sdk_dynamodbstreams::Client,
    listing: &[ShardListing],
    info: &BatchInfo,
    until: &str,
) -> Result<ShardRead, ReplayError> {
    let (stream_arn, shard_id) = (info.stream_arn.as_str(), info.shard_id.as_str());
    let start = ReadPosition::At(info.start_sequence_number.clone());
    let records = match read_shard(streams, stream_arn, shard_id, start, Some(until)).await {
        Ok(records) => Ok(records),
        Err(ReadError::StreamGone { message, .. }) => Err(format!(
            "shard {shard_id} of {stream_arn} is no longer readable: {message}"
        )),
        Err(err) => return Err(ReplayError::Stream(err.to_string())),
    };
    // The shards descending from this one hold later records of its users. Not knowing them
    // could replay a record over a newer one, so a failure to read them stops the replay.
    let mut descendants: Vec<&str> = Vec::new();
    let mut frontier = vec![shard_id];
    while let Some(parent) = frontier.pop() {
        for shard in listing {
            if shard.parent_shard_id.as_deref() == Some(parent)
                && !descendants.contains(&shard.shard_id.as_str())
            {
                descendants.push(&shard.shard_id);
                frontier.push(&shard.shard_id);
            }
        }
    }
    let mut later_users = HashSet::new();
    for child in descendants {
        match read_shard(streams, stream_arn, child, ReadPosition::TrimHorizon, None).await {
            Ok(records) => later_users.extend(records.into_iter().filter_map(|r| r.user)),
            Err(ReadError::StreamGone { .. }) => {}
            Err(err) => return Err(ReplayError::Stream(err.to_string())),
        }
    }
    Ok(ShardRead {
        records,
        later_users,
    })
}

/// Reads `shard_id` from `from` (its oldest record left, when that is trimmed) to its end, or,
/// while it is open, to its current tip, not before passing the record `until`.
async fn read_shard(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
    from: ReadPosition,
    until: Option<&str>,
) -> Result<Vec<ShardRecord>, ReadError> {
    let mut reader = ShardReader::new(streams.clone(), stream_arn, shard_id, from);
    let mut records = Vec::new();
    let mut passed_until = until.is_none();
    let mut empty_reads = 0;
    while !reader.is_finished() {
        let read = reader.read(MAX_RECORDS_PER_READ).await?;
        if read.is_empty() {
            empty_reads += 1;
        } else {
            empty_reads = 0;
        }
        for record in read {
            passed_until |= until.is_some_and(|until| {
                compare_sequence_numbers(&record.sequence_number, until).is_ge()
            });
            records.push(ShardRecord::from_event(
                record.event,
                record.sequence_number,
            ));
        }
        let tip = if passed_until {
            EMPTY_READS_AT_TIP
        } else {
            EMPTY_READS_BEFORE_THE_END
        };
        if empty_reads >= tip {
            break;
        }
        if empty_reads > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(records)
}

/// An [`ObjectStore`] that remembers the first error, so a failed replay can say why.
struct RecordingStore<S> {
    inner: S,
    first_error: Mutex<Option<String>>,
}

impl<S> RecordingStore<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            first_error: Mutex::new(None),
        }
    }

    fn clear(&self) {
        *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(err) = &result {
            self.first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| err.to_string());
        }
        result
    }
}

impl<S: ObjectStore + Send> ObjectStore for RecordingStore<S> {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.note(self.inner.put(key, body).await)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.note(self.inner.delete(key).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.note(self.inner.delete_prefix(prefix).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::failure_record::{discard_message, DiscardCondition, DiscardedBatch};
    use crate::streams::record::StreamEventRecord;
    use serde_json::json;
    use std::cmp::Ordering;
    use std::time::SystemTime;

    fn stream_record(seq: &str) -> StreamEventRecord {
        StreamEventRecord {
            event: json!({}),
            sequence_number: seq.into(),
            created_at_epoch_s: Some(1_764_633_600.0),
            payload_bytes: 2,
        }
    }

    #[test]
    fn reads_the_message_the_mapping_sends() {
        let records = [stream_record("000100"), stream_record("000105")];
        let message = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RetryAttemptsExhausted,
                function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f",
                stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s",
                shard_id: "shardId-1",
                records: &records,
                invoke_count: 3,
                request_id: "req-0",
                last_invocation: None,
            },
            SystemTime::now(),
        );
        assert_eq!(
            parse_message(&message.to_string()),
            Ok(BatchInfo {
                shard_id: "shardId-1".into(),
                start_sequence_number: "000100".into(),
                end_sequence_number: "000105".into(),
                batch_size: Some(2),
                stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s".into(),
                condition: Some("RetryAttemptsExhausted".into()),
            })
        );
    }

    #[test]
    fn reads_a_message_as_aws_documents_it() {
        // The example of Lambda's documentation for a DynamoDB stream's on-failure record.
        let body = r#"{
            "requestContext": {
                "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 1
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2019-11-14T00:38:06.021Z",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-00000001573689847184-864758bb",
                "startSequenceNumber": "800000000003126276362",
                "endSequenceNumber": "800000000003126276362",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:38:05Z",
                "batchSize": 1,
                "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"
            }
        }"#;
        let info = parse_message(body).unwrap();
        assert_eq!(info.shard_id, "shardId-00000001573689847184-864758bb");
        assert_eq!(info.start_sequence_number, "800000000003126276362");
        assert_eq!(info.batch_size, Some(1));
        assert!(info.stream_arn.ends_with("stream/2019-11-14T00:04:06.388"));
    }

    #[test]
    fn other_messages_are_refused_with_the_reason() {
        assert!(matches!(
            parse_message("not json"),
            Err(MessageError::NotJson(_))
        ));
        assert_eq!(
            parse_message(r#"{"KinesisBatchInfo": {}}"#),
            Err(MessageError::NoBatchInfo)
        );
        assert_eq!(
            parse_message(
                r#"{"DDBStreamBatchInfo": {"shardId": "s", "startSequenceNumber": "1", "streamArn": "a"}}"#
            ),
            Err(MessageError::MissingField("endSequenceNumber"))
        );
        assert_eq!(
            parse_message(
                r#"{"DDBStreamBatchInfo": {"shardId": "", "startSequenceNumber": "1", "endSequenceNumber": "2", "streamArn": "a"}}"#
            ),
            Err(MessageError::MissingField("shardId"))
        );
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("000010", "10"), Ordering::Equal);
        assert_eq!(
            compare_sequence_numbers("800000000003126276362", "800000000003126276361"),
            Ordering::Greater
        );
        assert_eq!(compare_sequence_numbers("0", "000"), Ordering::Equal);
    }

    #[test]
    fn a_user_is_named_by_its_keys_whatever_their_order() {
        let a = json!({"dynamodb": {"Keys": {"name": {"S": "x"}, "tenant": {"S": "t"}}}});
        let b = json!({"dynamodb": {"Keys": {"tenant": {"S": "t"}, "name": {"S": "x"}}}});
        assert_eq!(user_identity(&a), user_identity(&b));
        assert_ne!(
            user_identity(&a),
            user_identity(&json!({"dynamodb": {"Keys": {"name": {"S": "y"}}}}))
        );
        assert_eq!(user_identity(&json!({"dynamodb": {}})), None);
    }

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

    #[test]
    fn the_summary_counts_what_happened() {
        let message = |deleted, outcome, applied| MessageReport {
            message_id: "m".into(),
            batch: None,
            records: 3,
            applied,
            superseded: 0,
            outcome,
            deleted,
        };
        let report = ReplayReport {
            stack_name: "s".into(),
            queue_url: "q".into(),
            bucket: "b".into(),
            dry_run: false,
            messages: vec![
                message(true, Outcome::Replayed, 3),
                message(false, Outcome::Expired { missing: 1 }, 2),
            ],
        };
        assert_eq!(report.deleted(), 1);
        assert_eq!(report.kept(), 1);
        assert_eq!(report.kept_with_problems(), 1);
        assert_eq!(
            report.summary(),
            "2 message(s): 1 replayed and deleted, 1 kept; 5 record(s) applied to b"
        );
        assert!(Outcome::Expired { missing: 1 }
            .label()
            .contains("--discard-expired"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["messages"][1]["outcome"],
            json!({"kind": "expired", "missing": 1})
        );
    }
}
