//! DynamoDB stream records and events in the shape Lambda delivers them.
//!
//! [`stream_record`] is the common case (a user keyed by `name`, a new image or none);
//! [`RecordBuilder`] builds every other shape: another key attribute, a key that is missing or
//! not a string, several key attributes, an old image, no image at all (keys only), no sequence
//! number, no event source.

use serde_json::{json, Map, Value};

/// The sequence number [`stream_record`] gives record `sequence`: 21 digits, as DynamoDB's
/// are, so that their order as text is their order as numbers.
pub fn sequence_number(sequence: u64) -> String {
    format!("{sequence:021}")
}

/// The `eventSourceARN` of the records built here.
pub const EVENT_SOURCE_ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/2026-11-25T00:00:00.000";

/// The `ApproximateCreationDateTime` of the records built here, in seconds since the epoch.
pub const APPROXIMATE_CREATION_DATE_TIME: i64 = 1764000000;

/// A string attribute in DynamoDB JSON: `{"S": text}`.
pub fn string_value(text: &str) -> Value {
    json!({ "S": text })
}

/// A number attribute in DynamoDB JSON: `{"N": "<n>"}`.
pub fn number_value(n: impl std::fmt::Display) -> Value {
    json!({ "N": n.to_string() })
}

/// A stream record for user `name` (key attribute `name`) with sequence number
/// [`sequence_number`]`(sequence)`. `attributes` are the new image's other attributes, in
/// DynamoDB JSON (`{"plan": {"S": "pro"}}`); `None` gives a record without a new image, as a
/// REMOVE has.
pub fn stream_record(event: &str, name: &str, sequence: u64, attributes: Option<Value>) -> Value {
    let record = RecordBuilder::new(event, sequence).key("name", string_value(name));
    match attributes {
        Some(attributes) => record.new_image_with_keys(attributes),
        None => record,
    }
    .build()
}

/// A DynamoDB Streams event around `records`.
pub fn stream_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

/// One stream record, field by field.
///
/// [`RecordBuilder::new`] starts a record as [`stream_record`] makes them: event ID
/// `event-<sequence>`, sequence number [`sequence_number`]`(sequence)`, the
/// [`EVENT_SOURCE_ARN`] and [`APPROXIMATE_CREATION_DATE_TIME`], no keys and no images (its
/// `Keys` object is empty until [`key`](Self::key) adds one). Every method replaces what it
/// sets; the images are exactly what is given, so a record may carry a name only in an image,
/// as the function also accepts.
///
/// ```
/// use serde_json::json;
/// use usersync_function::testing::{number_value, string_value, RecordBuilder};
///
/// // A REMOVE keyed by `id`, carrying only its old image and no sequence number.
/// let record = RecordBuilder::new("REMOVE", 7)
///     .old_image(json!({ "id": string_value("alice"), "plan": string_value("pro") }))
///     .without_sequence_number()
///     .build();
/// assert!(record["dynamodb"].get("NewImage").is_none());
/// assert!(record["dynamodb"].get("SequenceNumber").is_none());
///
/// // A key of the wrong type.
/// let record = RecordBuilder::new("INSERT", 8).key("name", number_value(7)).build();
/// assert_eq!(record["dynamodb"]["Keys"], json!({ "name": { "N": "7" } }));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RecordBuilder {
    event_name: String,
    event_id: String,
    keys: Map<String, Value>,
    sequence_number: Option<String>,
    new_image: Option<Value>,
    old_image: Option<Value>,
    event_source_arn: Option<String>,
    approximate_creation_date_time: Option<i64>,
}

impl RecordBuilder {
    /// A record of event `event_name` (`INSERT`, `MODIFY`, `REMOVE` or anything else) with
    /// event ID `event-<sequence>` and sequence number [`sequence_number`]`(sequence)`.
    pub fn new(event_name: &str, sequence: u64) -> Self {
        Self {
            event_name: event_name.to_owned(),
            event_id: format!("event-{sequence}"),
            keys: Map::new(),
            sequence_number: Some(sequence_number(sequence)),
            new_image: None,
            old_image: None,
            event_source_arn: Some(EVENT_SOURCE_ARN.to_owned()),
            approximate_creation_date_time: Some(APPROXIMATE_CREATION_DATE_TIME),
        }
    }

