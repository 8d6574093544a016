//! One user's repair: make the user's object what the table says now, and never undo a write
//! made while the repair runs.
//!
//! A repair writes from a consistent read of the user's item (or deletes when there is none),
//! then reads the item again. When it changed in between (the table was written, and the
//! function may already have mirrored the newer state before our write landed over it), it
//! writes again from the newer read, until two reads agree, a bounded number of rounds. The
//! last write therefore always comes from a read made after every write that preceded it
//! finished, so an older state can never be the one left in the bucket. An object is deleted
//! only when a consistent read found no item, and a user that appeared meanwhile is put back
//! by the next round.
//!
//! [`UserRepairer::repair_all`] repairs many users that way at once with their reads batched
//! ([`ItemReader::read_users`]; on DynamoDB, strongly consistent `BatchGetItem`): a batch read
//! gives each user's first write; a later batch read, of users whose writes have all
//! finished, verifies them; a user whose item changed in between is written again from that
//! read and verified alone, as above. Each user's writes and reads are in the single
//! repair's order, so the same holds for each of them, for two reads per hundred users.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures::future::BoxFuture;
use futures::StreamExt;
use usersync_function::key::{user_keys, UserKeys};
use usersync_function::{Config, DeleteScope, ObjectStore, StoreError};

use super::etag::{md5_of, Md5Digest};
use crate::stack::{aws_error, StackError};

/// An item as DynamoDB's SDK returns it.
pub type Item = HashMap<String, AttributeValue>;

/// Rounds of write-then-read before a user that keeps changing is given up on (and reported:
/// the function mirrors whatever comes next through the stream).
pub const MAX_ROUNDS: usize = 5;

/// Keys one `BatchGetItem` may ask for: "If you request more than 100 items, BatchGetItem
/// returns a ValidationException"
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html>).
pub const BATCH_READ_KEYS: usize = 100;

/// Requests of one `BatchGetItem` batch while keys keep coming back unprocessed, before the
/// read fails (the table is throttled far beyond what backing off absorbs).
const BATCH_READ_ATTEMPTS: u32 = 10;

/// Reads users' current items, consistently.
pub trait ItemReader: Sync {
    fn read_user(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Item>, UserRepairError>> + Send;

    /// The current items of `names`, in their order (`None`: not in the table), each read
    /// consistently after the call started. One read per user unless the table batches them.
    fn read_users(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Item>>, UserRepairError>> + Send {
        async move {
            let mut items = Vec::with_capacity(names.len());
            for name in names {
                items.push(self.read_user(name).await?);
            }
            Ok(items)
        }
    }
}

/// The users table, read by its hash key with strongly consistent GetItem.
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    key_attribute: String,
}

impl DynamoTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, key_attribute: String) -> Self {
        Self {
            client,
            table,
            key_attribute,
        }
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn key_attribute(&self) -> &str {
        &self.key_attribute
    }
}

impl ItemReader for DynamoTable {
    async fn read_user(&self, name: &str) -> Result<Option<Item>, UserRepairError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(&self.key_attribute, AttributeValue::S(name.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| {
                aws_error(format!("read user {name:?} from table {}", self.table), err)
            })?;
        Ok(output.item)
    }

