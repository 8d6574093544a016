//! Test helpers: builders for stream records and configurations.

#![allow(dead_code)]

use serde_json::{json, Value};
pub use usersync_function::MemoryStore;
use usersync_function::{Config, DeleteScope};

pub fn config(scope: DeleteScope) -> Config {
    let mut config =
        Config::from_lookup(|name| (name == "BUCKET_NAME").then(|| "users-data".to_owned()))
            .unwrap();
    config.delete_scope = scope;
    config
}

/// A stream record as Lambda delivers it, for user `name`; `image` is the new image's extra attributes.
pub fn record(event: &str, name: &str, sequence: u64, image: Option<Value>) -> Value {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": 1764000000,
        "Keys": { "name": { "S": name } },
        "SequenceNumber": format!("{sequence:030}"),
        "SizeBytes": 64,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(extra) = image {
        let mut new_image = json!({ "name": { "S": name } });
        for (k, v) in extra.as_object().unwrap() {
            new_image[k] = v.clone();
        }
        dynamodb["NewImage"] = new_image;
    }
    json!({
        "eventID": format!("event-{sequence}"),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-11-25T00:00:00.000",
        "dynamodb": dynamodb
    })
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
