//! Stream records in the shape Lambda delivers them, for tests that call the handler directly.

use serde_json::{json, Value};

/// A DynamoDB stream record for user `name` with sequence number `sequence`; `attributes` are
/// extra attributes of the new image (DynamoDB JSON), `None` for a record without one (REMOVE).
pub fn stream_record(event: &str, name: &str, sequence: u64, attributes: Option<Value>) -> Value {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": 1764000000,
        "Keys": { "name": { "S": name } },
        "SequenceNumber": format!("{sequence:021}"),
        "SizeBytes": 64,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(Value::Object(extra)) = attributes {
        let mut image = serde_json::Map::new();
        image.insert("name".to_owned(), json!({ "S": name }));
        image.extend(extra);
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

/// A whole event around `records`.
pub fn stream_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}