    /// `BatchGetItem`, [`BATCH_READ_KEYS`] keys a request, with `ConsistentRead`: "By default,
    /// BatchGetItem performs eventually consistent reads on every table in the request. If you
    /// want strongly consistent reads instead, you can set ConsistentRead to true" (API
    /// reference above). A request may answer only part of its keys and return the rest as
    /// `UnprocessedKeys` ("If DynamoDB returns any unprocessed items, you should retry the
    /// batch operation on those items", with exponential backoff, same page), which are asked
    /// again after a backoff; a key asked twice in one request is refused, so names are asked
    /// once each.
    async fn read_users(&self, names: &[String]) -> Result<Vec<Option<Item>>, UserRepairError> {
        let distinct: Vec<&String> = names.iter().collect::<BTreeSet<_>>().into_iter().collect();
        let mut found: HashMap<String, Item> = HashMap::with_capacity(distinct.len());
        for chunk in distinct.chunks(BATCH_READ_KEYS) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|name| {
                    HashMap::from([(
                        self.key_attribute.clone(),
                        AttributeValue::S((*name).clone()),
                    )])
                })
                .collect();
            let mut attempt = 0;
            while !keys.is_empty() {
                if attempt == BATCH_READ_ATTEMPTS {
                    return Err(UserRepairError::Table(StackError::Aws {
                        action: format!("read {} users from table {}", chunk.len(), self.table),
                        message: format!(
                            "BatchGetItem still left {} keys unprocessed after {attempt} \
                             requests (the table's read capacity is exhausted)",
                            keys.len()
                        ),
                    }));
                }
                if attempt > 0 {
                    tokio::time::sleep(unprocessed_backoff(attempt)).await;
                }
                attempt += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .expect("the keys are set");
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|err| {
                        aws_error(
                            format!("read {} users from table {}", chunk.len(), self.table),
                            err,
                        )
                    })?;
                let (responses, unprocessed) = (output.responses, output.unprocessed_keys);
                let items = responses
                    .and_then(|mut tables| tables.remove(&self.table))
                    .unwrap_or_default();
                for item in items {
                    if let Some(AttributeValue::S(name)) = item.get(&self.key_attribute) {
                        found.insert(name.clone(), item);
                    }
                }
                keys = unprocessed
                    .and_then(|mut tables| tables.remove(&self.table))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
        }
        // Each item moves out of the map; only a name asked twice costs a copy.
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(names.len());
        let mut items: Vec<Option<Item>> = Vec::with_capacity(names.len());
        for (at, name) in names.iter().enumerate() {
            let item = match first.get(name.as_str()) {
                Some(&earlier) => items[earlier].clone(),
                None => {
                    first.insert(name, at);
                    found.remove(name)
                }
            };
            items.push(item);
        }
        Ok(items)
    }
}

/// The wait before asking again for keys a `BatchGetItem` left unprocessed: 50 ms doubling,
/// at most about 3 s.
fn unprocessed_backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(6))
}

/// Runs between a repair's read and its write. Tests inject concurrent writes through it, at
/// exactly the moment a repair is most exposed to them.
pub trait RepairHook: Send + Sync {
    fn before_write<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
}

/// The body the function writes for `item`.
pub fn expected_body(item: &Item) -> Vec<u8> {
    let image: HashMap<String, serde_dynamo::AttributeValue> = item
        .iter()
        .map(|(k, v)| (k.clone(), serde_dynamo::AttributeValue::from(v.clone())))
        .collect();
    usersync_function::image::object_body(&image)
}

/// Whether the user is in the table, as the repair left their objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// The object holds the item's body.
    Present,
    /// The object (or, with `DELETE_SCOPE=prefix`, everything under the user's prefix) is gone.
    Absent,
}

/// What one repair did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairedUser {
    pub name: String,
    pub state: UserState,
    /// Writes (puts or deletes) made: more than one when the item changed meanwhile.
    pub writes: usize,
    /// Objects deleted (a prefix delete may remove several).
    pub deleted_objects: usize,
}

/// Why a user could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum UserRepairError {
    #[error(transparent)]
    Table(#[from] StackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user {name:?} kept changing through {rounds} repairs; the function mirrors the next change from the stream, or run the repair again")]
    StillChanging { name: String, rounds: usize },
    #[error("user {name:?} cannot be mirrored: {reason}; the function skips it too")]
    Unmirrorable { name: String, reason: String },
    /// A read of a whole batch failed: every user of the batch not yet repaired fails with it.
    #[error(transparent)]
    Batch(Arc<UserRepairError>),
}

/// Repairs users with the function's settings, store and the table.
pub struct UserRepairer<'a, R, S> {
    pub reader: &'a R,
    pub store: &'a S,
    pub config: &'a Config,
    pub hook: Option<&'a dyn RepairHook>,
}

