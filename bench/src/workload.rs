//! The benchmark's batches: DynamoDB stream records in exactly the shape the local poller hands
//! the function (they are built as `GetRecords` returns them and converted by the poller's own
//! code), and the S3 operations the same batch asks of S3.

use aws_sdk_dynamodbstreams::types::{
    AttributeValue, OperationType, Record, StreamRecord, StreamViewType,
};
use aws_smithy_types::DateTime;
use serde_json::Value;

use deployer::streams::record::{event_payload, StreamEventRecord};

/// The stream the records claim to come from.
const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/bench-users/stream/2026-12-01T00:00:00.000";

/// Which mix of records a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// 80% INSERT, 20% REMOVE, every record a different user.
    Mixed,
    /// A tenth of the users inserted and then removed in the same batch (the function
    /// coalesces each into one delete); the other records 80% INSERT / 20% REMOVE overall.
    Churn,
}

/// One S3 operation of a batch, for the raw-limit loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Operation {
    Put { key: String, body: Vec<u8> },
    Delete { key: String },
}

/// One user change in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    user: String,
    insert: bool,
}

/// A batch of `records` records of `variant`, over users named with `label`; or a shard's worth
/// of them, cut into batches ([`Workload::batches`]) or split by user ([`Workload::split_by_user`]).
pub struct Workload {
    changes: Vec<Change>,
    /// Each change's position in the stream (its sequence number's offset), which a split keeps.
    positions: Vec<usize>,
}

impl Workload {
    pub fn new(variant: Variant, records: usize, label: &str) -> Workload {
        let user = |i: usize| format!("{label}-{i:06}");
        let removes = records / 5;
        let changes = match variant {
            Variant::Mixed => (0..records)
                .map(|i| Change {
                    user: user(i),
                    // Every fifth record is a removal, spread through the batch.
                    insert: i % 5 != 4 || i / 5 >= removes,
                })
                .collect(),
            Variant::Churn => {
                // c churned users give 2c records; the others one each. A tenth of all users
                // churned: c = (c + others) / 10 with 2c + others = records, so c = records / 11.
                let churned = records / 11;
                let others = records - 2 * churned;
                let other_removes = removes.saturating_sub(churned);
                let mut changes = Vec::with_capacity(records);
                // Churned users are inserted in the first half and removed in the second, with
                // the other users' records around them.
                let first_half = others / 2;
                let other = |i: usize| Change {
                    user: user(churned + i),
                    insert: i >= other_removes,
                };
                changes.extend((0..churned).map(|i| Change {
                    user: user(i),
                    insert: true,
                }));
                changes.extend((0..first_half).map(other));
                changes.extend((0..churned).map(|i| Change {
                    user: user(i),
                    insert: false,
                }));
                changes.extend((first_half..others).map(other));
                changes
            }
        };
        let positions = (0..changes.len()).collect();
        Workload { changes, positions }
    }

    pub fn records(&self) -> usize {
        self.changes.len()
    }

    /// The invocation payload: `{"Records": [...]}` as the poller sends it.
    pub fn event(&self) -> Value {
        self.event_of(0..self.changes.len())
    }

    /// The records, in order, as invocation payloads of `size` records each (the last may hold
    /// fewer), as a poller reading the shard would send them.
    pub fn batches(&self, size: usize) -> Vec<Value> {
        let size = size.max(1);
        (0..self.changes.len())
            .step_by(size)
            .map(|start| self.event_of(start..(start + size).min(self.changes.len())))
            .collect()
    }

    /// The records split into `lanes` workloads by a stable hash of the user (FNV-1a of the
    /// name), each keeping its records' order and sequence numbers: what Lambda's
    /// parallelization factor does to one shard, whose records of one partition key stay in
    /// one lane, in order.
    pub fn split_by_user(&self, lanes: usize) -> Vec<Workload> {
        let lanes = lanes.max(1);
        let mut split: Vec<Workload> = (0..lanes)
            .map(|_| Workload {
                changes: Vec::new(),
                positions: Vec::new(),
            })
            .collect();
        for (change, &position) in self.changes.iter().zip(&self.positions) {
            let lane = (fnv1a(change.user.as_bytes()) % lanes as u64) as usize;
            split[lane].changes.push(change.clone());
            split[lane].positions.push(position);
        }
        split
    }

