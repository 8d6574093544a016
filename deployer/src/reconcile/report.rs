//! What a reconcile found and did, as counts with the first examples of each class; the
//! reports of several shares merged into one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use usersync_function::DeleteScope;

use super::etag::BucketEncryption;
use super::judge::{Group, Verdict, EXAMPLES};
use super::share::Share;

/// Exit code: in step, or everything that drifted was repaired.
pub const EXIT_IN_STEP: u8 = 0;
/// Exit code: the operation failed, a repair included.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: drift found and nothing failed (without `--repair`).
pub const EXIT_DRIFT: u8 = 3;

/// A key of one class, with its user when it has one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Example {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An item the function cannot mirror.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnmirrorableItem {
    /// The item as JSON, shortened.
    pub item: String,
    pub reason: String,
}

/// A user whose repair failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailedUser {
    /// The user's object key (the order examples are kept in).
    pub key: String,
    pub user: String,
    pub error: String,
}

/// The first examples of each class, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Examples {
    pub missing: Vec<Example>,
    pub stale: Vec<Example>,
    pub orphaned: Vec<Example>,
    pub foreign: Vec<Example>,
    pub unmirrorable: Vec<UnmirrorableItem>,
    pub failed: Vec<FailedUser>,
}

/// What a reconcile found and did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub stack_name: String,
    pub table: String,
    pub bucket: String,
    pub key_prefix: String,
    pub object_name: String,
    pub delete_scope: DeleteScope,
    pub segments: u32,
    /// The shares this report covers; empty for an unshared run.
    pub shares: Vec<Share>,
    /// Whether drift was repaired.
    pub repair: bool,
    /// The run continued an interrupted one's checkpoint.
    pub resumed: bool,
    pub bucket_encryption: BucketEncryption,
    /// Items scanned, unmirrorable ones included.
    pub table_items: u64,
    /// Keys under `KEY_PREFIX` this run judged.
    pub objects: u64,
    /// Users without an object.
    pub missing: u64,
    /// Objects whose body is not the item's.
    pub stale: u64,
    /// Objects of users not in the table (under prefix scope, every object under their prefix).
    pub orphaned: u64,
    /// Keys under `KEY_PREFIX` that are no user's; reported, never touched.
    pub foreign: u64,
    /// Items the function cannot mirror (no string key, or a key too long).
    pub unmirrorable: u64,
    /// Users with missing, stale or orphaned objects.
    pub drifted_users: u64,
    /// Users repaired.
    pub repaired: u64,
    /// Users whose repair failed.
    pub failed: u64,
    /// Objects read whole (ETags that did not tell).
    pub body_reads: u64,
    /// Consistent reads of users another share may hold.
    pub presence_checks: u64,
    pub seconds: f64,
    pub examples: Examples,
}

impl ReconcileReport {
    /// Whether anything needed (or needs) repairing.
    pub fn drift_found(&self) -> bool {
        self.drifted_users > 0
    }

