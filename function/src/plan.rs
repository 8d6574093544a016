//! Turning a batch of stream records into per-user S3 work.
//!
//! Records of one user are reduced, in stream order, to the shortest list of steps that leaves
//! S3 as applying them one by one would: the last write wins for the user's object, and with
//! `DELETE_SCOPE=prefix` any `REMOVE` in the batch becomes one prefix delete that runs before
//! the final write. Users are independent of each other, so their plans can run concurrently.

use std::borrow::Borrow;
use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use serde_dynamo::AttributeValue;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{Config, DeleteScope};
use crate::key::{user_keys, KeyTooLong, UserKeys};

/// One S3 operation of a user's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write the user's object with this JSON body.
    Put(Vec<u8>),
    /// Delete the user's object.
    DeleteObject,
    /// Delete every object under the user's prefix.
    DeletePrefix,
}

/// The work for one user in one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPlan {
    pub name: String,
    pub keys: UserKeys,
    /// Sequence number of the user's earliest record in the batch: where Lambda must resume
    /// if this user's steps fail.
    pub first_sequence_number: String,
    /// How many records of the batch this plan covers.
    pub records: usize,
    pub steps: Vec<Step>,
}

/// A record that can never succeed, so it is logged and passed over instead of retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRecord {
    pub event_id: Option<String>,
    pub sequence_number: Option<String>,
    pub reason: SkipReason,
}

/// Why a record was passed over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not a DynamoDB stream record: {0}")]
    Malformed(String),
    #[error("the record has no dynamodb.SequenceNumber")]
    MissingSequenceNumber,
    #[error("unknown eventName {0:?}; expected INSERT, MODIFY or REMOVE")]
    UnknownEventName(String),
    #[error("key attribute {attribute:?} is missing from the record")]
    KeyMissing { attribute: String },
    #[error("key attribute {attribute:?} is {found}, expected a string")]
    KeyNotString {
        attribute: String,
        found: &'static str,
    },
    #[error("key attribute {attribute:?} is an empty string")]
    KeyEmpty { attribute: String },
    #[error(transparent)]
    KeyTooLong(#[from] KeyTooLong),
}

/// The work for a whole batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// One entry per user, in the order of each user's first record.
    pub users: Vec<UserPlan>,
    pub skipped: Vec<SkippedRecord>,
    /// Records in the batch, skipped ones included.
    pub records: usize,
    /// The earliest `dynamodb.ApproximateCreationDateTime` of the records that are stream
    /// records (skipped ones included), in epoch milliseconds (see
    /// [`metrics::created_at_ms`](crate::metrics::created_at_ms)): what the batch's lag is
    /// measured from. `None` when no record has one.
    pub oldest_created_ms: Option<i64>,
}

impl Plan {
    /// Records whose effect is folded into a later record of the same user.
    pub fn coalesced(&self) -> usize {
        let planned: usize = self.users.iter().map(|u| u.records).sum();
        let steps: usize = self.users.iter().map(|u| u.steps.len()).sum();
        planned.saturating_sub(steps)
    }
}

enum Change {
    Write,
    Remove,
}

struct UserRecords {
    name: String,
    keys: UserKeys,
    first_sequence_number: String,
    records: usize,
    removed: bool,
    /// The user's last change, with the object body of a write: only this is kept of the
    /// records, so a batch's memory is its text plus a body per user.
    last: Option<(Change, Option<Vec<u8>>)>,
}

/// A parsed JSON value as JSON text again.
pub(crate) fn raw_json(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value always serializes")
}

