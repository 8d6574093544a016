//! The record an event source mapping sends to its on-failure destination when it discards a
//! batch: the batch's coordinates in the stream, not its records, so that an operator can read
//! the records back while the stream retains them. Written by the local mapping, read by
//! `replay-failures`: both sides of the format live here.
//!
//! The shape is the example of Lambda's documentation, "Example Amazon SQS and Amazon SNS
//! destination invocation record" for a DynamoDB stream:
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>. Its
//! `requestContext.requestId` is the failed invocation's request id, and its times are written
//! as that example's `timestamp` is, with milliseconds (`2019-11-14T00:13:49.717Z`); this writer
//! gives `timestamp` and both `approximateArrival…` fields exactly three fractional digits,
//! always (`…:49.000Z` for a whole second). Readers take any RFC 3339 UTC time, with or without
//! fractional digits: the documented example's arrival times have none (`2019-11-14T00:13:19Z`).

use std::time::SystemTime;

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use serde::Serialize;
use serde_json::{json, Value};

use super::record::StreamEventRecord;

/// Why a batch was discarded: Lambda's `requestContext.condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardCondition {
    /// The function failed on the batch more often than `MaximumRetryAttempts` allows.
    RetryAttemptsExhausted,
    /// The records were older than `MaximumRecordAgeInSeconds` when their turn came.
    RecordAgeExceeded,
}

impl DiscardCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Self::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// What the last invocation of a discarded batch returned, for `responseContext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastInvocation {
    pub request_id: String,
    /// `Unhandled` for an error or timeout; `None` when the function answered (a partial
    /// batch failure).
    pub function_error: Option<&'static str>,
}

/// Everything a discard message says about one discarded run of records.
#[derive(Clone, Debug)]
pub struct DiscardedBatch<'a> {
    pub condition: DiscardCondition,
    pub function_arn: &'a str,
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
    pub records: &'a [StreamEventRecord],
    /// The last invocation's own request id (the one its runtime was given and its log lines
    /// carry), or a fresh one when the records were never invoked.
    pub request_id: &'a str,
    /// Invocations of these records so far.
    pub invoke_count: u32,
    pub last_invocation: Option<&'a LastInvocation>,
}

/// `at` in RFC 3339 UTC with exactly three fractional digits, as Lambda writes an on-failure
/// record's times: `2019-11-14T00:13:49.717Z`, `2019-11-14T00:13:49.000Z`. Digits beyond the
/// millisecond are cut off, not rounded. `None` for a time RFC 3339 cannot write (a year
/// beyond 9999).
pub fn format_timestamp(at: DateTime) -> Option<String> {
    let whole_seconds = DateTime::from_secs(at.secs()).fmt(Format::DateTime).ok()?;
    let date_and_time = whole_seconds.strip_suffix('Z')?;
    Some(format!(
        "{date_and_time}.{:03}Z",
        at.subsec_nanos() / 1_000_000
    ))
}

/// Epoch seconds, such as a stream record's `ApproximateCreationDateTime`, as a time. A float
/// holds such a time to well under a microsecond but not exactly (`.123` may be
/// `.12299999…`), so it is taken to the nearest microsecond first: the millisecond it shows is
/// then the one that was meant.
fn from_epoch_seconds(epoch_s: f64) -> Option<DateTime> {
    let micros = (epoch_s * 1e6).round();
    // Beyond ±2^53 µs (about 285 years from 1970) a float no longer holds whole microseconds.
    if !micros.is_finite() || micros.abs() > 9_007_199_254_740_992.0 {
        return None;
    }
    let micros = micros as i64;
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1_000).ok()?;
    Some(DateTime::from_secs_and_nanos(
        micros.div_euclid(1_000_000),
        nanos,
    ))
}

