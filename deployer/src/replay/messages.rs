//! The failure queue's messages: receiving them all, reading each one's
//! `DDBStreamBatchInfo`, putting them in stream order, and releasing or deleting them once
//! replayed.

use std::collections::HashSet;

pub use crate::streams::failure_record::{parse_message, BatchInfo, MessageError};

use super::ReplayError;
use crate::stack::aws_error;
use crate::streams::sequence::compare_sequence_numbers;

/// How long received messages stay hidden from other readers while a replay works on them.
const VISIBILITY_TIMEOUT_S: i32 = 900;

/// A received message.
pub(super) struct Received {
    pub(super) id: String,
    pub(super) receipt: String,
    pub(super) body: String,
}

/// A received message with what its body says.
pub(super) type Parsed = (Received, Result<BatchInfo, MessageError>);

/// Every message of the queue, each hidden from other readers while the replay runs.
pub(super) async fn receive_all(
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

/// Parses every message, then puts them in the order they are replayed: stream order (per
/// stream and shard, by first sequence number), so the report reads in the stream's order;
/// unreadable messages last.
pub(super) fn in_stream_order(received: Vec<Received>) -> Vec<Parsed> {
    let mut parsed: Vec<Parsed> = received
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
    parsed
}

/// Makes a message visible again at once; a failure only delays it until its timeout.
pub(super) async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, message: &Received) {
    let _ = sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(&message.receipt)
        .visibility_timeout(0)
        .send()
        .await;
}

/// Keeps a message hidden for `duration` from now, for work that outlasts the receive's
/// timeout; a failure only leaves it at that timeout.
pub(super) async fn hide(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &Received,
    duration: std::time::Duration,
) {
    let _ = sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(&message.receipt)
        .visibility_timeout(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX))
        .send()
        .await;
}

/// Deletes a replayed message; a failure stops the run, since the message would otherwise be
/// replayed again.
pub(super) async fn delete(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &Received,
) -> Result<(), ReplayError> {
    sqs.delete_message()
        .queue_url(queue_url)
        .receipt_handle(&message.receipt)
        .send()
        .await
        .map_err(|err| {
            aws_error(
                format!("delete message {} from {queue_url}", message.id),
                err,
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::failure_record::{discard_message, DiscardCondition, DiscardedBatch};
    use crate::streams::record::StreamEventRecord;
    use serde_json::json;
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
}