    /// Sets the `eventID`.
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = event_id.into();
        self
    }

    /// Sets `dynamodb.SequenceNumber` to any text.
    pub fn sequence_number(mut self, sequence_number: impl Into<String>) -> Self {
        self.sequence_number = Some(sequence_number.into());
        self
    }

    /// Leaves `dynamodb.SequenceNumber` out.
    pub fn without_sequence_number(mut self) -> Self {
        self.sequence_number = None;
        self
    }

    /// Adds (or replaces) key attribute `attribute` in `dynamodb.Keys`, with a value in
    /// DynamoDB JSON: [`string_value`], [`number_value`] or any other.
    pub fn key(mut self, attribute: &str, value: Value) -> Self {
        self.keys.insert(attribute.to_owned(), value);
        self
    }

    /// Sets `dynamodb.NewImage` to exactly `image` (an item in DynamoDB JSON).
    pub fn new_image(mut self, image: Value) -> Self {
        self.new_image = Some(image);
        self
    }

    /// Sets `dynamodb.NewImage` to the record's keys and then `attributes` (an object in
    /// DynamoDB JSON; its attributes win over keys of the same name), as a table item is its
    /// keys plus its other attributes.
    pub fn new_image_with_keys(self, attributes: Value) -> Self {
        let image = self.keys_and(attributes);
        self.new_image(image)
    }

    /// Sets `dynamodb.OldImage` to exactly `image` (an item in DynamoDB JSON).
    pub fn old_image(mut self, image: Value) -> Self {
        self.old_image = Some(image);
        self
    }

    /// Sets `dynamodb.OldImage` to the record's keys and then `attributes`; see
    /// [`new_image_with_keys`](Self::new_image_with_keys).
    pub fn old_image_with_keys(self, attributes: Value) -> Self {
        let image = self.keys_and(attributes);
        self.old_image(image)
    }

    /// Leaves `eventSourceARN` out.
    pub fn without_event_source_arn(mut self) -> Self {
        self.event_source_arn = None;
        self
    }

    /// Sets `dynamodb.ApproximateCreationDateTime`, in seconds since the epoch.
    pub fn creation_time(mut self, epoch_seconds: i64) -> Self {
        self.approximate_creation_date_time = Some(epoch_seconds);
        self
    }

    /// Leaves `dynamodb.ApproximateCreationDateTime` out.
    pub fn without_creation_time(mut self) -> Self {
        self.approximate_creation_date_time = None;
        self
    }

    /// The record as Lambda delivers it.
    pub fn build(self) -> Value {
        let mut dynamodb = Map::new();
        if let Some(time) = self.approximate_creation_date_time {
            dynamodb.insert("ApproximateCreationDateTime".to_owned(), json!(time));
        }
        dynamodb.insert("Keys".to_owned(), Value::Object(self.keys));
        if let Some(sequence_number) = self.sequence_number {
            dynamodb.insert("SequenceNumber".to_owned(), json!(sequence_number));
        }
        dynamodb.insert("SizeBytes".to_owned(), json!(64));
        dynamodb.insert("StreamViewType".to_owned(), json!("NEW_AND_OLD_IMAGES"));
        if let Some(image) = self.new_image {
            dynamodb.insert("NewImage".to_owned(), image);
        }
        if let Some(image) = self.old_image {
            dynamodb.insert("OldImage".to_owned(), image);
        }

        let mut record = Map::new();
        record.insert("eventID".to_owned(), json!(self.event_id));
        record.insert("eventName".to_owned(), json!(self.event_name));
        record.insert("eventVersion".to_owned(), json!("1.1"));
        record.insert("eventSource".to_owned(), json!("aws:dynamodb"));
        record.insert("awsRegion".to_owned(), json!("us-east-1"));
        if let Some(arn) = self.event_source_arn {
            record.insert("eventSourceARN".to_owned(), json!(arn));
        }
        record.insert("dynamodb".to_owned(), Value::Object(dynamodb));
        Value::Object(record)
    }

    fn keys_and(&self, attributes: Value) -> Value {
        let mut image = self.keys.clone();
        if let Value::Object(attributes) = attributes {
            image.extend(attributes);
        }
        Value::Object(image)
    }
}