/// The message Lambda sends to an SQS on-failure destination for a stream batch.
pub fn discard_message(batch: &DiscardedBatch<'_>, now: SystemTime) -> Value {
    let timestamp = |epoch_s: Option<f64>| {
        epoch_s
            .and_then(from_epoch_seconds)
            .and_then(format_timestamp)
    };
    let first = batch.records.first();
    let last = batch.records.last();
    let mut response_context = json!({
        "statusCode": if batch.last_invocation.is_some() { 200 } else { 0 },
        "executedVersion": if batch.last_invocation.is_some() { "$LATEST" } else { "" },
    });
    if let Some(error) = batch.last_invocation.and_then(|i| i.function_error) {
        response_context["functionError"] = json!(error);
    }
    json!({
        "requestContext": {
            "requestId": batch.request_id,
            "functionArn": batch.function_arn,
            "condition": batch.condition.as_str(),
            "approximateInvokeCount": batch.invoke_count,
        },
        "responseContext": response_context,
        "version": "1.0",
        "timestamp": format_timestamp(DateTime::from(now)).unwrap_or_default(),
        "DDBStreamBatchInfo": {
            "shardId": batch.shard_id,
            "startSequenceNumber": first.map(|r| r.sequence_number.as_str()),
            "endSequenceNumber": last.map(|r| r.sequence_number.as_str()),
            "approximateArrivalOfFirstRecord": timestamp(first.and_then(|r| r.created_at_epoch_s)),
            "approximateArrivalOfLastRecord": timestamp(last.and_then(|r| r.created_at_epoch_s)),
            "batchSize": batch.records.len(),
            "streamArn": batch.stream_arn,
        }
    })
}