    /// The command's exit code: [`EXIT_FAILED`] when a repair failed, [`EXIT_DRIFT`] when
    /// drift was found and not repaired, else [`EXIT_IN_STEP`].
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 {
            EXIT_FAILED
        } else if self.drift_found() && !self.repair {
            EXIT_DRIFT
        } else {
            EXIT_IN_STEP
        }
    }

    /// One line: the counts that matter.
    pub fn summary(&self) -> String {
        let scope = match &self.shares[..] {
            [share] => format!(" (share {share})"),
            [] => String::new(),
            shares => format!(" ({} shares merged)", shares.len()),
        };
        let mut line = format!(
            "{} items in table {}, {} objects in bucket {}{scope}: {} missing, {} stale, {} \
             orphaned, {} foreign, {} unmirrorable",
            self.table_items,
            self.table,
            self.objects,
            self.bucket,
            self.missing,
            self.stale,
            self.orphaned,
            self.foreign,
            self.unmirrorable
        );
        if self.repair {
            line.push_str(&format!(
                "; {} of {} users repaired",
                self.repaired, self.drifted_users
            ));
            if self.failed > 0 {
                line.push_str(&format!(", {} failed", self.failed));
            }
        } else if self.drift_found() {
            line.push_str(&format!(
                "; {} users drifted (repair with --repair)",
                self.drifted_users
            ));
        } else {
            line.push_str("; in step");
        }
        line.push_str(&format!(" in {:.1} s", self.seconds));
        line
    }

    /// Merges the reports of the shares of one reconcile: counts summed, examples the first
    /// of their union, time the longest (shares run side by side).
    pub fn merge(reports: Vec<ReconcileReport>) -> Result<Self, MergeError> {
        let mut reports = reports.into_iter();
        let Some(mut merged) = reports.next() else {
            return Err(MergeError::Nothing);
        };
        for report in reports {
            let same = |a: &ReconcileReport| {
                (
                    a.stack_name.clone(),
                    a.table.clone(),
                    a.bucket.clone(),
                    a.key_prefix.clone(),
                    a.object_name.clone(),
                    a.delete_scope,
                    a.segments,
                )
            };
            if same(&merged) != same(&report) {
                return Err(MergeError::Different {
                    first: describe(&merged),
                    other: describe(&report),
                });
            }
            merged.shares.extend(report.shares.iter().copied());
            merged.repair &= report.repair;
            merged.resumed |= report.resumed;
            if merged.bucket_encryption != report.bucket_encryption {
                merged.bucket_encryption = BucketEncryption::Unknown;
            }
            merged.table_items += report.table_items;
            merged.objects += report.objects;
            merged.missing += report.missing;
            merged.stale += report.stale;
            merged.orphaned += report.orphaned;
            merged.foreign += report.foreign;
            merged.unmirrorable += report.unmirrorable;
            merged.drifted_users += report.drifted_users;
            merged.repaired += report.repaired;
            merged.failed += report.failed;
            merged.body_reads += report.body_reads;
            merged.presence_checks += report.presence_checks;
            merged.seconds = merged.seconds.max(report.seconds);
            let examples = &mut merged.examples;
            let other = report.examples;
            first_of(&mut examples.missing, other.missing);
            first_of(&mut examples.stale, other.stale);
            first_of(&mut examples.orphaned, other.orphaned);
            first_of(&mut examples.foreign, other.foreign);
            first_of(&mut examples.unmirrorable, other.unmirrorable);
            first_of(&mut examples.failed, other.failed);
        }
        merged.shares.sort_unstable();
        check_shares(&merged.shares)?;
        Ok(merged)
    }

    /// Reads a report written as JSON.
    pub fn read(path: &Path) -> Result<Self, MergeError> {
        let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| MergeError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

fn describe(report: &ReconcileReport) -> String {
    format!(
        "stack {}, table {}, bucket {}, KEY_PREFIX {:?}, OBJECT_NAME {:?}, DELETE_SCOPE {}, \
         {} segments",
        report.stack_name,
        report.table,
        report.bucket,
        report.key_prefix,
        report.object_name,
        report.delete_scope,
        report.segments
    )
}

/// Every share of one split, once each.
fn check_shares(shares: &[Share]) -> Result<(), MergeError> {
    let Some(count) = shares.first().map(|s| s.count) else {
        return Err(MergeError::NotShares);
    };
    let expected: Vec<Share> = (0..count).map(|index| Share { index, count }).collect();
    if shares == expected {
        return Ok(());
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|s| !shares.contains(s))
        .map(ToString::to_string)
        .collect();
    Err(MergeError::Shares {
        found: shares
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        missing: missing.join(", "),
    })
}

/// The first [`EXAMPLES`] of two lists that each hold the first of their part.
fn first_of<T: Ord>(into: &mut Vec<T>, other: Vec<T>) {
    into.extend(other);
    into.sort();
    into.dedup();
    into.truncate(EXAMPLES);
}

/// Why reports could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no report to merge: name the reports of every share")]
    Nothing,
    #[error("failed to read the report {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a reconcile report", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the reports are of different runs: {first}, and {other}")]
    Different { first: String, other: String },
    #[error("a report of an unshared run cannot be merged: merge the reports of --share runs")]
    NotShares,
    #[error(
        "the reports do not cover every share once (found {found}; missing {missing}): merge \
         one report of each share"
    )]
    Shares { found: String, missing: String },
}

/// Counts and examples, gathered group by group in key order.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub objects: u64,
    pub missing: u64,
    pub stale: u64,
    pub orphaned: u64,
    pub foreign: u64,
    pub drifted_users: u64,
    pub repaired: u64,
    pub failed: u64,
    pub body_reads: u64,
    pub presence_checks: u64,
    pub examples: Examples,
}

/// What became of a drifted user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// Not asked to repair, or nothing to repair.
    None,
    Repaired,
    Failed(String),
}

impl Tally {
    /// Adds one group, judged `verdict`, its user repaired as `repair` says.
    pub fn add(
        &mut self,
        group: &Group,
        verdict: Verdict,
        repair: &Repair,
        config: &usersync_function::Config,
    ) {
        self.foreign += group.foreign;
        self.objects += group.foreign;
        for key in &group.foreign_examples {
            push(
                &mut self.examples.foreign,
                Example {
                    key: key.clone(),
                    user: None,
                },
            );
        }
        if verdict != Verdict::NoUser {
            self.objects += group.user_objects(config.delete_scope);
        }
        let user = group.name().map(str::to_owned);
        let example = || Example {
            key: group.object_key(config),
            user: user.clone(),
        };
        match verdict {
            Verdict::NoUser | Verdict::InStep => {}
            Verdict::Missing => {
                self.missing += 1;
                push(&mut self.examples.missing, example());
            }
            Verdict::Stale => {
                self.stale += 1;
                push(&mut self.examples.stale, example());
            }
            Verdict::Orphaned => {
                self.orphaned += group.user_objects(config.delete_scope);
                for key in group.orphan_examples(config) {
                    push(
                        &mut self.examples.orphaned,
                        Example {
                            key,
                            user: user.clone(),
                        },
                    );
                }
            }
        }
        if verdict.is_drift() {
            self.drifted_users += 1;
        }
        match repair {
            Repair::None => {}
            Repair::Repaired => self.repaired += 1,
            Repair::Failed(error) => {
                self.failed += 1;
                if self.examples.failed.len() < EXAMPLES {
                    self.examples.failed.push(FailedUser {
                        key: group.object_key(config),
                        user: user.unwrap_or_default(),
                        error: error.clone(),
                    });
                }
            }
        }
    }
}

