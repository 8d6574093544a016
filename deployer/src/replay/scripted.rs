//! Scripted AWS for the replay's tests: the failure queue, one stream shard read page by page,
//! the users table and the bucket (with each object's `LastModified`), each an
//! `aws_smithy_mocks` client over shared state, so a replay runs unchanged against them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record, ShardIteratorType, StreamRecord,
};
use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule, RuleMode};
use aws_smithy_types::DateTime;
use serde_json::json;
use usersync_function::testing::sequence_number;

use crate::reconcile::{expected_body, Item};

pub(super) const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/000000000000/failures";
pub(super) const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/2026-11-25T00:00:00.000";
pub(super) const SHARD_ID: &str = "shardId-00000001764000000000-00000001";
pub(super) const BUCKET: &str = "mirror";

/// A message of the scripted queue.
#[derive(Clone, Debug)]
struct QueuedMessage {
    id: String,
    body: String,
    visible: bool,
}

/// The failure queue: receiving hides a message, releasing shows it again, deleting removes it.
#[derive(Debug, Default)]
pub(super) struct Queue {
    messages: Vec<QueuedMessage>,
}

impl Queue {
    /// Ids of the messages still in the queue.
    pub(super) fn ids(&self) -> Vec<String> {
        self.messages.iter().map(|m| m.id.clone()).collect()
    }

    /// Ids of the messages in the queue that a reader would receive now.
    pub(super) fn visible(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.visible)
            .map(|m| m.id.clone())
            .collect()
    }
}

/// One shard: pages of records as `GetRecords` answers them, an empty page being an answer
/// without records. Pages before `trim_horizon` are gone (older than the stream's retention).
#[derive(Debug, Default)]
pub(super) struct ScriptedShard {
    pub(super) pages: Vec<Vec<Record>>,
    /// The shard takes no new records: after its last page there is no next iterator.
    pub(super) closed: bool,
    pub(super) trim_horizon: usize,
}

/// An object of the scripted bucket.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredObject {
    pub(super) body: Vec<u8>,
    pub(super) last_modified: DateTime,
}

/// The whole scripted account.
#[derive(Default)]
pub(super) struct Cloud {
    queue: Arc<Mutex<Queue>>,
    shard: Arc<Mutex<ScriptedShard>>,
    table: Arc<Mutex<BTreeMap<String, Item>>>,
    bucket: Arc<Mutex<BTreeMap<String, StoredObject>>>,
    /// The time S3 gives an object put now, in epoch seconds.
    s3_now: Arc<Mutex<i64>>,
    get_records: Arc<Mutex<usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A failed assertion elsewhere must not hide the state.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A user's item: its name and age.
pub(super) fn item(name: &str, age: u32) -> Item {
    HashMap::from([
        ("name".to_owned(), AttributeValue::S(name.to_owned())),
        ("age".to_owned(), AttributeValue::N(age.to_string())),
    ])
}

/// A stream record of user `name`: `age` is the new image's (none for a REMOVE); written at
/// `at` epoch seconds.
pub(super) fn record(
    kind: OperationType,
    name: &str,
    age: Option<u32>,
    seq: u64,
    at: i64,
) -> Record {
    let mut change = StreamRecord::builder()
        .keys("name", StreamValue::S(name.to_owned()))
        .sequence_number(sequence_number(seq))
        .approximate_creation_date_time(DateTime::from_secs(at))
        .size_bytes(20);
    if let Some(age) = age {
        change = change
            .new_image("name", StreamValue::S(name.to_owned()))
            .new_image("age", StreamValue::N(age.to_string()));
    }
    Record::builder()
        .event_id(format!("event-{seq}"))
        .event_name(kind)
        .event_version("1.1")
        .event_source("aws:dynamodb")
        .aws_region("us-east-1")
        .dynamodb(change.build())
        .build()
}

/// The on-failure message of a batch of `size` records from `start` to `end` of the shard.
pub(super) fn batch_message(start: u64, end: u64, size: u64) -> String {
    json!({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": SHARD_ID,
            "startSequenceNumber": sequence_number(start),
            "endSequenceNumber": sequence_number(end),
            "batchSize": size,
            "streamArn": STREAM_ARN,
        }
    })
    .to_string()
}

impl Cloud {
    /// Adds a message to the queue, visible.
    pub(super) fn enqueue(&self, id: &str, body: String) {
        lock(&self.queue).messages.push(QueuedMessage {
            id: id.to_owned(),
            body,
            visible: true,
        });
    }

    pub(super) fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    pub(super) fn set_shard(&self, shard: ScriptedShard) {
        *lock(&self.shard) = shard;
    }

    /// `GetRecords` calls so far.
    pub(super) fn get_records_calls(&self) -> usize {
        *lock(&self.get_records)
    }

