//! DynamoDB Streams records, as `GetRecords` returns them, turned into the event records Lambda
//! hands a function: the same fields, the same DynamoDB JSON for keys and images, plus the
//! `eventSourceARN` that Lambda adds.

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use aws_smithy_types::DateTime;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// One stream record, converted once when it is read and kept until it is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEventRecord {
    /// The record as the function receives it.
    pub event: Value,
    pub sequence_number: String,
    /// When DynamoDB wrote the record (`ApproximateCreationDateTime`), in epoch seconds.
    pub created_at_epoch_s: Option<f64>,
    /// The record's length in the invocation payload, for Lambda's 6 MB payload limit.
    pub payload_bytes: usize,
}

/// A record `GetRecords` returned that cannot be delivered: it has no sequence number, so it
/// can neither be checkpointed nor retried from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stream record {event_id:?} has no sequence number")]
pub struct MissingSequenceNumber {
    pub event_id: String,
}

impl StreamEventRecord {
    /// Converts a record read from the stream `stream_arn`.
    pub fn from_stream(record: &Record, stream_arn: &str) -> Result<Self, MissingSequenceNumber> {
        let change = record.dynamodb();
        let Some(sequence_number) = change.and_then(|c| c.sequence_number()) else {
            return Err(MissingSequenceNumber {
                event_id: record.event_id().unwrap_or_default().to_owned(),
            });
        };
        let created_at = change.and_then(|c| c.approximate_creation_date_time());

        let mut dynamodb = Map::new();
        if let Some(at) = created_at {
            dynamodb.insert("ApproximateCreationDateTime".into(), epoch_seconds_json(at));
        }
        if let Some(change) = change {
            for (field, image) in [
                ("Keys", change.keys()),
                ("NewImage", change.new_image()),
                ("OldImage", change.old_image()),
            ] {
                if let Some(image) = image {
                    dynamodb.insert(field.into(), item_json(image));
                }
            }
            if let Some(size) = change.size_bytes() {
                dynamodb.insert("SizeBytes".into(), json!(size));
            }
            if let Some(view) = change.stream_view_type() {
                dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
            }
        }
        dynamodb.insert("SequenceNumber".into(), json!(sequence_number));

        let mut event = Map::new();
        let mut put = |name: &str, value: Option<&str>| {
            if let Some(value) = value {
                event.insert(name.into(), json!(value));
            }
        };
        put("eventID", record.event_id());
        put("eventName", record.event_name().map(|n| n.as_str()));
        put("eventVersion", record.event_version());
        put("eventSource", record.event_source());
        put("awsRegion", record.aws_region());
        event.insert("dynamodb".into(), Value::Object(dynamodb));
        event.insert("eventSourceARN".into(), json!(stream_arn));
        if let Some(identity) = record.user_identity() {
            // Present on TTL deletions: {"type": "Service", "principalId": "dynamodb.amazonaws.com"}.
            event.insert(
                "userIdentity".into(),
                json!({
                    "type": identity.r#type().unwrap_or_default(),
                    "principalId": identity.principal_id().unwrap_or_default(),
                }),
            );
        }
        let event = Value::Object(event);
        let payload_bytes = serde_json::to_vec(&event).map_or(0, |bytes| bytes.len());
        Ok(Self {
            event,
            sequence_number: sequence_number.to_owned(),
            created_at_epoch_s: created_at.map(DateTime::as_secs_f64),
            payload_bytes,
        })
    }
}

/// The event Lambda sends for `records`: `{"Records": [...]}`.
pub fn event_payload(records: &[StreamEventRecord]) -> Value {
    json!({ "Records": records.iter().map(|r| r.event.clone()).collect::<Vec<_>>() })
}

/// Lambda writes whole seconds as an integer and keeps a fraction when there is one.
fn epoch_seconds_json(at: &DateTime) -> Value {
    if at.subsec_nanos() == 0 {
        json!(at.secs())
    } else {
        json!(at.as_secs_f64())
    }
}