/// Plans a batch of records (the `Records` array of a DynamoDB Streams event) given as their
/// JSON text. Each record is read once, when it is
/// planned: the function never holds a whole batch as parsed JSON.
pub fn plan_records<R: Borrow<RawValue>>(records: &[R], config: &Config) -> Plan {
    let mut plan = Plan {
        records: records.len(),
        ..Plan::default()
    };
    // At most one user per record: sized once, so a large batch never holds a vector and
    // its doubled copy at the same time.
    let mut users: Vec<UserRecords> = Vec::with_capacity(records.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(records.len());

    for raw in records {
        let raw = raw.borrow();
        let record = match serde_json::from_str::<EventRecord>(raw.get()) {
            Ok(record) => record,
            Err(err) => {
                let (event_id, sequence_number) = identity_of(raw);
                plan.skipped.push(SkippedRecord {
                    event_id,
                    sequence_number,
                    reason: SkipReason::Malformed(err.to_string()),
                });
                continue;
            }
        };
        // Read here, where the record is parsed anyway. Whole seconds, DynamoDB's precision
        // (see `metrics::created_at_ms`); a missing one reads as the epoch, 0.
        let created_ms = record
            .change
            .approximate_creation_date_time
            .timestamp()
            .saturating_mul(1000);
        if created_ms > 0 {
            plan.oldest_created_ms = Some(
                plan.oldest_created_ms
                    .map_or(created_ms, |o| o.min(created_ms)),
            );
        }
        let skip = |reason| SkippedRecord {
            event_id: Some(record.event_id.clone()),
            sequence_number: record.change.sequence_number.clone(),
            reason,
        };
        let Some(sequence_number) = record.change.sequence_number.clone() else {
            plan.skipped.push(skip(SkipReason::MissingSequenceNumber));
            continue;
        };
        let change = match record.event_name.as_str() {
            "INSERT" | "MODIFY" => Change::Write,
            "REMOVE" => Change::Remove,
            other => {
                plan.skipped
                    .push(skip(SkipReason::UnknownEventName(other.to_owned())));
                continue;
            }
        };
        let name = match user_name(&record, &config.key_attribute) {
            Ok(name) => name,
            Err(reason) => {
                plan.skipped.push(skip(reason));
                continue;
            }
        };
        let slot = match index.get(&name) {
            Some(&slot) => slot,
            None => {
                let keys = match user_keys(&config.key_prefix, &name, &config.object_name) {
                    Ok(keys) => keys,
                    Err(too_long) => {
                        plan.skipped.push(skip(too_long.into()));
                        continue;
                    }
                };
                users.push(UserRecords {
                    name: name.clone(),
                    keys,
                    first_sequence_number: sequence_number,
                    records: 0,
                    removed: false,
                    last: None,
                });
                index.insert(name, users.len() - 1);
                users.len() - 1
            }
        };
        let body = matches!(change, Change::Write).then(|| object_body(&record));
        let user = &mut users[slot];
        user.records += 1;
        user.removed |= matches!(change, Change::Remove);
        user.last = Some((change, body));
    }

    plan.users = users
        .into_iter()
        .map(|user| finish(user, config.delete_scope))
        .collect();
    plan
}

fn finish(user: UserRecords, scope: DeleteScope) -> UserPlan {
    let mut steps = Vec::with_capacity(2);
    if scope == DeleteScope::Prefix && user.removed {
        steps.push(Step::DeletePrefix);
    }
    match user.last {
        Some((Change::Write, Some(body))) => steps.push(Step::Put(body)),
        Some((Change::Remove, _)) if scope == DeleteScope::Object => steps.push(Step::DeleteObject),
        _ => {}
    }
    UserPlan {
        name: user.name,
        keys: user.keys,
        first_sequence_number: user.first_sequence_number,
        records: user.records,
        steps,
    }
}

/// The object body: the new image, or the keys where the stream carries no image (KEYS_ONLY).
fn object_body(record: &EventRecord) -> Vec<u8> {
    let image = if record.change.new_image.is_empty() {
        &record.change.keys
    } else {
        &record.change.new_image
    };
    crate::image::object_body(image)
}

fn user_name(record: &EventRecord, attribute: &str) -> Result<String, SkipReason> {
    let change = &record.change;
    let value = [&change.keys, &change.new_image, &change.old_image]
        .into_iter()
        .find_map(|item| item.get(attribute))
        .ok_or_else(|| SkipReason::KeyMissing {
            attribute: attribute.to_owned(),
        })?;
    match value {
        AttributeValue::S(name) if name.is_empty() => Err(SkipReason::KeyEmpty {
            attribute: attribute.to_owned(),
        }),
        AttributeValue::S(name) => Ok(name.clone()),
        other => Err(SkipReason::KeyNotString {
            attribute: attribute.to_owned(),
            found: type_name(other),
        }),
    }
}

fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::N(_) => "a number",
        AttributeValue::S(_) => "a string",
        AttributeValue::Bool(_) => "a boolean",
        AttributeValue::B(_) => "binary",
        AttributeValue::Null(_) => "null",
        AttributeValue::M(_) => "a map",
        AttributeValue::L(_) => "a list",
        AttributeValue::Ss(_) => "a string set",
        AttributeValue::Ns(_) => "a number set",
        AttributeValue::Bs(_) => "a binary set",
    }
}

/// The event ID and sequence number of a record that is not a stream record, as far as it has
/// them, for logging.
fn identity_of(raw: &RawValue) -> (Option<String>, Option<String>) {
    let raw: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    (
        text(raw.get("eventID")),
        text(raw.get("dynamodb").and_then(|d| d.get("SequenceNumber"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{config, string_value, RecordBuilder};
    use serde_json::json;

    fn raw(records: &[Value]) -> Vec<Box<RawValue>> {
        records.iter().map(raw_json).collect()
    }

    #[test]
    fn the_plan_keeps_the_oldest_creation_time_of_its_records() {
        let config = config("b", DeleteScope::Object);
        let user = |sequence, name: &str| {
            RecordBuilder::new("INSERT", sequence).key("name", string_value(name))
        };
        let records = [
            user(1, "alice").creation_time(1_764_000_030).build(),
            user(2, "bob").without_creation_time().build(),
            // A record skipped for its key still came through the stream when it did.
            RecordBuilder::new("INSERT", 3)
                .creation_time(1_764_000_010)
                .build(),
            user(4, "carol").creation_time(1_764_000_020).build(),
            json!({"not": "a record"}),
        ];
        let plan = plan_records(&raw(&records), &config);
        assert_eq!(plan.skipped.len(), 2);
        assert_eq!(plan.oldest_created_ms, Some(1_764_000_010_000));

        let undated = [user(1, "alice").without_creation_time().build()];
        assert_eq!(
            plan_records(&raw(&undated), &config).oldest_created_ms,
            None
        );
    }
}