    /// Writes the user's item (`None` deletes it).
    pub(super) fn set_user(&self, name: &str, age: Option<u32>) {
        let mut table = lock(&self.table);
        match age {
            Some(age) => table.insert(name.to_owned(), item(name, age)),
            None => table.remove(name),
        };
    }

    /// Puts an object as if at `at` epoch seconds.
    pub(super) fn put_object(&self, key: &str, body: &[u8], at: i64) {
        lock(&self.bucket).insert(
            key.to_owned(),
            StoredObject {
                body: body.to_vec(),
                last_modified: DateTime::from_secs(at),
            },
        );
    }

    /// Puts the object the function writes for the user at `age`, as if at `at`.
    pub(super) fn put_user_object(&self, name: &str, age: u32, at: i64) {
        self.put_object(
            &format!("{name}/userdata"),
            &expected_body(&item(name, age)),
            at,
        );
    }

    /// Objects put through S3 from now on get `at` as their `LastModified`.
    pub(super) fn set_s3_now(&self, at: i64) {
        *lock(&self.s3_now) = at;
    }

    pub(super) fn bucket(&self) -> BTreeMap<String, StoredObject> {
        lock(&self.bucket).clone()
    }

    /// The body at `key`, as JSON.
    pub(super) fn object_json(&self, key: &str) -> Option<serde_json::Value> {
        lock(&self.bucket)
            .get(key)
            .and_then(|o| serde_json::from_slice(&o.body).ok())
    }

    /// What the function writes for the user's item in the table now, as JSON.
    pub(super) fn expected_json(&self, name: &str) -> Option<serde_json::Value> {
        lock(&self.table)
            .get(name)
            .and_then(|item| serde_json::from_slice(&expected_body(item)).ok())
    }

    pub(super) fn sqs(&self) -> aws_sdk_sqs::Client {
        use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput;
        use aws_sdk_sqs::operation::delete_message::DeleteMessageOutput;
        use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
        use aws_sdk_sqs::types::Message;
        use aws_sdk_sqs::Client;

        let queue = self.queue.clone();
        let receive = mock!(Client::receive_message).then_compute_output(move |input| {
            let limit = input.max_number_of_messages().unwrap_or(1).max(1) as usize;
            let mut queue = lock(&queue);
            let messages = queue
                .messages
                .iter_mut()
                .filter(|m| m.visible)
                .take(limit)
                .map(|m| {
                    m.visible = false;
                    Message::builder()
                        .message_id(&m.id)
                        .receipt_handle(&m.id)
                        .body(&m.body)
                        .build()
                })
                .collect();
            ReceiveMessageOutput::builder()
                .set_messages(Some(messages))
                .build()
        });
        let queue = self.queue.clone();
        let release = mock!(Client::change_message_visibility).then_compute_output(move |input| {
            let mut queue = lock(&queue);
            if input.visibility_timeout() == Some(0) {
                for m in &mut queue.messages {
                    if Some(m.id.as_str()) == input.receipt_handle() {
                        m.visible = true;
                    }
                }
            }
            ChangeMessageVisibilityOutput::builder().build()
        });
        let queue = self.queue.clone();
        let delete = mock!(Client::delete_message).then_compute_output(move |input| {
            lock(&queue)
                .messages
                .retain(|m| Some(m.id.as_str()) != input.receipt_handle());
            DeleteMessageOutput::builder().build()
        });
        mock_client!(
            aws_sdk_sqs,
            RuleMode::MatchAny,
            &[&receive, &release, &delete]
        )
    }

    pub(super) fn streams(&self) -> aws_sdk_dynamodbstreams::Client {
        use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput;
        use aws_sdk_dynamodbstreams::operation::get_shard_iterator::{
            GetShardIteratorError, GetShardIteratorOutput,
        };
        use aws_sdk_dynamodbstreams::types::error::TrimmedDataAccessException;
        use aws_sdk_dynamodbstreams::Client;

        let shard = self.shard.clone();
        let iterator = mock!(Client::get_shard_iterator).then_compute_response(move |input| {
            let shard = lock(&shard);
            let page_of = |seq: &str| {
                shard
                    .pages
                    .iter()
                    .position(|page| page.iter().any(|r| record_seq(r) == seq))
            };
            let page = match (input.shard_iterator_type(), input.sequence_number()) {
                (Some(ShardIteratorType::TrimHorizon), _) => Some(shard.trim_horizon),
                (Some(ShardIteratorType::AtSequenceNumber), Some(seq)) => page_of(seq),
                (Some(ShardIteratorType::AfterSequenceNumber), Some(seq)) => {
                    page_of(seq).map(|page| page + 1)
                }
                _ => None,
            };
            match page {
                Some(page) if page < shard.trim_horizon => {
                    MockResponse::Error(GetShardIteratorError::TrimmedDataAccessException(
                        TrimmedDataAccessException::builder()
                            .message("the requested sequence number is beyond the trim horizon")
                            .build(),
                    ))
                }
                Some(page) => MockResponse::Output(
                    GetShardIteratorOutput::builder()
                        .shard_iterator(format!("page-{page}"))
                        .build(),
                ),
                None => panic!("the script has no page for {input:?}"),
            }
        });
        let shard = self.shard.clone();
        let calls = self.get_records.clone();
        let records = mock!(Client::get_records).then_compute_output(move |input| {
            *lock(&calls) += 1;
            let shard = lock(&shard);
            let page: usize = input
                .shard_iterator()
                .and_then(|it| it.strip_prefix("page-"))
                .and_then(|n| n.parse().ok())
                .expect("an iterator handed out by the script");
            let records = shard.pages.get(page).cloned().unwrap_or_default();
            let next = if page + 1 < shard.pages.len() {
                Some(format!("page-{}", page + 1))
            } else if shard.closed {
                None
            } else {
                // The open shard's tip: nothing new yet, ask again.
                Some(format!("page-{}", shard.pages.len()))
            };
            GetRecordsOutput::builder()
                .set_records(Some(records))
                .set_next_shard_iterator(next)
                .build()
        });
        mock_client!(
            aws_sdk_dynamodbstreams,
            RuleMode::MatchAny,
            &[&iterator, &records]
        )
    }

