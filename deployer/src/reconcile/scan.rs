//! Reading the table into the index: a parallel Scan, strongly consistent, each segment's
//! pages committed with the `LastEvaluatedKey` that continues it.
//!
//! DynamoDB's parallel scan
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Scan.html#Scan.ParallelScan>,
//! and `Segment`/`TotalSegments` in
//! <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Scan.html>) splits the
//! table into `TotalSegments` disjoint segments; "the value of LastEvaluatedKey returned from a
//! parallel Scan request must be used as ExclusiveStartKey with the same Segment ID in a
//! subsequent Scan operation", which is what a checkpoint keeps per segment. With
//! `ConsistentRead`, "all of the write operations that completed before the Scan began are
//! guaranteed to be contained in the Scan response" (same page), so a user written before the
//! reconcile started is never judged missing for a stale read.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use usersync_function::key::user_keys;
use usersync_function::Config;

use super::etag::{md5_of, Md5Digest};
use super::index::{Index, SegmentState};
use super::report::UnmirrorableItem;
use super::run::ReconcileError;
use super::user::{expected_body, DynamoTable, Item, ItemReader};
use crate::stack::{aws_error, StackError};

/// Segments read at once, whatever `--segments` is: each holds a page of up to 1 MB (several
/// times that once parsed) in memory.
pub const SCAN_CONCURRENCY: usize = 8;

/// Longest item description kept as an example.
const DESCRIPTION_CHARS: usize = 120;

/// One page of a segment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanPage {
    pub items: Vec<Item>,
    /// Where the segment continues; `None` when it is done.
    pub last_evaluated_key: Option<Item>,
}

/// The table, scanned.
pub trait TableScanner: ItemReader {
    /// One page of segment `segment` of `total_segments`, strongly consistent, from `start`.
    fn scan_page(
        &self,
        segment: u32,
        total_segments: u32,
        start: Option<Item>,
    ) -> impl Future<Output = Result<ScanPage, StackError>> + Send;

    /// DescribeTable's `ItemCount`: updated about every six hours, so only for an estimate.
    fn approximate_items(&self) -> impl Future<Output = Result<Option<u64>, StackError>> + Send;
}

impl TableScanner for DynamoTable {
    async fn scan_page(
        &self,
        segment: u32,
        total_segments: u32,
        start: Option<Item>,
    ) -> Result<ScanPage, StackError> {
        let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let output = self
            .client()
            .scan()
            .table_name(self.table())
            .segment(to_i32(segment))
            .total_segments(to_i32(total_segments))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| {
                aws_error(
                    format!(
                        "scan segment {segment} of {total_segments} of table {}",
                        self.table()
                    ),
                    err,
                )
            })?;
        Ok(ScanPage {
            items: output.items.unwrap_or_default(),
            last_evaluated_key: output.last_evaluated_key.filter(|key| !key.is_empty()),
        })
    }

    async fn approximate_items(&self) -> Result<Option<u64>, StackError> {
        let output = self
            .client()
            .describe_table()
            .table_name(self.table())
            .send()
            .await
            .map_err(|err| aws_error(format!("describe table {}", self.table()), err))?;
        Ok(output
            .table()
            .and_then(|table| table.item_count())
            .and_then(|count| u64::try_from(count).ok()))
    }
}

/// A `LastEvaluatedKey` as the checkpoint stores it. A key holds only the table's key
/// attributes, which are strings, numbers or binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor(BTreeMap<String, KeyValue>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum KeyValue {
    S(String),
    N(String),
    /// Hexadecimal.
    B(String),
}

impl ScanCursor {
    /// `None` for a key holding an attribute that no key attribute can be.
    pub fn from_key(key: &Item) -> Option<Self> {
        key.iter()
            .map(|(name, value)| {
                let value = match value {
                    AttributeValue::S(text) => KeyValue::S(text.clone()),
                    AttributeValue::N(number) => KeyValue::N(number.clone()),
                    AttributeValue::B(bytes) => KeyValue::B(hex::encode(bytes.as_ref())),
                    _ => return None,
                };
                Some((name.clone(), value))
            })
            .collect::<Option<_>>()
            .map(Self)
    }

    /// The `ExclusiveStartKey` to continue with; `None` when the stored text is not hex.
    pub fn to_key(&self) -> Option<Item> {
        self.0
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    KeyValue::S(text) => AttributeValue::S(text.clone()),
                    KeyValue::N(number) => AttributeValue::N(number.clone()),
                    KeyValue::B(bytes) => AttributeValue::B(Blob::new(hex::decode(bytes).ok()?)),
                };
                Some((name.clone(), value))
            })
            .collect::<Option<HashMap<_, _>>>()
    }
}

/// What a page puts in the index.
#[derive(Debug, Default, PartialEq)]
pub struct PageRows {
    /// Object key → MD5 of the body the function writes for the item.
    pub users: Vec<(String, Md5Digest)>,
    pub unmirrorable: Vec<UnmirrorableItem>,
}

