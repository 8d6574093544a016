//! The reconcile's on-disk index and checkpoint: what was scanned and listed, where each scan
//! segment and the listing stopped, and which users were repaired or are being repaired, in
//! one redb file.
//!
//! Memory stays bounded whatever the table's size: rows go to disk a page at a time (each
//! page in the same transaction as the checkpoint that follows it, so a page is either wholly
//! in the index with its checkpoint or not at all), redb's cache is capped at [`CACHE_BYTES`],
//! and the comparison walks both tables in key order a batch at a time. A scanned user costs
//! its object key and 16 bytes of MD5 on disk, never its body.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use usersync_function::Config;

use super::bucket::ListedObject;
use super::etag::Md5Digest;
use super::judge::{after_group, walk, ObjectMeta, Verdict, Walked, EXAMPLES};
use super::report::UnmirrorableItem;
use super::scan::ScanCursor;
use super::share::Share;

/// redb's page cache. Sequential inserts and reads need little; this bounds it.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The file under the state directory.
pub const INDEX_FILE: &str = "index.redb";

/// Scanned users: object key → MD5 of the body the function would write.
const USERS: TableDefinition<'_, &str, Md5Digest> = TableDefinition::new("users");
/// Listed objects: key → (size, last modified, ETag).
const OBJECTS: TableDefinition<'_, &str, (u64, i64, &str)> = TableDefinition::new("objects");
/// Checkpoints and parameters, as JSON: [`PARAMETERS`], [`LISTING`], `segment/<n>`, [`FINISHED`].
const STATE: TableDefinition<'_, &str, &str> = TableDefinition::new("state");
/// Users repaired: group key → the verdict that was repaired.
const REPAIRS: TableDefinition<'_, &str, &str> = TableDefinition::new("repairs");
/// Users whose repair has started and not yet been recorded in [`REPAIRS`]: group key → the
/// verdict being repaired.
const PENDING: TableDefinition<'_, &str, &str> = TableDefinition::new("pending repairs");
/// The first unmirrorable items (smallest descriptions): description → reason.
const UNMIRRORABLE: TableDefinition<'_, &str, &str> = TableDefinition::new("unmirrorable");

const PARAMETERS: &str = "parameters";
const LISTING: &str = "listing";
const FINISHED: &str = "finished";

/// What a checkpoint is valid for: a run with other parameters would judge other data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    pub stack: String,
    pub table: String,
    pub bucket: String,
    pub key_prefix: String,
    pub object_name: String,
    pub delete_scope: String,
    pub key_attribute: String,
    pub segments: u32,
    pub share: Option<Share>,
}

impl Parameters {
    /// The parameters that differ, as `name: old → new`.
    fn changes(&self, now: &Self) -> String {
        let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
            (serde_json::to_value(self), serde_json::to_value(now))
        else {
            return String::new();
        };
        old.iter()
            .filter(|(name, value)| new.get(*name) != Some(value))
            .map(|(name, value)| {
                let new = new.get(name).unwrap_or(&serde_json::Value::Null);
                format!("{name}: {value} → {new}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where one scan segment stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    /// The `LastEvaluatedKey` to continue from; `None` before the first page.
    pub cursor: Option<ScanCursor>,
    pub done: bool,
    /// Items scanned (mirrorable or not).
    pub items: u64,
    pub unmirrorable: u64,
}

/// Where the listing stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingState {
    /// The last key committed: the next page starts after it.
    pub after: Option<String>,
    pub done: bool,
    pub listed: u64,
}

/// How the index was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    Fresh,
    /// An interrupted run's checkpoint, with the same parameters.
    Resumed,
}

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to {action} the reconcile checkpoint {}", .path.display())]
    Database {
        action: &'static str,
        path: PathBuf,
        /// Boxed: redb's error is large, and this one is returned everywhere.
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "another reconcile is using the checkpoint {}: wait for it to finish, or give this one \
         its own --state-dir",
        .path.display()
    )]
    Busy { path: PathBuf },
    #[error(
        "the interrupted reconcile in {} ran with other parameters ({changes}): run it again \
         with the same ones to continue it, or pass --restart to start afresh",
        .dir.display()
    )]
    ParametersChanged { dir: PathBuf, changes: String },
    #[error(
        "the reconcile checkpoint {} holds a record this version cannot read ({what}): pass \
         --restart to start afresh",
        .path.display()
    )]
    Unreadable { path: PathBuf, what: String },
    #[error("failed to {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A repair an earlier attempt of this run recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedRepair {
    /// Repaired from this verdict.
    Done(Verdict),
    /// Started from this verdict, not known to have finished.
    Pending(Verdict),
}