impl<R: ItemReader, S: ObjectStore> UserRepairer<'_, R, S> {
    /// The user's keys under the function's settings.
    pub fn keys(&self, name: &str) -> Result<UserKeys, UserRepairError> {
        user_keys(&self.config.key_prefix, name, &self.config.object_name).map_err(|err| {
            UserRepairError::Unmirrorable {
                name: name.to_owned(),
                reason: err.to_string(),
            }
        })
    }

    /// Repairs `name` from a fresh consistent read.
    pub async fn repair(&self, name: &str) -> Result<RepairedUser, UserRepairError> {
        let current = self.reader.read_user(name).await?;
        self.repair_from(name, current).await
    }

    /// Repairs `name` from `current`, a consistent read the caller made (a scan's item, or
    /// `None` when the user was not in the table).
    pub async fn repair_from(
        &self,
        name: &str,
        current: Option<Item>,
    ) -> Result<RepairedUser, UserRepairError> {
        let keys = self.keys(name)?;
        let mut repaired = RepairedUser {
            name: name.to_owned(),
            state: UserState::Absent,
            writes: 0,
            deleted_objects: 0,
        };
        self.rounds(
            &keys,
            current.as_ref().map(expected_body),
            &mut repaired,
            MAX_ROUNDS,
        )
        .await?;
        Ok(repaired)
    }

    /// Writes `body` (deletes when `None`), reads the user again, and writes again while the
    /// read differs from what was written, at most `rounds` writes in all.
    async fn rounds(
        &self,
        keys: &UserKeys,
        mut body: Option<Vec<u8>>,
        repaired: &mut RepairedUser,
        rounds: usize,
    ) -> Result<(), UserRepairError> {
        let name = repaired.name.clone();
        for _ in 0..rounds {
            self.write(&name, keys, body.as_ref(), repaired).await?;
            let again = self
                .reader
                .read_user(&name)
                .await?
                .as_ref()
                .map(expected_body);
            if again == body {
                return Ok(());
            }
            body = again;
        }
        Err(UserRepairError::StillChanging {
            name,
            rounds: repaired.writes,
        })
    }

    /// Repairs the distinct users `names` as [`Self::repair`] repairs each, with their reads
    /// batched ([`ItemReader::read_users`], [`BATCH_READ_KEYS`] users a read).
    ///
    /// The users flow through three steps, each batch of users reaching the next as soon as
    /// it can: a batch read (the next batch is read while the writes of the one before run);
    /// each user's write, `writes_at_once` at a time; and a batch read of users whose writes
    /// have finished, which verifies them. A user whose item changed between its write and
    /// that read is written again from it and goes on alone ([`Self::repair_from`]'s rounds,
    /// `GetItem` after each write): rare, and as safe. The results are in the order of `names`.
    pub async fn repair_all(
        &self,
        names: &[String],
        writes_at_once: usize,
    ) -> Vec<Result<RepairedUser, UserRepairError>> {
        let mut results: Vec<Option<Result<RepairedUser, UserRepairError>>> =
            names.iter().map(|_| None).collect();
        let mut batches: Vec<Vec<Repairing>> = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let keys = match self.keys(name) {
                Ok(keys) => keys,
                Err(err) => {
                    results[index] = Some(Err(err));
                    continue;
                }
            };
            if batches
                .last()
                .is_none_or(|batch| batch.len() == BATCH_READ_KEYS)
            {
                batches.push(Vec::with_capacity(BATCH_READ_KEYS));
            }
            if let Some(batch) = batches.last_mut() {
                batch.push(Repairing {
                    index,
                    keys,
                    body: None,
                    repaired: RepairedUser {
                        name: name.clone(),
                        state: UserState::Absent,
                        writes: 0,
                        deleted_objects: 0,
                    },
                });
            }
        }
        let finished: Vec<(usize, Result<RepairedUser, UserRepairError>)> =
            futures::stream::iter(batches)
                .map(|batch| self.read_batch(batch))
                .buffered(BATCHES_AHEAD)
                .flat_map(futures::stream::iter)
                .map(|step| self.first_write(step))
                .buffer_unordered(writes_at_once.max(1))
                .chunks(BATCH_READ_KEYS)
                .map(|steps| self.verify(steps))
                .buffered(BATCHES_AHEAD)
                .flat_map(futures::stream::iter)
                .collect()
                .await;
        for (index, result) in finished {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|result| result.expect("every user ends with a result"))
            .collect()
    }

    /// The first step of [`Self::repair_all`]: one read of a batch, each user's body to write.
    async fn read_batch(&self, mut batch: Vec<Repairing>) -> Vec<Read> {
        let names: Vec<String> = batch.iter().map(|p| p.repaired.name.clone()).collect();
        match self.reader.read_users(&names).await {
            Ok(items) => {
                for (pending, item) in batch.iter_mut().zip(items) {
                    pending.body = item.as_ref().map(expected_body);
                }
                batch.into_iter().map(Read::Write).collect()
            }
            Err(err) => failed_batch(batch, err)
                .map(|(index, result)| Read::Done(index, result))
                .collect(),
        }
    }

    /// The second step: the user's write, from the batch's read.
    async fn first_write(&self, read: Read) -> Wrote {
        let mut pending = match read {
            Read::Write(pending) => pending,
            Read::Done(index, result) => return Wrote::Done(index, result),
        };
        let name = pending.repaired.name.clone();
        let body = pending.body.take();
        match self
            .write(&name, &pending.keys, body.as_ref(), &mut pending.repaired)
            .await
        {
            Ok(()) => Wrote::Written {
                digest: body.as_deref().map(md5_of),
                pending,
            },
            Err(err) => Wrote::Done(pending.index, Err(err.into())),
        }
    }

    /// The third step: one read of users whose writes have all finished; those whose item
    /// is what was written are repaired, the others are written again from this read. What
    /// was written is compared by its MD5, as the index compares bodies, so that only digests
    /// wait for this read.
    async fn verify(
        &self,
        wrote: Vec<Wrote>,
    ) -> Vec<(usize, Result<RepairedUser, UserRepairError>)> {
        let mut finished = Vec::with_capacity(wrote.len());
        let mut written = Vec::with_capacity(wrote.len());
        for step in wrote {
            match step {
                Wrote::Done(index, result) => finished.push((index, result)),
                Wrote::Written { pending, digest } => written.push((pending, digest)),
            }
        }
        if written.is_empty() {
            return finished;
        }
        let names: Vec<String> = written
            .iter()
            .map(|(pending, _)| pending.repaired.name.clone())
            .collect();
        let items = match self.reader.read_users(&names).await {
            Ok(items) => items,
            Err(err) => {
                let pending = written.into_iter().map(|(pending, _)| pending).collect();
                finished.extend(failed_batch(pending, err));
                return finished;
            }
        };
        for ((mut pending, digest), item) in written.into_iter().zip(items) {
            let body = item.as_ref().map(expected_body);
            let result = if body.as_deref().map(md5_of) == digest {
                Ok(pending.repaired)
            } else {
                let rounds = MAX_ROUNDS.saturating_sub(pending.repaired.writes);
                self.rounds(&pending.keys, body, &mut pending.repaired, rounds)
                    .await
                    .map(|()| pending.repaired)
            };
            finished.push((pending.index, result));
        }
        finished
    }

    /// Puts `body` as the user's object, or deletes the user's objects when there is none,
    /// after the hook.
    async fn write(
        &self,
        name: &str,
        keys: &UserKeys,
        body: Option<&Vec<u8>>,
        repaired: &mut RepairedUser,
    ) -> Result<(), StoreError> {
        if let Some(hook) = self.hook {
            hook.before_write(name).await;
        }
        match body {
            Some(body) => {
                self.store.put(&keys.object, body.clone()).await?;
                repaired.state = UserState::Present;
            }
            None => {
                repaired.deleted_objects += self.delete(keys).await?;
                repaired.state = UserState::Absent;
            }
        }
        repaired.writes += 1;
        Ok(())
    }

    /// Deletes an absent user's objects as a REMOVE would under the delete scope.
    async fn delete(&self, keys: &UserKeys) -> Result<usize, StoreError> {
        match self.config.delete_scope {
            DeleteScope::Object => self.store.delete(&keys.object).await.map(|()| 1),
            DeleteScope::Prefix => self.store.delete_prefix(&keys.prefix).await,
        }
    }
}