/// The index rows of scanned items, under the function's settings. An item the function
/// cannot mirror (its key attribute missing, not a string or empty, or a name whose key would
/// be too long) is counted as unmirrorable: the function skips it too.
pub fn page_rows(items: &[Item], config: &Config) -> PageRows {
    let mut rows = PageRows::default();
    for item in items {
        let name = match item.get(&config.key_attribute) {
            Some(AttributeValue::S(name)) if !name.is_empty() => name,
            Some(AttributeValue::S(_)) => {
                rows.unmirrorable.push(unmirrorable(
                    item,
                    format!("its {} is empty", config.key_attribute),
                ));
                continue;
            }
            Some(_) => {
                rows.unmirrorable.push(unmirrorable(
                    item,
                    format!("its {} is not a string", config.key_attribute),
                ));
                continue;
            }
            None => {
                rows.unmirrorable.push(unmirrorable(
                    item,
                    format!("it has no {} attribute", config.key_attribute),
                ));
                continue;
            }
        };
        match user_keys(&config.key_prefix, name, &config.object_name) {
            Ok(keys) => rows.users.push((keys.object, md5_of(&expected_body(item)))),
            Err(too_long) => rows
                .unmirrorable
                .push(unmirrorable(item, too_long.to_string())),
        }
    }
    rows
}

fn unmirrorable(item: &Item, reason: String) -> UnmirrorableItem {
    let body = String::from_utf8_lossy(&expected_body(item)).into_owned();
    let mut description: String = body.chars().take(DESCRIPTION_CHARS).collect();
    if description.len() < body.len() {
        description.push('…');
    }
    UnmirrorableItem {
        item: description,
        reason,
    }
}

/// A page committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedPage {
    pub segment: u32,
    pub items: u64,
    /// The segment is done.
    pub done: bool,
}

/// Scans `segments` of `total_segments` from their checkpoints, [`SCAN_CONCURRENCY`] at a time,
/// committing each page; yields each page once committed.
///
/// Boxed streams: their `Send` is then proven where the lifetimes are concrete, so that a
/// caller may spawn the reconcile.
pub fn scan_segments<'a, T: TableScanner>(
    table: &'a T,
    index: &'a Index,
    config: &'a Config,
    segments: Vec<u32>,
    total_segments: u32,
) -> BoxStream<'a, Result<ScannedPage, ReconcileError>> {
    futures::stream::iter(segments)
        .map(move |segment| scan_segment(table, index, config, segment, total_segments))
        .flatten_unordered(SCAN_CONCURRENCY)
        .boxed()
}