fn push(examples: &mut Vec<Example>, example: Example) {
    if examples.len() < EXAMPLES {
        examples.push(example);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn report(share: Option<Share>) -> ReconcileReport {
        ReconcileReport {
            stack_name: "s".into(),
            table: "t".into(),
            bucket: "b".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
            delete_scope: DeleteScope::Object,
            segments: 4,
            shares: share.into_iter().collect(),
            repair: false,
            resumed: false,
            bucket_encryption: BucketEncryption::SseS3,
            table_items: 0,
            objects: 0,
            missing: 0,
            stale: 0,
            orphaned: 0,
            foreign: 0,
            unmirrorable: 0,
            drifted_users: 0,
            repaired: 0,
            failed: 0,
            body_reads: 0,
            presence_checks: 0,
            seconds: 1.0,
            examples: Examples::default(),
        }
    }

    fn example(key: &str) -> Example {
        Example {
            key: key.into(),
            user: None,
        }
    }

    #[test]
    fn exit_codes_follow_drift_repairs_and_failures() {
        let mut report = report(None);
        assert_eq!(report.exit_code(), EXIT_IN_STEP);
        assert!(report.summary().contains("in step"), "{}", report.summary());
        report.drifted_users = 2;
        report.missing = 2;
        assert_eq!(report.exit_code(), EXIT_DRIFT);
        assert!(report.summary().contains("--repair"));
        report.repair = true;
        report.repaired = 2;
        assert_eq!(report.exit_code(), EXIT_IN_STEP);
        report.repaired = 1;
        report.failed = 1;
        assert_eq!(report.exit_code(), EXIT_FAILED);
        assert!(report.summary().contains("1 of 2 users repaired, 1 failed"));
    }

    #[test]
    fn merging_sums_counts_and_keeps_the_first_examples_of_all() {
        let mut a = report(Some(Share { index: 1, count: 2 }));
        a.table_items = 3;
        a.missing = 2;
        a.drifted_users = 2;
        a.seconds = 4.0;
        a.examples.missing = vec![example("b"), example("d")];
        let mut b = report(Some(Share { index: 0, count: 2 }));
        b.table_items = 5;
        b.missing = 11;
        b.drifted_users = 11;
        b.examples.missing = ["a", "c", "e", "f", "g", "h", "i", "j", "k", "l"]
            .iter()
            .map(|k| example(k))
            .collect();
        let merged = ReconcileReport::merge(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(merged.table_items, 8);
        assert_eq!(merged.missing, 13);
        assert_eq!(merged.seconds, 4.0);
        assert_eq!(
            merged.shares,
            [Share { index: 0, count: 2 }, Share { index: 1, count: 2 }]
        );
        let keys: Vec<&str> = merged
            .examples
            .missing
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
        assert_eq!(merged.exit_code(), EXIT_DRIFT);

        let err = ReconcileReport::merge(vec![a.clone()]).unwrap_err();
        assert!(err.to_string().contains("missing 0/2"), "{err}");
        let err = ReconcileReport::merge(vec![a.clone(), a.clone()]).unwrap_err();
        assert!(matches!(err, MergeError::Shares { .. }), "{err}");
        let mut other = b.clone();
        other.bucket = "elsewhere".into();
        assert!(matches!(
            ReconcileReport::merge(vec![a.clone(), other]),
            Err(MergeError::Different { .. })
        ));
        assert!(matches!(
            ReconcileReport::merge(vec![report(None)]),
            Err(MergeError::NotShares)
        ));
        assert!(matches!(
            ReconcileReport::merge(Vec::new()),
            Err(MergeError::Nothing)
        ));
    }

    #[test]
    fn a_report_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut original = report(Some(Share { index: 0, count: 1 }));
        original.examples.foreign.push(example("x"));
        std::fs::write(&path, serde_json::to_string(&original).unwrap()).unwrap();
        assert_eq!(ReconcileReport::read(&path).unwrap(), original);
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            ReconcileReport::read(&path),
            Err(MergeError::Parse { .. })
        ));
        assert!(matches!(
            ReconcileReport::read(&dir.path().join("none.json")),
            Err(MergeError::Read { .. })
        ));
    }
}
