//! DynamoDB stream records and events in the shape Lambda delivers them.

use serde_json::{json, Map, Value};

/// The sequence number [`stream_record`] gives record `sequence`: 21 digits, as DynamoDB's
/// are, so that their order as text is their order as numbers.
pub fn sequence_number(sequence: u64) -> String {
    format!("{sequence:021}")
}

/// A stream record for user `name` (key attribute `name`) with sequence number
/// [`sequence_number`]`(sequence)`. `attributes` are the new image's other attributes, in
/// DynamoDB JSON (`{"plan": {"S": "pro"}}`); `None` gives a record without a new image, as a
/// REMOVE has.
pub fn stream_record(event: &str, name: &str, sequence: u64, attributes: Option<Value>) -> Value {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": 1764000000,
        "Keys": { "name": { "S": name } },
        "SequenceNumber": sequence_number(sequence),
        "SizeBytes": 64,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(attributes) = attributes {
        let mut image = Map::new();
        image.insert("name".to_owned(), json!({ "S": name }));
        if let Value::Object(attributes) = attributes {
            image.extend(attributes);
        }
        dynamodb["NewImage"] = Value::Object(image);
    }
    json!({
        "eventID": format!("event-{sequence}"),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/2026-11-25T00:00:00.000",
        "dynamodb": dynamodb
    })
}

/// A DynamoDB Streams event around `records`.
pub fn stream_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_the_handler_reads_them() {
        let event = stream_event(vec![
            stream_record("INSERT", "alice", 2, Some(json!({"plan": {"S": "pro"}}))),
            stream_record("REMOVE", "bob", 10, None),
        ]);
        let records = crate::stream_records(event.clone()).expect("a streams event");
        assert_eq!(records.len(), 2);
        assert_eq!(
            event["Records"][0]["dynamodb"]["NewImage"],
            json!({"name": {"S": "alice"}, "plan": {"S": "pro"}})
        );
        assert!(event["Records"][1]["dynamodb"].get("NewImage").is_none());
        assert!(sequence_number(2) < sequence_number(10));
        assert_eq!(sequence_number(10).len(), 21);
    }
}