/// An item in DynamoDB JSON (`{"name": {"S": "alice"}}`), through serde_dynamo's conversion of
/// the SDK's attribute values.
fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    let mut object = Map::new();
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    for name in names {
        let value = serde_dynamo::AttributeValue::from(item[name].clone());
        object.insert(
            name.clone(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::Blob;
    use aws_sdk_dynamodbstreams::types::{Identity, OperationType, StreamRecord, StreamViewType};

    const STREAM: &str =
        "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/2026-12-02T00:00:00.000";

    fn record(change: StreamRecord) -> Record {
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(change)
            .build()
    }

    #[test]
    fn converts_a_record_to_lambdas_shape() {
        let change = StreamRecord::builder()
            .approximate_creation_date_time(DateTime::from_secs(1_764_633_600))
            .keys("name", AttributeValue::S("alice".into()))
            .new_image("name", AttributeValue::S("alice".into()))
            .new_image("seats", AttributeValue::N("3".into()))
            .new_image("avatar", AttributeValue::B(Blob::new(b"hi".to_vec())))
            .new_image("tags", AttributeValue::Ss(vec!["a".into(), "b".into()]))
            .new_image(
                "profile",
                AttributeValue::M(HashMap::from([(
                    "admin".to_owned(),
                    AttributeValue::Bool(true),
                )])),
            )
            .new_image(
                "history",
                AttributeValue::L(vec![AttributeValue::Null(true)]),
            )
            .sequence_number("000000000000000000001")
            .size_bytes(42)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build();
        let converted = StreamEventRecord::from_stream(&record(change), STREAM).unwrap();
        assert_eq!(
            converted.event,
            json!({
                "eventID": "e1",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": STREAM,
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_764_633_600,
                    "Keys": {"name": {"S": "alice"}},
                    "NewImage": {
                        "avatar": {"B": "aGk="},
                        "history": {"L": [{"NULL": true}]},
                        "name": {"S": "alice"},
                        "profile": {"M": {"admin": {"BOOL": true}}},
                        "seats": {"N": "3"},
                        "tags": {"SS": ["a", "b"]}
                    },
                    "SequenceNumber": "000000000000000000001",
                    "SizeBytes": 42,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                }
            })
        );
        assert_eq!(converted.sequence_number, "000000000000000000001");
        assert_eq!(converted.created_at_epoch_s, Some(1_764_633_600.0));
        assert_eq!(
            converted.payload_bytes,
            serde_json::to_vec(&converted.event).unwrap().len()
        );
    }

    #[test]
    fn a_removal_has_no_new_image_and_a_ttl_removal_names_the_service() {
        let change = StreamRecord::builder()
            .keys("name", AttributeValue::S("bob".into()))
            .old_image("name", AttributeValue::S("bob".into()))
            .sequence_number("2")
            .size_bytes(10)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build();
        let record = Record::builder()
            .event_id("e2")
            .event_name(OperationType::Remove)
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .dynamodb(change)
            .build();
        let converted = StreamEventRecord::from_stream(&record, STREAM).unwrap();
        assert!(converted.event["dynamodb"].get("NewImage").is_none());
        assert_eq!(converted.event["dynamodb"]["OldImage"]["name"]["S"], "bob");
        assert_eq!(
            converted.event["userIdentity"],
            json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"})
        );
        assert_eq!(converted.created_at_epoch_s, None);
    }

    #[test]
    fn a_record_without_a_sequence_number_is_refused() {
        let change = StreamRecord::builder()
            .keys("name", AttributeValue::S("x".into()))
            .build();
        assert_eq!(
            StreamEventRecord::from_stream(&record(change), STREAM),
            Err(MissingSequenceNumber {
                event_id: "e1".into()
            })
        );
    }

    #[test]
    fn the_payload_wraps_records_in_order() {
        let records: Vec<_> = ["1", "2"]
            .into_iter()
            .map(|seq| {
                let change = StreamRecord::builder().sequence_number(seq).build();
                StreamEventRecord::from_stream(&record(change), STREAM).unwrap()
            })
            .collect();
        let payload = event_payload(&records);
        let sequences: Vec<_> = payload["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap())
            .collect();
        assert_eq!(sequences, ["1", "2"]);
    }
}