    fn event_of(&self, range: std::ops::Range<usize>) -> Value {
        let records: Vec<StreamEventRecord> = range
            .map(|i| {
                let record = stream_record(self.positions[i], &self.changes[i]);
                StreamEventRecord::from_stream(&record, STREAM_ARN)
                    .expect("every record has a sequence number")
            })
            .collect();
        event_payload(&records)
    }

    /// What a plain loop does to S3 for the same changes, one operation per record (the
    /// function's default key layout: `<name>/userdata`).
    pub fn s3_operations(&self) -> Vec<S3Operation> {
        self.changes
            .iter()
            .map(|change| {
                let key = format!("{}/userdata", change.user);
                if change.insert {
                    S3Operation::Put {
                        key,
                        body: object_body(&change.user).into_bytes(),
                    }
                } else {
                    S3Operation::Delete { key }
                }
            })
            .collect()
    }
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The item every inserted user has: a realistic profile of about 150 bytes.
fn item(user: &str) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("name", AttributeValue::S(user.to_owned())),
        ("email", AttributeValue::S(format!("{user}@example.com"))),
        ("plan", AttributeValue::S("pro".to_owned())),
        ("seats", AttributeValue::N("12".to_owned())),
        ("active", AttributeValue::Bool(true)),
        (
            "created",
            AttributeValue::S("2026-11-30T08:15:00Z".to_owned()),
        ),
    ]
}

/// The object the function writes for `user`'s item (keys sorted, as the function writes).
fn object_body(user: &str) -> String {
    format!(
        r#"{{"active":true,"created":"2026-11-30T08:15:00Z","email":"{user}@example.com","name":"{user}","plan":"pro","seats":12}}"#
    )
}

