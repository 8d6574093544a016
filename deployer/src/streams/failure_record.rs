//! The record an event source mapping sends to its on-failure destination when it discards a
//! batch: the batch's coordinates in the stream, not its records, so that an operator can read
//! the records back while the stream retains them. Written by the local mapping, read by
//! `replay-failures`: both sides of the format live here.

use std::time::SystemTime;

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
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
    /// The last invocation's request id, or a fresh one when the records were never invoked.
    pub request_id: &'a str,
    /// Invocations of these records so far.
    pub invoke_count: u32,
    pub last_invocation: Option<&'a LastInvocation>,
}

/// The message Lambda sends to an SQS on-failure destination for a stream batch.
pub fn discard_message(batch: &DiscardedBatch<'_>, now: SystemTime) -> Value {
    let timestamp = |epoch_s: Option<f64>| {
        epoch_s
            .map(DateTime::from_secs_f64)
            .and_then(|at| at.fmt(Format::DateTime).ok())
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
        "timestamp": DateTime::from(now).fmt(Format::DateTime).unwrap_or_default(),
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
                    "approximateArrivalOfFirstRecord": "2025-12-02T00:00:00Z",
                    "approximateArrivalOfLastRecord": "2025-12-02T00:00:05Z",
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
}
