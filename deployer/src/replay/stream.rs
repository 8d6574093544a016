//! Reading the discarded records back from the stream: each message's shard from the batch's
//! start on, and the users of the shards descending from it (their later records supersede the
//! batch's).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::messages::{BatchInfo, Parsed};
use super::ReplayError;
use crate::streams::reader::{ReadError, ReadPosition, ShardReader, MAX_RECORDS_PER_READ};
use crate::streams::sequence::compare_sequence_numbers;
use crate::streams::shards::{describe_shards, ShardListing};

/// Reads of an open shard that come back empty in a row, past every batch read from it, before
/// its tip counts as reached.
const EMPTY_READS_AT_TIP: u32 = 3;
/// The same before the last batch's end was seen: DynamoDB Streams may answer empty several
/// times on the way through a shard, and stopping short would count the batch's records as
/// gone. The bound only matters for a shard whose every record was trimmed.
const EMPTY_READS_BEFORE_THE_END: u32 = 100;

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

/// One shard's records from a sequence number on, and the users of the shards after it.
pub(super) struct ShardRead {
    /// The shard's records from the earliest start on; an error when the shard cannot be read
    /// any more (expired, or the stream is gone).
    pub(super) records: Result<Vec<ShardRecord>, String>,
    /// Users with records in shards descending from this one.
    pub(super) later_users: HashSet<String>,
}

/// The shards read for a run, by stream ARN and shard id.
pub(super) type ShardReads = HashMap<(String, String), ShardRead>;

/// Reads each shard of the `parsed` messages once, from the earliest start any of its messages
/// needs to past the latest end; each stream's shards are listed once.
pub(super) async fn read_shards(
    streams: &aws_sdk_dynamodbstreams::Client,
    parsed: &[Parsed],
    progress: &mut dyn FnMut(&str),
) -> Result<ShardReads, ReplayError> {
    let mut listings: HashMap<String, Vec<ShardListing>> = HashMap::new();
    let mut shards: ShardReads = HashMap::new();
    for (_, info) in parsed {
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
                let listing = match describe_shards(streams, &info.stream_arn).await {
                    Ok(listing) => listing,
                    // No stream, no later records (and no records to replay either).
                    Err(ReadError::StreamGone { .. }) => Vec::new(),
                    Err(err) => return Err(ReplayError::Stream(err.to_string())),
                };
                listings.entry(info.stream_arn.clone()).or_insert(listing)
            }
        };
        let read = read_lineage(streams, listing, info, latest_end).await?;
        if let Err(reason) = &read.records {
            progress(&format!("shard {}: {reason}", info.shard_id));
        }
        shards.insert(key, read);
    }
    Ok(shards)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