/// The reader's side: a failure-queue message's `DDBStreamBatchInfo`, as `replay-failures`
/// reads it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(seq: &str, at: f64) -> StreamEventRecord {
        StreamEventRecord {
            event: json!({}),
            sequence_number: seq.into(),
            created_at_epoch_s: Some(at),
            payload_bytes: 2,
        }
    }

    #[test]
    fn has_lambdas_shape_for_exhausted_retries() {
        let records = [
            record("100", 1_764_633_600.0),
            record("105", 1_764_633_605.0),
        ];
        let last = LastInvocation {
            request_id: "req-1".into(),
            function_error: Some("Unhandled"),
        };
        let message = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RetryAttemptsExhausted,
                function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f",
                stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s",
                shard_id: "shardId-1",
                records: &records,
                invoke_count: 3,
                request_id: &last.request_id,
                last_invocation: Some(&last),
            },
            UNIX_EPOCH + Duration::from_millis(1_764_633_610_021),
        );
        assert_eq!(
            message,
            json!({
                "requestContext": {
                    "requestId": "req-1",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3
                },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled"
                },
                "version": "1.0",
                "timestamp": "2025-12-02T00:00:10.021Z",
                "DDBStreamBatchInfo": {
                    "shardId": "shardId-1",
                    "startSequenceNumber": "100",
                    "endSequenceNumber": "105",
                    "approximateArrivalOfFirstRecord": "2025-12-02T00:00:00.000Z",
                    "approximateArrivalOfLastRecord": "2025-12-02T00:00:05.000Z",
                    "batchSize": 2,
                    "streamArn": "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s"
                }
            })
        );
    }

    #[test]
    fn records_too_old_were_never_invoked() {
        let records = [record("7", 1.0)];
        let message = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RecordAgeExceeded,
                function_arn: "f",
                stream_arn: "s",
                shard_id: "shard",
                records: &records,
                invoke_count: 0,
                request_id: "req-0",
                last_invocation: None,
            },
            SystemTime::now(),
        );
        assert_eq!(message["requestContext"]["condition"], "RecordAgeExceeded");
        assert_eq!(message["requestContext"]["approximateInvokeCount"], 0);
        assert_eq!(message["responseContext"]["statusCode"], 0);
        assert!(message["responseContext"].get("functionError").is_none());
        assert_eq!(message["DDBStreamBatchInfo"]["batchSize"], 1);
    }

    #[test]
    fn times_have_exactly_three_fractional_digits() {
        let at =
            |secs: i64, nanos: u32| format_timestamp(DateTime::from_secs_and_nanos(secs, nanos));
        // 2019-11-14T00:13:49Z, the documented example's timestamp without its milliseconds.
        let example = 1_573_690_429;
        assert_eq!(
            at(example, 717_000_000).as_deref(),
            Some("2019-11-14T00:13:49.717Z")
        );
        assert_eq!(at(example, 0).as_deref(), Some("2019-11-14T00:13:49.000Z"));
        assert_eq!(
            at(example, 5_000_000).as_deref(),
            Some("2019-11-14T00:13:49.005Z")
        );
        // Below the millisecond: cut off, not rounded.
        assert_eq!(
            at(example, 717_999_999).as_deref(),
            Some("2019-11-14T00:13:49.717Z")
        );
        assert_eq!(
            at(example, 999_999).as_deref(),
            Some("2019-11-14T00:13:49.000Z")
        );
        assert_eq!(at(0, 0).as_deref(), Some("1970-01-01T00:00:00.000Z"));

        // From epoch seconds in a float, as stream records carry them.
        let from_float = |s: f64| from_epoch_seconds(s).and_then(format_timestamp);
        assert_eq!(
            from_float(1_573_690_429.0).as_deref(),
            Some("2019-11-14T00:13:49.000Z")
        );
        // 1_573_690_429.123 is 1_573_690_429.12299990654… as a float: still .123.
        assert_eq!(
            from_float(1_573_690_429.123).as_deref(),
            Some("2019-11-14T00:13:49.123Z")
        );
        assert_eq!(
            from_float(1_573_690_429.123_9).as_deref(),
            Some("2019-11-14T00:13:49.123Z")
        );
        assert_eq!(from_float(f64::NAN), None);
        assert_eq!(from_float(f64::INFINITY), None);
    }

    #[test]
    fn every_time_of_the_message_has_milliseconds() {
        let records = [record("1", 1_764_633_600.0), record("2", 1_764_633_605.25)];
        let message = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RetryAttemptsExhausted,
                function_arn: "f",
                stream_arn: "s",
                shard_id: "shard",
                records: &records,
                invoke_count: 1,
                request_id: "req",
                last_invocation: None,
            },
            // Whole seconds, then a time with nanoseconds.
            UNIX_EPOCH + Duration::from_secs(1_764_633_610),
        );
        assert_eq!(message["timestamp"], "2025-12-02T00:00:10.000Z");
        let info = &message["DDBStreamBatchInfo"];
        assert_eq!(
            info["approximateArrivalOfFirstRecord"],
            "2025-12-02T00:00:00.000Z"
        );
        assert_eq!(
            info["approximateArrivalOfLastRecord"],
            "2025-12-02T00:00:05.250Z"
        );

        let message = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RetryAttemptsExhausted,
                function_arn: "f",
                stream_arn: "s",
                shard_id: "shard",
                records: &records,
                invoke_count: 1,
                request_id: "req",
                last_invocation: None,
            },
            UNIX_EPOCH + Duration::from_nanos(1_764_633_610_021_999_999),
        );
        assert_eq!(message["timestamp"], "2025-12-02T00:00:10.021Z");
    }

    #[test]
    fn the_replay_reader_takes_times_with_and_without_milliseconds() {
        let records = [record("100", 1_764_633_600.0)];
        let ours = discard_message(
            &DiscardedBatch {
                condition: DiscardCondition::RetryAttemptsExhausted,
                function_arn: "f",
                stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s",
                shard_id: "shardId-1",
                records: &records,
                invoke_count: 1,
                request_id: "req",
                last_invocation: None,
            },
            UNIX_EPOCH + Duration::from_secs(1_764_633_610),
        );
        // Lambda's documented example: a `timestamp` with milliseconds, arrival times without.
        let documented = json!({
            "requestContext": {
                "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 1
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled"
            },
            "version": "1.0",
            "timestamp": "2019-11-14T00:13:49.717Z",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-00000001573689847184-864758bb",
                "startSequenceNumber": "800000000003126276362",
                "endSequenceNumber": "800000000003126276362",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
                "batchSize": 1,
                "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"
            }
        });
        for message in [&ours, &documented] {
            let info = crate::replay::parse_message(&message.to_string())
                .unwrap_or_else(|err| panic!("{err}: {message}"));
            assert_eq!(info.batch_size, Some(1));
            for pointer in [
                "/timestamp",
                "/DDBStreamBatchInfo/approximateArrivalOfFirstRecord",
                "/DDBStreamBatchInfo/approximateArrivalOfLastRecord",
            ] {
                let text = message.pointer(pointer).and_then(Value::as_str).unwrap();
                assert!(
                    DateTime::from_str(text, Format::DateTime).is_ok(),
                    "{pointer}: {text}"
                );
            }
        }
    }
}