/// The index of one reconcile run.
pub struct Index {
    db: Database,
    path: PathBuf,
}

impl Index {
    /// Opens the checkpoint in `dir` for a run with `parameters`: resumes an interrupted run
    /// with the same ones, starts afresh after a finished run (or with `restart`), and
    /// refuses an interrupted run with other parameters.
    pub fn open(
        dir: &Path,
        parameters: &Parameters,
        restart: bool,
    ) -> Result<(Self, Opened), StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            action: "create the state directory",
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(INDEX_FILE);
        if path.exists() && !restart {
            let index = Self::create(&path)?;
            let finished: Option<bool> = index.state(FINISHED)?;
            let previous: Option<Parameters> = index.state(PARAMETERS)?;
            match previous {
                Some(previous) if finished != Some(true) => {
                    if &previous != parameters {
                        return Err(StateError::ParametersChanged {
                            dir: dir.to_owned(),
                            changes: previous.changes(parameters),
                        });
                    }
                    return Ok((index, Opened::Resumed));
                }
                // Finished, or created and never started: nothing to continue.
                _ => drop(index),
            }
        }
        remove_file(&path)?;
        let index = Self::create(&path)?;
        index.write("start", |txn| {
            // Every table exists from the start, so that reads never meet a missing one.
            txn.open_table(USERS)?;
            txn.open_table(OBJECTS)?;
            txn.open_table(REPAIRS)?;
            txn.open_table(PENDING)?;
            txn.open_table(UNMIRRORABLE)?;
            let mut state = txn.open_table(STATE)?;
            state.insert(PARAMETERS, json(parameters).as_str())?;
            Ok(())
        })?;
        Ok((index, Opened::Fresh))
    }

    fn create(path: &Path) -> Result<Self, StateError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|err| match err {
                redb::DatabaseError::DatabaseAlreadyOpen => StateError::Busy {
                    path: path.to_owned(),
                },
                other => StateError::Database {
                    action: "open",
                    path: path.to_owned(),
                    source: Box::new(other.into()),
                },
            })?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    /// Marks the run finished and removes the index: the next run starts afresh.
    pub fn finish(self) -> Result<(), StateError> {
        self.write("finish", |txn| {
            txn.open_table(STATE)?.insert(FINISHED, "true")?;
            Ok(())
        })?;
        let path = self.path.clone();
        drop(self);
        remove_file(&path)
    }

    pub fn segment(&self, segment: u32) -> Result<SegmentState, StateError> {
        Ok(self.state(&segment_key(segment))?.unwrap_or_default())
    }

    pub fn listing(&self) -> Result<ListingState, StateError> {
        Ok(self.state(LISTING)?.unwrap_or_default())
    }

    /// Commits a scanned page: its users, its unmirrorable items and the segment's new
    /// checkpoint, at once.
    pub fn commit_scan_page(
        &self,
        segment: u32,
        users: &[(String, Md5Digest)],
        unmirrorable: &[UnmirrorableItem],
        state: &SegmentState,
    ) -> Result<(), StateError> {
        self.write("record a scanned page in", |txn| {
            let mut table = txn.open_table(USERS)?;
            for (key, md5) in users {
                table.insert(key.as_str(), md5)?;
            }
            let mut examples = txn.open_table(UNMIRRORABLE)?;
            for item in unmirrorable {
                examples.insert(item.item.as_str(), item.reason.as_str())?;
                // The smallest descriptions are kept, so the examples do not depend on the
                // order segments finish in.
                if examples.len()? > EXAMPLES as u64 {
                    examples.pop_last()?;
                }
            }
            txn.open_table(STATE)?
                .insert(segment_key(segment).as_str(), json(state).as_str())?;
            Ok(())
        })
    }

    /// Commits a listed page and the listing's new checkpoint, at once.
    pub fn commit_listing_page(
        &self,
        objects: &[ListedObject],
        state: &ListingState,
    ) -> Result<(), StateError> {
        self.write("record a listed page in", |txn| {
            let mut table = txn.open_table(OBJECTS)?;
            for object in objects {
                table.insert(
                    object.key.as_str(),
                    (object.size, object.last_modified, object.etag.as_str()),
                )?;
            }
            txn.open_table(STATE)?
                .insert(LISTING, json(state).as_str())?;
            Ok(())
        })
    }

    /// Records, in one transaction, that the users of `groups` are about to be repaired from
    /// their verdicts: a run stopped before [`Index::record_repairs`] repairs them again when
    /// resumed (a repair can be repeated) and still reports their verdicts, although their
    /// objects may already read as in step.
    pub fn record_pending(&self, groups: &[(&str, Verdict)]) -> Result<(), StateError> {
        self.write("record repairs about to start in", |txn| {
            let mut pending = txn.open_table(PENDING)?;
            for (group, verdict) in groups {
                pending.insert(*group, json(verdict).as_str())?;
            }
            Ok(())
        })
    }

    /// Records, in one transaction, that the users of `groups` were repaired from their
    /// verdicts: a resumed run counts them and does not repair them again.
    pub fn record_repairs(&self, groups: &[(&str, Verdict)]) -> Result<(), StateError> {
        self.write("record repairs in", |txn| {
            let mut repairs = txn.open_table(REPAIRS)?;
            let mut pending = txn.open_table(PENDING)?;
            for (group, verdict) in groups {
                repairs.insert(*group, json(verdict).as_str())?;
                pending.remove(*group)?;
            }
            Ok(())
        })
    }

    /// What an earlier attempt of this run recorded of the repairs of `groups`.
    pub fn recorded_repairs<'g>(
        &self,
        groups: impl Iterator<Item = &'g str>,
    ) -> Result<BTreeMap<String, RecordedRepair>, StateError> {
        let read = |index: &Self| -> Result<BTreeMap<String, RecordedRepair>, redb::Error> {
            let txn = index.db.begin_read()?;
            let repairs = txn.open_table(REPAIRS)?;
            // A checkpoint written before this table existed has no repair pending.
            let pending = match txn.open_table(PENDING) {
                Ok(table) => Some(table),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(err) => return Err(err.into()),
            };
            let verdict = |value: &str| serde_json::from_str::<Verdict>(value).ok();
            let mut found = BTreeMap::new();
            for group in groups {
                let done = repairs.get(group)?.and_then(|v| verdict(v.value()));
                let recorded = match done {
                    Some(verdict) => Some(RecordedRepair::Done(verdict)),
                    None => match &pending {
                        Some(pending) => pending
                            .get(group)?
                            .and_then(|v| verdict(v.value()))
                            .map(RecordedRepair::Pending),
                        None => None,
                    },
                };
                if let Some(recorded) = recorded {
                    found.insert(group.to_owned(), recorded);
                }
            }
            Ok(found)
        };
        read(self).map_err(|source| self.error("read", source))
    }

    /// The first unmirrorable items, by description.
    pub fn unmirrorable_examples(&self) -> Result<Vec<UnmirrorableItem>, StateError> {
        let read = |index: &Self| -> Result<Vec<UnmirrorableItem>, redb::Error> {
            let txn = index.db.begin_read()?;
            let table = txn.open_table(UNMIRRORABLE)?;
            let mut items = Vec::new();
            for row in table.iter()? {
                let (item, reason) = row?;
                items.push(UnmirrorableItem {
                    item: item.value().to_owned(),
                    reason: reason.value().to_owned(),
                });
            }
            Ok(items)
        };
        read(self).map_err(|source| self.error("read", source))
    }

    /// Walks at most `max_groups` groups, starting after the group `after`.
    pub fn walk(
        &self,
        after: Option<&str>,
        config: &Config,
        judges: &dyn Fn(&str) -> bool,
        max_groups: usize,
    ) -> Result<Walked, StateError> {
        let read = |index: &Self| -> Result<Walked, redb::Error> {
            let txn = index.db.begin_read()?;
            let users = txn.open_table(USERS)?;
            let objects = txn.open_table(OBJECTS)?;
            let (user_start, object_start) = match after {
                None => (Bound::Unbounded, Bound::Unbounded),
                Some(group) => {
                    // The group's user sorts as the group does; its objects all sort before
                    // `after_group`.
                    let user = format!("{group}{}", config.object_name);
                    let (next, inclusive) = after_group(group);
                    let object = if inclusive {
                        Bound::Included(next)
                    } else {
                        Bound::Excluded(next)
                    };
                    (Bound::Excluded(user), object)
                }
            };
            let users = users
                .range::<&str>((as_str(&user_start), Bound::Unbounded))?
                .map(|row| row.map(|(key, md5)| (key.value().to_owned(), md5.value())));
            let objects = objects
                .range::<&str>((as_str(&object_start), Bound::Unbounded))?
                .map(|row| {
                    row.map(|(key, value)| {
                        let (size, last_modified, etag) = value.value();
                        (
                            key.value().to_owned(),
                            ObjectMeta {
                                etag: etag.to_owned(),
                                size,
                                last_modified,
                            },
                        )
                    })
                });
            Ok(walk(users, objects, config, judges, max_groups)?)
        };
        read(self).map_err(|source| self.error("read", source))
    }

    fn state<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let read = |index: &Self| -> Result<Option<String>, redb::Error> {
            let txn = index.db.begin_read()?;
            let table = match txn.open_table(STATE) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            Ok(table.get(name)?.map(|value| value.value().to_owned()))
        };
        let Some(text) = read(self).map_err(|source| self.error("read", source))? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| StateError::Unreadable {
                path: self.path.clone(),
                what: format!("{name}: {err}"),
            })
    }

    fn write(
        &self,
        action: &'static str,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            body(&txn)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|source| self.error(action, source))
    }

    fn error(&self, action: &'static str, source: redb::Error) -> StateError {
        StateError::Database {
            action,
            path: self.path.clone(),
            source: Box::new(source),
        }
    }
}