/// Batches of [`UserRepairer::repair_all`] read ahead of the writes, and verified at once.
const BATCHES_AHEAD: usize = 2;

/// One user of [`UserRepairer::repair_all`].
struct Repairing {
    /// Where the user is in the names asked for.
    index: usize,
    keys: UserKeys,
    /// What to write: the item's body, `None` to delete.
    body: Option<Vec<u8>>,
    repaired: RepairedUser,
}

/// A user of [`UserRepairer::repair_all`] after the batch read.
enum Read {
    /// To be written.
    Write(Repairing),
    /// Failed.
    Done(usize, Result<RepairedUser, UserRepairError>),
}

/// A user of [`UserRepairer::repair_all`] after the first write.
enum Wrote {
    /// Written: the MD5 of the body put (`None`: deleted), to compare with the next read.
    Written {
        pending: Repairing,
        digest: Option<Md5Digest>,
    },
    /// Failed.
    Done(usize, Result<RepairedUser, UserRepairError>),
}

/// Every user of a batch whose read failed fails with that error.
fn failed_batch(
    batch: Vec<Repairing>,
    err: UserRepairError,
) -> impl Iterator<Item = (usize, Result<RepairedUser, UserRepairError>)> {
    let shared = Arc::new(err);
    batch.into_iter().map(move |pending| {
        (
            pending.index,
            Err(UserRepairError::Batch(Arc::clone(&shared))),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::{Arc, Mutex};

    use usersync_function::testing::MemoryStore;

    use super::*;

    /// A table in memory.
    #[derive(Clone, Default)]
    struct FakeTable(Arc<Mutex<HashMap<String, Item>>>);

    impl FakeTable {
        fn set(&self, name: &str, age: Option<u32>) {
            let mut items = self.0.lock().unwrap();
            match age {
                Some(age) => {
                    items.insert(name.to_owned(), item(name, age));
                }
                None => {
                    items.remove(name);
                }
            }
        }
    }

    impl ItemReader for FakeTable {
        async fn read_user(&self, name: &str) -> Result<Option<Item>, UserRepairError> {
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
    }

    fn item(name: &str, age: u32) -> Item {
        HashMap::from([
            ("name".to_owned(), AttributeValue::S(name.to_owned())),
            ("age".to_owned(), AttributeValue::N(age.to_string())),
        ])
    }

    fn repairer<'a, R: ItemReader, S: ObjectStore>(
        reader: &'a R,
        store: &'a S,
        config: &'a Config,
        hook: Option<&'a dyn RepairHook>,
    ) -> UserRepairer<'a, R, S> {
        UserRepairer {
            reader,
            store,
            config,
            hook,
        }
    }

    fn config(scope: DeleteScope) -> Config {
        Config {
            bucket: "b".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
            delete_scope: scope,
            max_concurrency: NonZeroUsize::new(4).unwrap(),
            key_attribute: "name".into(),
            force_path_style: false,
        }
    }

    /// Between the repair's read and its write, the table is written and the function
    /// mirrors the new state, `times` times (a user being edited while the repair runs).
    struct ConcurrentWriter<'a> {
        table: FakeTable,
        store: &'a MemoryStore,
        next: Mutex<Vec<Option<u32>>>,
    }

    impl RepairHook for ConcurrentWriter<'_> {
        fn before_write<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let Some(age) = self.next.lock().unwrap().pop() else {
                    return;
                };
                self.table.set(name, age);
                let key = format!("{name}/userdata");
                match age {
                    Some(age) => self.store.put(&key, expected_body(&item(name, age))).await,
                    None => self.store.delete(&key).await,
                }
                .unwrap();
            })
        }
    }

    fn body(store: &MemoryStore, key: &str) -> Option<serde_json::Value> {
        store.json_body(key)
    }

    #[tokio::test]
    async fn a_missing_user_is_put_and_an_absent_one_deleted() {
        let table = FakeTable::default();
        table.set("ann", Some(30));
        let store = MemoryStore::with_objects(&[("bob/userdata", "{}")]);
        let config = config(DeleteScope::Object);
        let repairer = repairer(&table, &store, &config, None);
        let ann = repairer.repair("ann").await.unwrap();
        assert_eq!((ann.state, ann.writes), (UserState::Present, 1));
        assert_eq!(
            body(&store, "ann/userdata"),
            Some(serde_json::json!({"name": "ann", "age": 30}))
        );
        let bob = repairer.repair("bob").await.unwrap();
        assert_eq!((bob.state, bob.deleted_objects), (UserState::Absent, 1));
        assert_eq!(body(&store, "bob/userdata"), None);
    }

    #[tokio::test]
    async fn a_write_made_between_the_read_and_the_repair_s_write_is_not_undone() {
        // The repair read ann at 30 (a scan); before its put lands, ann becomes 31 and the
        // function mirrors 31. The repair's put of 30 overwrites it; only the second read
        // (31 ≠ 30) puts 31 back. Without it the bucket would keep 30.
        let table = FakeTable::default();
        table.set("ann", Some(30));
        let store = MemoryStore::default();
        let writer = ConcurrentWriter {
            table: table.clone(),
            store: &store,
            next: Mutex::new(vec![Some(31)]),
        };
        let config = config(DeleteScope::Object);
        let repairer = repairer(&table, &store, &config, Some(&writer));
        let repaired = repairer
            .repair_from("ann", Some(item("ann", 30)))
            .await
            .unwrap();
        assert_eq!(repaired.writes, 2);
        assert_eq!(
            body(&store, "ann/userdata"),
            Some(serde_json::json!({"name": "ann", "age": 31}))
        );
    }

    #[tokio::test]
    async fn an_orphan_whose_user_appears_meanwhile_gets_the_user_s_object() {
        // The listing found bob's object without bob in the table: an orphan. Bob is
        // inserted before the delete lands; the repair must leave bob's object, not delete it.
        let table = FakeTable::default();
        let store = MemoryStore::with_objects(&[("bob/userdata", "{}")]);
        let writer = ConcurrentWriter {
            table: table.clone(),
            store: &store,
            next: Mutex::new(vec![Some(7)]),
        };
        let config = config(DeleteScope::Object);
        let repairer = repairer(&table, &store, &config, Some(&writer));
        let repaired = repairer.repair_from("bob", None).await.unwrap();
        assert_eq!(repaired.state, UserState::Present);
        assert_eq!(
            body(&store, "bob/userdata"),
            Some(serde_json::json!({"name": "bob", "age": 7}))
        );
    }

    #[tokio::test]
    async fn a_user_deleted_meanwhile_stays_deleted_and_prefix_scope_clears_the_prefix() {
        let table = FakeTable::default();
        table.set("cy", Some(1));
        let store = MemoryStore::with_objects(&[("cy/avatar.png", "x")]);
        let writer = ConcurrentWriter {
            table: table.clone(),
            store: &store,
            next: Mutex::new(vec![None]),
        };
        let config = config(DeleteScope::Prefix);
        let repairer = repairer(&table, &store, &config, Some(&writer));
        let repaired = repairer.repair("cy").await.unwrap();
        assert_eq!(repaired.state, UserState::Absent);
        assert!(store.snapshot().is_empty(), "{:?}", store.snapshot());
    }

    /// A table that applies `change` just before answering its `at`th batch read: writes to
    /// the table landing between a batch's writes and the read that verifies them.
    struct ChangingBeforeRead {
        table: FakeTable,
        batch_reads: std::sync::atomic::AtomicUsize,
        at: usize,
        change: fn(&FakeTable),
    }

    impl ItemReader for ChangingBeforeRead {
        async fn read_user(&self, name: &str) -> Result<Option<Item>, UserRepairError> {
            self.table.read_user(name).await
        }

        async fn read_users(&self, names: &[String]) -> Result<Vec<Option<Item>>, UserRepairError> {
            let reads = 1 + self
                .batch_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if reads == self.at {
                (self.change)(&self.table);
            }
            let items = self.table.0.lock().unwrap();
            Ok(names.iter().map(|name| items.get(name).cloned()).collect())
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[tokio::test]
    async fn the_batched_verification_re_repairs_a_user_changed_between_the_write_and_the_verify_read(
    ) {
        // ann, bob and dee are in the table, cy is not (an orphan's object is in the bucket).
        // After the batch's writes and before the read that verifies them, ann is updated,
        // bob removed and cy created. Only those three are written again, each from the
        // verification's read; without that round the bucket would keep what the first
        // read said.
        let table = FakeTable::default();
        table.set("ann", Some(30));
        table.set("bob", Some(40));
        table.set("dee", Some(50));
        let reader = ChangingBeforeRead {
            table: table.clone(),
            batch_reads: Default::default(),
            at: 2,
            change: |table| {
                table.set("ann", Some(31));
                table.set("bob", None);
                table.set("cy", Some(7));
            },
        };
        let store = MemoryStore::with_objects(&[("cy/userdata", "{}")]);
        let config = config(DeleteScope::Object);
        let repairer = repairer(&reader, &store, &config, None);
        let results = repairer
            .repair_all(&names(&["ann", "bob", "cy", "dee"]), 2)
            .await;
        let outcomes: Vec<(String, UserState, usize)> = results
            .into_iter()
            .map(|result| {
                let repaired = result.unwrap();
                (repaired.name, repaired.state, repaired.writes)
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("ann".to_owned(), UserState::Present, 2),
                ("bob".to_owned(), UserState::Absent, 2),
                ("cy".to_owned(), UserState::Present, 2),
                ("dee".to_owned(), UserState::Present, 1),
            ]
        );
        assert_eq!(
            body(&store, "ann/userdata"),
            Some(serde_json::json!({"name": "ann", "age": 31}))
        );
        assert_eq!(body(&store, "bob/userdata"), None);
        assert_eq!(
            body(&store, "cy/userdata"),
            Some(serde_json::json!({"name": "cy", "age": 7}))
        );
        assert_eq!(
            body(&store, "dee/userdata"),
            Some(serde_json::json!({"name": "dee", "age": 50}))
        );
        // The batch's read and its verification; the three written again were verified one
        // at a time.
        assert_eq!(
            reader.batch_reads.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[tokio::test]
    async fn a_batch_races_with_writes_before_each_write_as_one_repair_does() {
        // The single repair's races, through the batch: each user changed (and mirrored by
        // the function) between the batch's read and its write.
        let table = FakeTable::default();
        table.set("ann", Some(30));
        table.set("cy", Some(1));
        let store = MemoryStore::with_objects(&[("bob/userdata", "{}")]);
        let writer = ConcurrentWriter {
            table: table.clone(),
            store: &store,
            // Popped from the end: ann becomes 31, bob appears, cy goes.
            next: Mutex::new(vec![None, Some(7), Some(31)]),
        };
        let config = config(DeleteScope::Object);
        let repairer = repairer(&table, &store, &config, Some(&writer));
        let results = repairer.repair_all(&names(&["ann", "bob", "cy"]), 1).await;
        let states: Vec<UserState> = results.into_iter().map(|r| r.unwrap().state).collect();
        assert_eq!(
            states,
            [UserState::Present, UserState::Present, UserState::Absent]
        );
        assert_eq!(
            body(&store, "ann/userdata"),
            Some(serde_json::json!({"name": "ann", "age": 31}))
        );
        assert_eq!(
            body(&store, "bob/userdata"),
            Some(serde_json::json!({"name": "bob", "age": 7}))
        );
        assert_eq!(body(&store, "cy/userdata"), None);
    }

    /// A reader whose batch reads fail from the `at`th on.
    struct FailingFrom {
        table: FakeTable,
        batch_reads: std::sync::atomic::AtomicUsize,
        at: usize,
    }

    impl ItemReader for FailingFrom {
        async fn read_user(&self, name: &str) -> Result<Option<Item>, UserRepairError> {
            self.table.read_user(name).await
        }

        async fn read_users(&self, names: &[String]) -> Result<Vec<Option<Item>>, UserRepairError> {
            let reads = 1 + self
                .batch_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if reads >= self.at {
                return Err(UserRepairError::Table(StackError::Aws {
                    action: "read 2 users from table users".to_owned(),
                    message: "ServiceUnavailable: try later".to_owned(),
                }));
            }
            let items = self.table.0.lock().unwrap();
            Ok(names.iter().map(|name| items.get(name).cloned()).collect())
        }
    }

    #[tokio::test]
    async fn a_failed_batch_read_fails_every_user_not_yet_repaired_and_an_unmirrorable_name_alone()
    {
        let table = FakeTable::default();
        table.set("ann", Some(30));
        let reader = FailingFrom {
            table: table.clone(),
            batch_reads: Default::default(),
            at: 2,
        };
        let store = MemoryStore::default();
        let config = config(DeleteScope::Object);
        let repairer = repairer(&reader, &store, &config, None);
        let long = "n".repeat(1100);
        let results = repairer.repair_all(&names(&["ann", &long, "bob"]), 4).await;
        let errors: Vec<String> = results
            .iter()
            .map(|r| crate::errors::chain(r.as_ref().unwrap_err()))
            .collect();
        assert!(
            errors[0].contains("ServiceUnavailable") && errors[2] == errors[0],
            "{errors:?}"
        );
        assert!(errors[1].contains("cannot be mirrored"), "{errors:?}");
        // Written once, from the first read; never verified, so reported as failed.
        assert!(store.json_body("ann/userdata").is_some());
    }

    #[tokio::test]
    async fn batch_reads_ask_consistently_once_per_name_and_ask_again_for_unprocessed_keys() {
        use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
        use aws_sdk_dynamodb::Client;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};

        let seen: Arc<Mutex<Vec<BatchGetItemInput>>> = Arc::default();
        let recorded = Arc::clone(&seen);
        let rule = mock!(Client::batch_get_item)
            .match_requests(move |input| {
                recorded.lock().unwrap().push(input.clone());
                true
            })
            .then_compute_output(|input| {
                let keys = input
                    .request_items()
                    .and_then(|tables| tables.get("users"))
                    .map(|asked| asked.keys().to_vec())
                    .unwrap_or_default();
                // Answers the first key asked (when it is a user) and leaves the rest
                // unprocessed, as a throttled table does.
                let first = keys[0].clone();
                let mut output = BatchGetItemOutput::builder();
                if first["name"].as_s().unwrap() != "cy" {
                    let mut found = first.clone();
                    found.insert("age".to_owned(), AttributeValue::N("1".to_owned()));
                    output = output.responses("users", vec![found]);
                }
                if keys.len() > 1 {
                    output = output.unprocessed_keys(
                        "users",
                        KeysAndAttributes::builder()
                            .set_keys(Some(keys[1..].to_vec()))
                            .consistent_read(true)
                            .build()
                            .unwrap(),
                    );
                }
                output.build()
            });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&rule]);
        let table = DynamoTable::new(client, "users".into(), "name".into());
        let items = table
            .read_users(&names(&["bob", "ann", "cy", "ann"]))
            .await
            .unwrap();
        let ages: Vec<Option<&str>> = items
            .iter()
            .map(|item| item.as_ref().map(|i| i["age"].as_n().unwrap().as_str()))
            .collect();
        assert_eq!(ages, [Some("1"), Some("1"), None, Some("1")]);
        let requests = seen.lock().unwrap();
        let asked: Vec<(Vec<&str>, Option<bool>)> = requests
            .iter()
            .map(|input| {
                let asked = &input.request_items().unwrap()["users"];
                let names = asked
                    .keys()
                    .iter()
                    .map(|key| key["name"].as_s().unwrap().as_str())
                    .collect();
                (names, asked.consistent_read())
            })
            .collect();
        assert_eq!(
            asked,
            [
                (vec!["ann", "bob", "cy"], Some(true)),
                (vec!["bob", "cy"], Some(true)),
                (vec!["cy"], Some(true)),
            ]
        );
    }

    #[tokio::test]
    async fn a_user_that_never_settles_is_given_up_on_by_name() {
        let table = FakeTable::default();
        let store = MemoryStore::default();
        let writer = ConcurrentWriter {
            table: table.clone(),
            store: &store,
            next: Mutex::new((0..20).map(Some).collect()),
        };
        let config = config(DeleteScope::Object);
        let repairer = repairer(&table, &store, &config, Some(&writer));
        let err = repairer.repair("dee").await.unwrap_err();
        assert!(
            matches!(err, UserRepairError::StillChanging { ref name, rounds } if name == "dee" && rounds == MAX_ROUNDS),
            "{err}"
        );
    }
}
