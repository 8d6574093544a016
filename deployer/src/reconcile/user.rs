//! One user's repair: make the user's object what the table says now, and never undo a write
//! made while the repair runs.
//!
//! A repair writes from a consistent read of the user's item (or deletes when there is none),
//! then reads the item again. When it changed in between (the table was written, and the
//! function may already have mirrored the newer state before our write landed over it), it
//! writes again from the newer read, until two reads agree, a bounded number of rounds. The
//! last write therefore always comes from a read made after every write that preceded it
//! finished, so an older state can never be the one left in the bucket.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::BoxFuture;
use usersync_function::key::{user_keys, UserKeys};
use usersync_function::{Config, DeleteScope, ObjectStore, StoreError};

use crate::stack::{aws_error, StackError};

/// An item as DynamoDB's SDK returns it.
pub type Item = HashMap<String, AttributeValue>;

/// Rounds of write-then-read before a user that keeps changing is given up on (and reported:
/// the function mirrors whatever comes next through the stream).
pub const MAX_ROUNDS: usize = 5;

/// Reads one user's current item, consistently.
pub trait ItemReader: Sync {
    fn read_user(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Item>, UserRepairError>> + Send;
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
        mut current: Option<Item>,
    ) -> Result<RepairedUser, UserRepairError> {
        let keys = self.keys(name)?;
        let mut repaired = RepairedUser {
            name: name.to_owned(),
            state: UserState::Absent,
            writes: 0,
            deleted_objects: 0,
        };
        for _ in 0..MAX_ROUNDS {
            if let Some(hook) = self.hook {
                hook.before_write(name).await;
            }
            let body = current.as_ref().map(expected_body);
            match &body {
                Some(body) => {
                    self.store.put(&keys.object, body.clone()).await?;
                    repaired.state = UserState::Present;
                }
                None => {
                    repaired.deleted_objects += self.delete(&keys).await?;
                    repaired.state = UserState::Absent;
                }
            }
            repaired.writes += 1;
            let again = self.reader.read_user(name).await?;
            if again.as_ref().map(expected_body) == body {
                return Ok(repaired);
            }
            current = again;
        }
        Err(UserRepairError::StillChanging {
            name: name.to_owned(),
            rounds: MAX_ROUNDS,
        })
    }

    /// Deletes an absent user's objects as a REMOVE would under the delete scope.
    async fn delete(&self, keys: &UserKeys) -> Result<usize, StoreError> {
        match self.config.delete_scope {
            DeleteScope::Object => self.store.delete(&keys.object).await.map(|()| 1),
            DeleteScope::Prefix => self.store.delete_prefix(&keys.prefix).await,
        }
    }
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
        let repairer = UserRepairer {
            reader: &table,
            store: &store,
            config: &config,
            hook: None,
        };
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
        let repairer = UserRepairer {
            reader: &table,
            store: &store,
            config: &config,
            hook: Some(&writer),
        };
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
        let repairer = UserRepairer {
            reader: &table,
            store: &store,
            config: &config,
            hook: Some(&writer),
        };
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
        let repairer = UserRepairer {
            reader: &table,
            store: &store,
            config: &config,
            hook: Some(&writer),
        };
        let repaired = repairer.repair("cy").await.unwrap();
        assert_eq!(repaired.state, UserState::Absent);
        assert!(store.snapshot().is_empty(), "{:?}", store.snapshot());
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
        let repairer = UserRepairer {
            reader: &table,
            store: &store,
            config: &config,
            hook: Some(&writer),
        };
        let err = repairer.repair("dee").await.unwrap_err();
        assert!(
            matches!(err, UserRepairError::StillChanging { ref name, rounds } if name == "dee" && rounds == MAX_ROUNDS),
            "{err}"
        );
    }
}