fn stream_record(index: usize, change: &Change) -> Record {
    let key = AttributeValue::S(change.user.clone());
    let mut stream = StreamRecord::builder()
        .approximate_creation_date_time(DateTime::from_secs(1_764_547_200))
        .keys("name", key)
        .sequence_number(format!(
            "{:021}",
            100_000_000_000_000_000_000u128 + index as u128
        ))
        .size_bytes(160)
        .stream_view_type(StreamViewType::NewAndOldImages);
    for (name, value) in item(&change.user) {
        stream = if change.insert {
            stream.new_image(name, value)
        } else {
            stream.old_image(name, value)
        };
    }
    Record::builder()
        .event_id(format!("bench-{index}"))
        .event_name(if change.insert {
            OperationType::Insert
        } else {
            OperationType::Remove
        })
        .event_version("1.1")
        .event_source("aws:dynamodb")
        .aws_region("us-east-1")
        .dynamodb(stream.build())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(workload: &Workload, insert: bool) -> usize {
        workload
            .changes
            .iter()
            .filter(|c| c.insert == insert)
            .count()
    }

    #[test]
    fn mixed_batches_are_four_fifths_inserts_of_distinct_users() {
        let workload = Workload::new(Variant::Mixed, 1000, "u");
        assert_eq!(workload.records(), 1000);
        assert_eq!(count(&workload, true), 800);
        assert_eq!(count(&workload, false), 200);
        let users: std::collections::BTreeSet<_> =
            workload.changes.iter().map(|c| &c.user).collect();
        assert_eq!(users.len(), 1000);
    }

    #[test]
    fn churn_batches_insert_then_remove_a_tenth_of_the_users() {
        let workload = Workload::new(Variant::Churn, 1100, "u");
        assert_eq!(workload.records(), 1100);
        assert_eq!(count(&workload, false), 220, "a fifth are removals overall");
        let mut seen = std::collections::BTreeMap::<&str, Vec<bool>>::new();
        for change in &workload.changes {
            seen.entry(&change.user).or_default().push(change.insert);
        }
        let churned: Vec<_> = seen.values().filter(|ops| ops.len() == 2).collect();
        assert_eq!(churned.len(), 100);
        assert_eq!(seen.len(), 1000, "a tenth of the users churned");
        assert!(churned.iter().all(|ops| ops == &&vec![true, false]));
    }

    #[test]
    fn events_have_lambdas_shape_and_the_loop_does_one_operation_per_record() {
        let workload = Workload::new(Variant::Mixed, 10, "u");
        let event = workload.event();
        let records = event["Records"].as_array().unwrap();
        assert_eq!(records.len(), 10);
        assert_eq!(records[0]["eventName"], "INSERT");
        assert_eq!(records[0]["eventSource"], "aws:dynamodb");
        assert_eq!(records[0]["dynamodb"]["Keys"]["name"]["S"], "u-000000");
        assert_eq!(records[0]["dynamodb"]["NewImage"]["seats"]["N"], "12");
        assert_eq!(records[4]["eventName"], "REMOVE");
        assert!(records[4]["dynamodb"].get("NewImage").is_none());
        let operations = workload.s3_operations();
        assert_eq!(operations.len(), 10);
        assert_eq!(
            operations[4],
            S3Operation::Delete {
                key: "u-000004/userdata".into()
            }
        );
    }

    #[test]
    fn a_shard_is_cut_into_batches_in_stream_order() {
        let workload = Workload::new(Variant::Mixed, 250, "s");
        let batches = workload.batches(100);
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| b["Records"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(
            batches[1]["Records"][0]["dynamodb"]["Keys"]["name"]["S"],
            "s-000100"
        );
        let sequence = |event: &Value, i: usize| {
            event["Records"][i]["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(sequence(&batches[0], 99) < sequence(&batches[1], 0));
        assert_eq!(sequence(&batches[2], 49), sequence(&workload.event(), 249));
    }

    #[test]
    fn lanes_split_by_user_keep_every_record_once_in_order() {
        let workload = Workload::new(Variant::Churn, 1100, "p");
        let lanes = workload.split_by_user(4);
        assert_eq!(lanes.len(), 4);
        assert_eq!(lanes.iter().map(Workload::records).sum::<usize>(), 1100);
        assert!(
            lanes.iter().all(|lane| lane.records() > 150),
            "the hash spreads the users: {:?}",
            lanes.iter().map(Workload::records).collect::<Vec<_>>()
        );
        let mut lane_of = std::collections::BTreeMap::new();
        for (n, lane) in lanes.iter().enumerate() {
            assert!(lane.positions.windows(2).all(|w| w[0] < w[1]), "in order");
            for change in &lane.changes {
                assert_eq!(*lane_of.entry(change.user.clone()).or_insert(n), n);
            }
        }
        // The same split every time.
        let again = workload.split_by_user(4);
        assert!(lanes
            .iter()
            .zip(&again)
            .all(|(a, b)| a.positions == b.positions));
        // A lane's records keep their sequence numbers.
        let first = lanes[0].positions[0];
        assert_eq!(
            lanes[0].event()["Records"][0]["dynamodb"]["SequenceNumber"],
            workload.event()["Records"][first]["dynamodb"]["SequenceNumber"]
        );
        assert_eq!(workload.split_by_user(1)[0].records(), 1100);
    }

    #[test]
    fn the_loop_writes_the_bytes_the_function_writes() {
        let workload = Workload::new(Variant::Mixed, 1, "u");
        let event = workload.event();
        let image = event["Records"][0]["dynamodb"]["NewImage"].clone();
        let image: std::collections::HashMap<String, serde_dynamo::AttributeValue> =
            serde_json::from_value(image).unwrap();
        let written =
            serde_json::to_string(&usersync_function::image::item_to_json(&image)).unwrap();
        let S3Operation::Put { body, .. } = &workload.s3_operations()[0] else {
            panic!("the first record is an insert");
        };
        assert_eq!(String::from_utf8_lossy(body), written);
    }
}