    pub(super) fn s3(&self) -> aws_sdk_s3::Client {
        s3_client_over(self.bucket.clone(), self.s3_now.clone())
    }

    pub(super) fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
        use aws_sdk_dynamodb::Client;

        let table = self.table.clone();
        let get = mock!(Client::get_item).then_compute_output(move |input| {
            assert_eq!(
                input.consistent_read(),
                Some(true),
                "a repair reads consistently"
            );
            let name = match input.key().and_then(|key| key.get("name")) {
                Some(AttributeValue::S(name)) => name.clone(),
                other => panic!("GetItem by an unexpected key: {other:?}"),
            };
            GetItemOutput::builder()
                .set_item(lock(&table).get(&name).cloned())
                .build()
        });
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&get])
    }
}

fn record_seq(record: &Record) -> &str {
    record
        .dynamodb()
        .and_then(|change| change.sequence_number())
        .unwrap_or_default()
}

/// An S3 client over `bucket`: PutObject, DeleteObject, ListObjectsV2 (one page) and
/// DeleteObjects act on it; a put's `LastModified` is `now`.
pub(super) fn s3_client_over(
    bucket: Arc<Mutex<BTreeMap<String, StoredObject>>>,
    now: Arc<Mutex<i64>>,
) -> aws_sdk_s3::Client {
    s3_client_with(s3_rules(bucket, now))
}

/// An S3 client answering with `rules`, matched in any order.
pub(super) fn s3_client_with(rules: Vec<Rule>) -> aws_sdk_s3::Client {
    let rules: Vec<&Rule> = rules.iter().collect();
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules)
}

fn s3_rules(bucket: Arc<Mutex<BTreeMap<String, StoredObject>>>, now: Arc<Mutex<i64>>) -> Vec<Rule> {
    use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::operation::put_object::PutObjectOutput;
    use aws_sdk_s3::types::Object;
    use aws_sdk_s3::Client;

    let objects = bucket.clone();
    let put = mock!(Client::put_object).then_compute_output(move |input| {
        let body = input
            .body()
            .bytes()
            .expect("the body is in memory")
            .to_vec();
        let key = input.key().expect("a key").to_owned();
        let last_modified = DateTime::from_secs(*lock(&now));
        lock(&objects).insert(
            key,
            StoredObject {
                body,
                last_modified,
            },
        );
        PutObjectOutput::builder().build()
    });
    let objects = bucket.clone();
    let delete = mock!(Client::delete_object).then_compute_output(move |input| {
        lock(&objects).remove(input.key().expect("a key"));
        DeleteObjectOutput::builder().build()
    });
    let objects = bucket.clone();
    let list = mock!(Client::list_objects_v2).then_compute_output(move |input| {
        let prefix = input.prefix().unwrap_or_default();
        let contents: Vec<Object> = lock(&objects)
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, object)| {
                Object::builder()
                    .key(key)
                    .last_modified(object.last_modified)
                    .size(object.body.len() as i64)
                    .build()
            })
            .collect();
        ListObjectsV2Output::builder()
            .key_count(contents.len() as i32)
            .set_contents(Some(contents))
            .is_truncated(false)
            .build()
    });
    let objects = bucket;
    let delete_many = mock!(Client::delete_objects).then_compute_output(move |input| {
        let mut objects = lock(&objects);
        for id in input.delete().map(|d| d.objects()).unwrap_or_default() {
            objects.remove(id.key());
        }
        DeleteObjectsOutput::builder().build()
    });
    vec![put, delete, list, delete_many]
}