fn scan_segment<'a, T: TableScanner>(
    table: &'a T,
    index: &'a Index,
    config: &'a Config,
    segment: u32,
    total_segments: u32,
) -> BoxStream<'a, Result<ScannedPage, ReconcileError>> {
    futures::stream::try_unfold(None, move |state: Option<SegmentState>| async move {
        let mut state = match state {
            Some(state) => state,
            None => index.segment(segment)?,
        };
        if state.done {
            return Ok(None);
        }
        let start = match &state.cursor {
            Some(cursor) => Some(cursor.to_key().ok_or(ReconcileError::Cursor { segment })?),
            None => None,
        };
        let page = table.scan_page(segment, total_segments, start).await?;
        let rows = page_rows(&page.items, config);
        let items = page.items.len() as u64;
        state.items += items;
        state.unmirrorable += rows.unmirrorable.len() as u64;
        match &page.last_evaluated_key {
            Some(key) => {
                state.cursor =
                    Some(ScanCursor::from_key(key).ok_or(ReconcileError::Cursor { segment })?);
            }
            None => {
                state.cursor = None;
                state.done = true;
            }
        }
        index.commit_scan_page(segment, &rows.users, &rows.unmirrorable, &state)?;
        let scanned = ScannedPage {
            segment,
            items,
            done: state.done,
        };
        Ok(Some((scanned, Some(state))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::operation::scan::{ScanInput, ScanOutput};
    use aws_sdk_dynamodb::types::TableDescription;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use usersync_function::{testing, DeleteScope};

    use super::*;

    fn config() -> Config {
        Config {
            key_prefix: "u/".into(),
            ..testing::config("b", DeleteScope::Object)
        }
    }

    fn user(name: &str) -> Item {
        HashMap::from([("name".to_owned(), AttributeValue::S(name.to_owned()))])
    }

    #[test]
    fn rows_hold_the_key_and_md5_and_unmirrorable_items_are_counted() {
        let long = "n".repeat(1100);
        let items = vec![
            user("ann"),
            user("a/b"),
            user(""),
            user(&long),
            HashMap::from([("name".to_owned(), AttributeValue::N("7".into()))]),
            HashMap::from([("id".to_owned(), AttributeValue::S("x".into()))]),
        ];
        let rows = page_rows(&items, &config());
        assert_eq!(
            rows.users,
            [
                ("u/ann/userdata".to_owned(), md5_of(br#"{"name":"ann"}"#)),
                ("u/a%2Fb/userdata".to_owned(), md5_of(br#"{"name":"a/b"}"#)),
            ]
        );
        let reasons: Vec<&str> = rows
            .unmirrorable
            .iter()
            .map(|u| u.reason.as_str())
            .collect();
        assert_eq!(reasons[0], "its name is empty");
        assert!(reasons[1].contains("over S3's limit"), "{}", reasons[1]);
        assert_eq!(
            reasons[2..],
            ["its name is not a string", "it has no name attribute"]
        );
        assert!(rows.unmirrorable[1].item.ends_with('…'));
        assert_eq!(rows.unmirrorable[3].item, r#"{"id":"x"}"#);
    }

    #[test]
    fn a_cursor_survives_the_checkpoint() {
        let key: Item = HashMap::from([
            ("name".to_owned(), AttributeValue::S("ann".into())),
            ("n".to_owned(), AttributeValue::N("4".into())),
            ("b".to_owned(), AttributeValue::B(Blob::new(vec![0, 255]))),
        ]);
        let cursor = ScanCursor::from_key(&key).unwrap();
        let text = serde_json::to_string(&cursor).unwrap();
        let back: ScanCursor = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_key(), Some(key));
        let odd = HashMap::from([("x".to_owned(), AttributeValue::Bool(true))]);
        assert_eq!(ScanCursor::from_key(&odd), None);
    }

    /// Every Scan request the mock saw.
    type Seen = Arc<Mutex<Vec<ScanInput>>>;

    /// A table of `pages` pages per segment, each of one user, recording every request.
    fn paged_table(pages: usize, seen: &Seen) -> DynamoTable {
        let seen = Arc::clone(seen);
        let scan = mock!(Client::scan)
            .match_requests(move |input| {
                seen.lock().unwrap().push(input.clone());
                true
            })
            .then_compute_output(move |input| {
                let segment = input.segment().unwrap_or(-1);
                let page = input
                    .exclusive_start_key()
                    .and_then(|key| key.get("page"))
                    .and_then(|page| page.as_n().ok())
                    .and_then(|page| page.parse::<usize>().ok())
                    .map_or(0, |page| page + 1);
                let name = format!("user-{segment}-{page}");
                let last = (page + 1 < pages).then(|| {
                    HashMap::from([
                        ("name".to_owned(), AttributeValue::S(name.clone())),
                        ("page".to_owned(), AttributeValue::N(page.to_string())),
                    ])
                });
                ScanOutput::builder()
                    .items(user(&name))
                    .set_last_evaluated_key(last)
                    .build()
            });
        let describe = mock!(Client::describe_table).then_output(|| {
            DescribeTableOutput::builder()
                .table(TableDescription::builder().item_count(12).build())
                .build()
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&scan, &describe]);
        DynamoTable::new(client, "users".into(), "name".into())
    }

    #[tokio::test]
    async fn scans_every_segment_consistently_and_resumes_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let parameters = super::super::index::Parameters {
            stack: "s".into(),
            table: "users".into(),
            bucket: "b".into(),
            key_prefix: "u/".into(),
            object_name: "userdata".into(),
            delete_scope: "object".into(),
            key_attribute: "name".into(),
            segments: 3,
            share: None,
        };
        let (index, _) = Index::open(dir.path(), &parameters, false).unwrap();
        let config = config();
        let seen = Seen::default();
        let table = paged_table(3, &seen);
        assert_eq!(table.approximate_items().await.unwrap(), Some(12));

        // Stop after the first two pages committed, as an interrupted run does.
        let first: Vec<ScannedPage> = scan_segments(&table, &index, &config, vec![0, 1, 2], 3)
            .take(2)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(first.len(), 2);
        let checkpoints: Vec<Option<Item>> = (0..3)
            .map(|s| index.segment(s).unwrap().cursor.and_then(|c| c.to_key()))
            .collect();
        assert!(checkpoints.iter().any(Option::is_some));
        let before = seen.lock().unwrap().len();

        let rest: Vec<ScannedPage> = scan_segments(&table, &index, &config, vec![0, 1, 2], 3)
            .map(Result::unwrap)
            .collect()
            .await;
        // Three pages per segment in all; each request consistent, with TotalSegments 3.
        assert_eq!(first.len() + rest.len(), 9);
        let requests = seen.lock().unwrap().clone();
        for request in &requests {
            assert_eq!(request.table_name(), Some("users"));
            assert_eq!(request.total_segments(), Some(3));
            assert_eq!(request.consistent_read(), Some(true));
        }
        let mut segments: Vec<i32> = requests.iter().filter_map(|r| r.segment()).collect();
        segments.sort_unstable();
        segments.dedup();
        assert_eq!(segments, [0, 1, 2]);
        // The resumed run continued each segment from its committed LastEvaluatedKey.
        for (segment, checkpoint) in checkpoints.iter().enumerate() {
            let resumed = requests[before..]
                .iter()
                .find(|r| r.segment() == Some(segment as i32))
                .unwrap();
            assert_eq!(resumed.exclusive_start_key(), checkpoint.as_ref());
        }
        for segment in 0..3 {
            let state = index.segment(segment).unwrap();
            assert!(state.done);
            assert_eq!(state.items, 3);
        }
    }
}
