//! An in-memory table and bucket for the reconcile's tests: paged like DynamoDB and S3, split
//! into scan segments, with failures injected after a number of requests (an interrupted run).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use usersync_function::testing::MemoryStore;

use super::bucket::{BucketReader, ListPage, ListedObject};
use super::etag::{md5_of, BucketEncryption, Md5Digest};
use super::scan::{ScanPage, TableScanner};
use super::share::stable_hash;
use super::user::{Item, ItemReader, UserRepairError};
use crate::stack::StackError;

/// The fake table's own key attribute: every item has it, as DynamoDB items have their key.
pub const ID: &str = "id";

/// Requests left before a fake fails them all: `usize::MAX` never.
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    pub fn unlimited() -> Self {
        Self(AtomicUsize::new(usize::MAX))
    }

    pub fn set(&self, requests: usize) {
        self.0.store(requests, Ordering::SeqCst);
    }

    fn spend(&self, action: &str) -> Result<(), StackError> {
        let left = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left.saturating_sub(1))
            })
            .unwrap_or(0);
        if left == 0 {
            return Err(StackError::Aws {
                action: action.to_owned(),
                message: "injected interruption".to_owned(),
            });
        }
        Ok(())
    }
}

/// A users table: items by id, scanned in segments by the id's hash, a few items a page.
pub struct FakeTable {
    pub items: Mutex<BTreeMap<String, Item>>,
    pub page_size: usize,
    pub budget: Budget,
    /// Every scan request: segment, total, the start id.
    pub scans: Mutex<Vec<(u32, u32, Option<String>)>>,
    /// Reads of one user, and reads of several at once.
    pub reads: AtomicUsize,
    pub batch_reads: AtomicUsize,
    key_attribute: String,
}

impl FakeTable {
    pub fn new(key_attribute: &str, page_size: usize) -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::default(),
            page_size,
            budget: Budget::unlimited(),
            scans: Mutex::default(),
            reads: AtomicUsize::new(0),
            batch_reads: AtomicUsize::new(0),
            key_attribute: key_attribute.to_owned(),
        })
    }

    /// Puts a user `name` with `fields` (numbers).
    pub fn put_user(&self, name: &str, fields: &[(&str, u32)]) {
        let mut item: Item = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), AttributeValue::N(v.to_string())))
            .collect();
        item.insert(
            self.key_attribute.clone(),
            AttributeValue::S(name.to_owned()),
        );
        self.put(name, item);
    }

    /// Puts any item under the table key `id`.
    pub fn put(&self, id: &str, mut item: Item) {
        item.insert(ID.to_owned(), AttributeValue::S(id.to_owned()));
        self.items.lock().unwrap().insert(id.to_owned(), item);
    }

    pub fn remove(&self, id: &str) {
        self.items.lock().unwrap().remove(id);
    }

    pub fn snapshot(&self) -> BTreeMap<String, Item> {
        self.items.lock().unwrap().clone()
    }
}

impl ItemReader for Arc<FakeTable> {
    async fn read_user(&self, name: &str) -> Result<Option<Item>, UserRepairError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.items.lock().unwrap().get(name).cloned())
    }

    /// All at one moment, as one request would.
    async fn read_users(&self, names: &[String]) -> Result<Vec<Option<Item>>, UserRepairError> {
        self.batch_reads.fetch_add(1, Ordering::SeqCst);
        let items = self.items.lock().unwrap();
        Ok(names.iter().map(|name| items.get(name).cloned()).collect())
    }
}

impl TableScanner for Arc<FakeTable> {
    async fn scan_page(
        &self,
        segment: u32,
        total_segments: u32,
        start: Option<Item>,
    ) -> Result<ScanPage, StackError> {
        let start_id = start
            .as_ref()
            .and_then(|key| key.get(ID))
            .and_then(|id| id.as_s().ok())
            .cloned();
        self.scans
            .lock()
            .unwrap()
            .push((segment, total_segments, start_id.clone()));
        self.budget.spend("scan")?;
        let items = self.items.lock().unwrap();
        let page: Vec<Item> = items
            .iter()
            .filter(|(id, _)| stable_hash(id) % u64::from(total_segments) == u64::from(segment))
            .filter(|(id, _)| start_id.as_ref().is_none_or(|start| *id > start))
            .take(self.page_size + 1)
            .map(|(_, item)| item.clone())
            .collect();
        let more = page.len() > self.page_size;
        let page: Vec<Item> = page.into_iter().take(self.page_size).collect();
        let last_evaluated_key = more.then(|| {
            let last = page.last().and_then(|item| item.get(ID)).cloned();
            Item::from([(ID.to_owned(), last.unwrap_or(AttributeValue::Null(true)))])
        });
        Ok(ScanPage {
            items: page,
            last_evaluated_key,
        })
    }

    async fn approximate_items(&self) -> Result<Option<u64>, StackError> {
        Ok(Some(self.items.lock().unwrap().len() as u64))
    }
}

/// How the fake bucket's ETags look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Etags {
    /// The MD5 of the body, as SSE-S3 and plaintext objects have.
    Md5,
    /// Opaque, as under SSE-KMS.
    Opaque,
}

/// A bucket over a [`MemoryStore`] (the store repairs write to), listed a few keys a page.
pub struct FakeBucket {
    pub store: Arc<MemoryStore>,
    pub page_size: usize,
    pub encryption: BucketEncryption,
    pub etags: Etags,
    /// Listing requests left.
    pub budget: Budget,
    /// Body reads left.
    pub read_budget: Budget,
    /// Every listing request's StartAfter.
    pub listings: Mutex<Vec<Option<String>>>,
    pub reads: Mutex<Vec<String>>,
}

impl FakeBucket {
    pub fn new(store: Arc<MemoryStore>, page_size: usize) -> Self {
        Self {
            store,
            page_size,
            encryption: BucketEncryption::SseS3,
            etags: Etags::Md5,
            budget: Budget::unlimited(),
            read_budget: Budget::unlimited(),
            listings: Mutex::default(),
            reads: Mutex::default(),
        }
    }
}

impl BucketReader for FakeBucket {
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StackError> {
        self.listings
            .lock()
            .unwrap()
            .push(start_after.map(str::to_owned));
        self.budget.spend("list")?;
        let objects: Vec<ListedObject> = self
            .store
            .snapshot()
            .into_iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| start_after.is_none_or(|after| key.as_str() > after))
            .take(self.page_size + 1)
            .map(|(key, body)| ListedObject {
                etag: match self.etags {
                    Etags::Md5 => format!("\"{}\"", hex::encode(md5_of(&body))),
                    Etags::Opaque => format!("\"kms-{}\"", body.len()),
                },
                size: body.len() as u64,
                last_modified: 0,
                key,
            })
            .collect();
        let truncated = objects.len() > self.page_size;
        Ok(ListPage {
            objects: objects.into_iter().take(self.page_size).collect(),
            truncated,
        })
    }

    async fn body_md5(&self, key: &str) -> Result<Option<Md5Digest>, StackError> {
        self.reads.lock().unwrap().push(key.to_owned());
        self.read_budget.spend("read")?;
        Ok(self.store.snapshot().get(key).map(|body| md5_of(body)))
    }

    async fn encryption(&self) -> Result<BucketEncryption, StackError> {
        Ok(self.encryption)
    }
}