impl From<RecordBuilder> for Value {
    fn from(record: RecordBuilder) -> Self {
        record.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::plan::{plan_records, SkipReason, Step};

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

    #[test]
    fn stream_record_keeps_its_shape() {
        assert_eq!(
            stream_record("INSERT", "alice", 2, Some(json!({"plan": {"S": "pro"}}))),
            json!({
                "eventID": "event-2",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": EVENT_SOURCE_ARN,
                "dynamodb": {
                    "ApproximateCreationDateTime": 1764000000,
                    "Keys": { "name": { "S": "alice" } },
                    "NewImage": { "name": { "S": "alice" }, "plan": { "S": "pro" } },
                    "SequenceNumber": "000000000000000000002",
                    "SizeBytes": 64,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                }
            })
        );
    }

    #[test]
    fn every_field_can_be_set_or_left_out() {
        let record = RecordBuilder::new("REMOVE", 3)
            .event_id("e")
            .sequence_number("0000100003")
            .key("name", string_value("alice"))
            .key("id", number_value(7))
            .old_image_with_keys(json!({"plan": string_value("pro")}))
            .without_event_source_arn()
            .without_creation_time()
            .build();
        assert_eq!(
            record,
            json!({
                "eventID": "e",
                "eventName": "REMOVE",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "Keys": { "name": { "S": "alice" }, "id": { "N": "7" } },
                    "OldImage": {
                        "name": { "S": "alice" },
                        "id": { "N": "7" },
                        "plan": { "S": "pro" }
                    },
                    "SequenceNumber": "0000100003",
                    "SizeBytes": 64,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                }
            })
        );

        let bare = RecordBuilder::new("MODIFY", 4)
            .without_sequence_number()
            .new_image(json!({"id": string_value("bob")}))
            .build();
        assert_eq!(bare["dynamodb"]["Keys"], json!({}));
        assert_eq!(bare["dynamodb"]["NewImage"], json!({"id": {"S": "bob"}}));
        assert!(bare["dynamodb"].get("SequenceNumber").is_none());
        assert!(bare["dynamodb"].get("OldImage").is_none());
        assert_eq!(
            Value::from(RecordBuilder::new("INSERT", 1)),
            RecordBuilder::new("INSERT", 1).build()
        );
        let dated = RecordBuilder::new("INSERT", 5)
            .creation_time(1_764_000_042)
            .build();
        assert_eq!(
            dated["dynamodb"]["ApproximateCreationDateTime"],
            1_764_000_042
        );
    }

    #[test]
    fn built_records_are_planned_as_the_function_reads_them() {
        let config = Config::from_lookup(|name| match name {
            "BUCKET_NAME" => Some("users-data".to_owned()),
            "KEY_ATTRIBUTE" => Some("id".to_owned()),
            _ => None,
        })
        .unwrap();
        let records: Vec<Value> = vec![
            // The name only in the old image of a REMOVE.
            RecordBuilder::new("REMOVE", 1)
                .old_image(json!({"id": string_value("alice")}))
                .build(),
            // Keys only, under another attribute.
            RecordBuilder::new("INSERT", 2)
                .key("id", string_value("bob"))
                .build(),
            // A numeric key, a missing key, no sequence number.
            RecordBuilder::new("INSERT", 3)
                .key("id", number_value(7))
                .build(),
            RecordBuilder::new("INSERT", 4)
                .key("name", string_value("carol"))
                .build(),
            RecordBuilder::new("INSERT", 5)
                .key("id", string_value("dave"))
                .without_sequence_number()
                .build(),
        ];
        let raw: Vec<_> = records.iter().map(crate::plan::raw_json).collect();
        let plan = plan_records(&raw, &config);
        let names: Vec<&str> = plan.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(plan.users[0].steps, [Step::DeleteObject]);
        assert_eq!(
            plan.users[1].steps,
            [Step::Put(br#"{"id":"bob"}"#.to_vec())]
        );
        let reasons: Vec<&SkipReason> = plan.skipped.iter().map(|s| &s.reason).collect();
        assert!(matches!(
            reasons.as_slice(),
            [
                SkipReason::KeyNotString { .. },
                SkipReason::KeyMissing { .. },
                SkipReason::MissingSequenceNumber
            ]
        ));
    }
}