fn segment_key(segment: u32) -> String {
    format!("segment/{segment}")
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("checkpoint records are plain data")
}

fn as_str(bound: &Bound<String>) -> Bound<&str> {
    match bound {
        Bound::Included(text) => Bound::Included(text.as_str()),
        Bound::Excluded(text) => Bound::Excluded(text.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn remove_file(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::etag::md5_of;
    use std::num::NonZeroUsize;
    use usersync_function::DeleteScope;

    fn parameters(segments: u32) -> Parameters {
        Parameters {
            stack: "s".into(),
            table: "t".into(),
            bucket: "b".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
            delete_scope: "object".into(),
            key_attribute: "name".into(),
            segments,
            share: None,
        }
    }

    fn config() -> Config {
        Config {
            bucket: "b".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
            delete_scope: DeleteScope::Prefix,
            max_concurrency: NonZeroUsize::new(4).unwrap(),
            key_attribute: "name".into(),
            force_path_style: false,
        }
    }

    fn object(key: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            etag: "\"e\"".into(),
            size: 1,
            last_modified: 2,
        }
    }

    #[test]
    fn a_checkpoint_resumes_with_the_same_parameters_only() {
        let dir = tempfile::tempdir().unwrap();
        let (index, opened) = Index::open(dir.path(), &parameters(4), false).unwrap();
        assert_eq!(opened, Opened::Fresh);
        let state = SegmentState {
            cursor: None,
            done: false,
            items: 2,
            unmirrorable: 0,
        };
        index
            .commit_scan_page(1, &[("ann/userdata".into(), md5_of(b"a"))], &[], &state)
            .unwrap();
        // A second process on the same checkpoint is refused while this one has it.
        assert!(matches!(
            Index::open(dir.path(), &parameters(4), false),
            Err(StateError::Busy { .. })
        ));
        drop(index);

        let err = Index::open(dir.path(), &parameters(8), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("segments: 4 → 8"), "{err}");
        assert!(err.to_string().contains("--restart"), "{err}");

        let (index, opened) = Index::open(dir.path(), &parameters(4), false).unwrap();
        assert_eq!(opened, Opened::Resumed);
        assert_eq!(index.segment(1).unwrap(), state);
        index.finish().unwrap();
        assert!(!dir.path().join(INDEX_FILE).exists());

        let (index, opened) = Index::open(dir.path(), &parameters(8), false).unwrap();
        assert_eq!(opened, Opened::Fresh);
        assert_eq!(index.segment(1).unwrap(), SegmentState::default());
        drop(index);
        let (_, opened) = Index::open(dir.path(), &parameters(8), true).unwrap();
        assert_eq!(opened, Opened::Fresh);
    }

    #[test]
    fn walks_both_tables_in_batches_and_keeps_the_smallest_unmirrorable_examples() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(dir.path(), &parameters(1), false).unwrap();
        let users: Vec<(String, Md5Digest)> = ["ann", "bob", "cy"]
            .iter()
            .map(|n| (format!("{n}/userdata"), md5_of(n.as_bytes())))
            .collect();
        let unmirrorable: Vec<UnmirrorableItem> = (0..15)
            .rev()
            .map(|i| UnmirrorableItem {
                item: format!("item {i:02}"),
                reason: "no name".into(),
            })
            .collect();
        index
            .commit_scan_page(0, &users, &unmirrorable, &SegmentState::default())
            .unwrap();
        let objects: Vec<ListedObject> = ["ann/a", "ann/userdata", "ann0", "bob/userdata", "dee/x"]
            .iter()
            .map(|k| object(k))
            .collect();
        index
            .commit_listing_page(&objects, &ListingState::default())
            .unwrap();

        let config = config();
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let walked = index.walk(after.as_deref(), &config, &|_| true, 2).unwrap();
            seen.extend(walked.groups.iter().map(|g| {
                (
                    g.key.clone(),
                    g.expected.is_some(),
                    g.object.is_some(),
                    g.others,
                )
            }));
            after = walked.groups.last().map(|g| g.key.clone());
            if walked.complete {
                break;
            }
        }
        let expected: Vec<(String, bool, bool, u64)> = [
            ("ann/", true, true, 1),
            ("ann0", false, false, 0),
            ("bob/", true, true, 0),
            ("cy/", true, false, 0),
            ("dee/", false, false, 1),
        ]
        .iter()
        .map(|(k, u, o, n)| ((*k).to_owned(), *u, *o, *n))
        .collect();
        assert_eq!(seen, expected);

        let examples = index.unmirrorable_examples().unwrap();
        assert_eq!(examples.len(), EXAMPLES);
        assert_eq!(examples[0].item, "item 00");
        assert_eq!(examples[9].item, "item 09");

        index
            .record_pending(&[("cy/", Verdict::Missing), ("dee/", Verdict::Orphaned)])
            .unwrap();
        index.record_repairs(&[("cy/", Verdict::Missing)]).unwrap();
        let recorded = index
            .recorded_repairs(["bob/", "cy/", "dee/"].into_iter())
            .unwrap();
        assert_eq!(
            recorded,
            BTreeMap::from([
                ("cy/".to_owned(), RecordedRepair::Done(Verdict::Missing)),
                (
                    "dee/".to_owned(),
                    RecordedRepair::Pending(Verdict::Orphaned)
                ),
            ])
        );
    }
}
