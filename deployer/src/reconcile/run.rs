//! The whole reconcile: read the table and the bucket into the index (resuming a checkpoint),
//! judge every user, repair the drifted ones, and report.
//!
//! A batch of [`BATCH`] groups is judged first, then its drifted users are repaired together
//! through [`UserRepairer::repair_all`]: a repaired user costs its write and a share of two
//! `BatchGetItem`s (one before the writes, one verifying them), not two `GetItem`s of its own.
//! The batch's repairs are recorded in the index as pending before the first write and as done
//! after the last, two transactions a batch, so a resumed run neither repeats a recorded
//! repair nor loses the verdict of one it interrupted (it repairs that user again).
//!
//! Peak memory does not grow with the table. What is held at once: redb's cache
//! ([`super::index::CACHE_BYTES`], 32 MiB); at most [`super::scan::SCAN_CONCURRENCY`] scan
//! pages of up to 1 MB each (a few MB each once parsed); one listing page of up to 1,000 keys;
//! one batch of [`BATCH`] groups, each with at most ten example keys; `concurrency` users
//! being compared (bodies read for comparison are hashed as they stream; a presence check
//! holds an item of at most 400 KB); and, while repairing, the bodies of about three hundred
//! users read and waiting for their writes, `concurrency` writes, and two verifying reads of
//! a hundred items each (see [`UserRepairer::repair_all`]). Each item and body is at most
//! about 400 KB, so that is about 32 + 8×5 + 1 + 3 + 16×0.4 + 300×0.4 + 16×0.8 + 2×40 MiB ≈
//! 300 MiB at the very worst, when every item is near DynamoDB's limit, and about 50 MiB
//! with items of a few hundred bytes, plus the runtime and the SDK's clients; a table of any
//! size adds only disk (its keys and 16-byte digests in the index).

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use usersync_function::ObjectStore;

use super::bucket::{BucketReader, S3Bucket};
use super::deployed::{DeployedMirror, DeployedMirrorError};
use super::etag::BucketEncryption;
use super::index::{Index, Opened, Parameters, RecordedRepair, StateError};
use super::judge::{body_verdict, Group, Pending, Verdict};
use super::listing::list_bucket;
use super::options::ReconcileOptions;
use super::progress::{Phase, ReconcileProgress};
use super::report::{ReconcileReport, Repair, Tally};
use super::scan::{scan_segments, TableScanner};
use super::share::Share;
use super::user::{UserRepairError, UserRepairer};
use crate::errors::chain;
use crate::project::project_root;
use crate::stack::StackError;
use crate::target::Target;

/// Groups judged per batch. A batch's drifted users are repaired together, and the repairs
/// run down to the last write before the next batch is judged: a thousand keeps that pause
/// rare while the batch stays small in memory.
pub const BATCH: usize = 1000;

/// The report kept in the state directory.
pub const REPORT_FILE: &str = "report.json";

/// Why a reconcile did not finish. Its checkpoint stays: running it again continues.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Mirror(#[from] DeployedMirrorError),
    #[error(transparent)]
    Aws(#[from] StackError),
    #[error(transparent)]
    Read(#[from] UserRepairError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "scan segment {segment} reached a key that cannot be checkpointed (an attribute no key \
         attribute can be): pass --restart to start afresh"
    )]
    Cursor { segment: u32 },
    #[error("failed to write the report {}", .path.display())]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reconciles the bucket of stack `stack_name` with its table (see [`reconcile_mirror`]).
pub async fn reconcile(
    target: &Target,
    stack_name: &str,
    options: &ReconcileOptions,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
) -> Result<ReconcileReport, ReconcileError> {
    let mirror = DeployedMirror::load(target, stack_name).await?;
    reconcile_mirror(target, &mirror, options, progress).await
}

/// Reconciles the bucket of an already loaded mirror with its table: compares them under the
/// deployed function's settings and, with `options.repair`, repairs every drifted user
/// through the function's own S3 code.
pub async fn reconcile_mirror(
    target: &Target,
    mirror: &DeployedMirror,
    options: &ReconcileOptions,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
) -> Result<ReconcileReport, ReconcileError> {
    let table = mirror.table_reader(target);
    let store = mirror.s3_store(target);
    // The function's client: its retries, and path-style addressing off AWS.
    let bucket = S3Bucket::new(
        usersync_function::s3_client_from(&target.sdk, !target.is_aws()),
        mirror.bucket(),
    );
    let dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&mirror.stack_name, options.share));
    let sources = Sources {
        table: &table,
        bucket: &bucket,
        store: &store,
    };
    run(&sources, mirror, &dir, options, progress).await
}

/// `target/usersync/reconcile/<stack>/`, with a directory of its own per share.
pub fn default_state_dir(stack_name: &str, share: Option<Share>) -> PathBuf {
    let dir = project_root()
        .join("target")
        .join("usersync")
        .join("reconcile")
        .join(stack_name);
    match share {
        Some(share) => dir.join(format!("share-{}-of-{}", share.index, share.count)),
        None => dir,
    }
}

/// Where a reconcile reads and writes.
pub(crate) struct Sources<'a, T, B, S> {
    pub table: &'a T,
    pub bucket: &'a B,
    pub store: &'a S,
}

/// The reconcile over any table, bucket and store (the AWS ones, or tests' fakes).
pub(crate) async fn run<T: TableScanner, B: BucketReader, S: ObjectStore>(
    sources: &Sources<'_, T, B, S>,
    mirror: &DeployedMirror,
    dir: &Path,
    options: &ReconcileOptions,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
) -> Result<ReconcileReport, ReconcileError> {
    let started = Instant::now();
    if let Some(problem) = options.problem() {
        return Err(ReconcileError::Options(problem));
    }
    let config = &mirror.config;
    let parameters = Parameters {
        stack: mirror.stack_name.clone(),
        table: mirror.table.clone(),
        bucket: config.bucket.clone(),
        key_prefix: config.key_prefix.clone(),
        object_name: config.object_name.clone(),
        delete_scope: config.delete_scope.to_string(),
        key_attribute: config.key_attribute.clone(),
        segments: options.segments,
        share: options.share,
    };
    let (index, opened) = Index::open(dir, &parameters, options.restart)?;
    let segments: Vec<u32> = options.own_segments().collect();

    let mut state = ReconcileProgress {
        segments: u32::try_from(segments.len()).unwrap_or(u32::MAX),
        ..ReconcileProgress::default()
    };
    for segment in &segments {
        let checkpoint = index.segment(*segment)?;
        state.items_scanned += checkpoint.items;
        state.segments_done += u32::from(checkpoint.done);
    }
    let listing = index.listing()?;
    state.objects_listed = listing.listed;
    state.listing_done = listing.done;
    if opened == Opened::Resumed {
        let line = format!(
            "continuing the interrupted reconcile from its checkpoint in {}: {} items scanned \
             ({} of {} segments done), {} objects listed{} (--restart starts afresh)",
            dir.display(),
            state.items_scanned,
            state.segments_done,
            state.segments,
            state.objects_listed,
            if listing.done { ", listing done" } else { "" }
        );
        note(&mut state, progress, line);
    }

    let encryption = match sources.bucket.encryption().await {
        Ok(encryption) => encryption,
        Err(err) => {
            note(
                &mut state,
                progress,
                format!(
                    "the bucket's default encryption is unknown ({}): ETags that look like MD5s \
                     are compared and every mismatch is read",
                    chain(&err)
                ),
            );
            BucketEncryption::Unknown
        }
    };
    // Only for an ETA: an estimate that may be hours old, and not worth failing over.
    state.expected_items = sources
        .table
        .approximate_items()
        .await
        .ok()
        .flatten()
        .map(|items| items * segments.len() as u64 / u64::from(options.segments));
    progress(&state);

    read_into_index(
        sources, &index, config, segments, options, &mut state, progress,
    )
    .await?;

    state.phase = Phase::Comparing;
    progress(&state);
    let tally = judge_and_repair(
        sources, &index, config, encryption, options, &mut state, progress,
    )
    .await?;

    let report = ReconcileReport {
        stack_name: mirror.stack_name.clone(),
        table: mirror.table.clone(),
        bucket: config.bucket.clone(),
        key_prefix: config.key_prefix.clone(),
        object_name: config.object_name.clone(),
        delete_scope: config.delete_scope,
        segments: options.segments,
        shares: options.share.into_iter().collect(),
        repair: options.repair,
        resumed: opened == Opened::Resumed,
        bucket_encryption: encryption,
        table_items: state.items_scanned,
        objects: tally.objects,
        missing: tally.missing,
        stale: tally.stale,
        orphaned: tally.orphaned,
        foreign: tally.foreign,
        unmirrorable: unmirrorable_count(&index, options)?,
        drifted_users: tally.drifted_users,
        repaired: tally.repaired,
        failed: tally.failed,
        body_reads: tally.body_reads,
        presence_checks: tally.presence_checks,
        seconds: started.elapsed().as_secs_f64(),
        examples: super::report::Examples {
            unmirrorable: index.unmirrorable_examples()?,
            ..tally.examples
        },
    };
    let path = dir.join(REPORT_FILE);
    let json = serde_json::to_vec_pretty(&report).expect("a report is plain data");
    std::fs::write(&path, json).map_err(|source| ReconcileError::Report { path, source })?;
    index.finish()?;
    state.phase = Phase::Done;
    progress(&state);
    Ok(report)
}

/// The unmirrorable items of this run's segments, now that they are all scanned.
fn unmirrorable_count(index: &Index, options: &ReconcileOptions) -> Result<u64, StateError> {
    let mut count = 0;
    for segment in options.own_segments() {
        count += index.segment(segment)?.unmirrorable;
    }
    Ok(count)
}

fn note(
    state: &mut ReconcileProgress,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
    line: String,
) {
    state.note = Some(line);
    progress(state);
    state.note = None;
}

/// Scans this run's segments and lists the bucket, side by side, from their checkpoints.
async fn read_into_index<T: TableScanner, B: BucketReader, S: ObjectStore>(
    sources: &Sources<'_, T, B, S>,
    index: &Index,
    config: &usersync_function::Config,
    segments: Vec<u32>,
    options: &ReconcileOptions,
    state: &mut ReconcileProgress,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
) -> Result<(), ReconcileError> {
    enum Read {
        Scanned(super::scan::ScannedPage),
        Listed(super::listing::ListedPage),
    }
    let scan = scan_segments(sources.table, index, config, segments, options.segments)
        .map_ok(Read::Scanned);
    let list = list_bucket(sources.bucket, index, &config.key_prefix).map_ok(Read::Listed);
    let mut reads = pin!(futures::stream::select(scan, list));
    while let Some(read) = reads.try_next().await? {
        match read {
            Read::Scanned(page) => {
                state.items_scanned += page.items;
                state.segments_done += u32::from(page.done);
            }
            Read::Listed(page) => {
                state.objects_listed += page.objects;
                state.listing_done = page.done;
            }
        }
        progress(state);
    }
    Ok(())
}

/// Walks the index a batch at a time, judging each group and repairing drifted users.
async fn judge_and_repair<T: TableScanner, B: BucketReader, S: ObjectStore>(
    sources: &Sources<'_, T, B, S>,
    index: &Index,
    config: &usersync_function::Config,
    encryption: BucketEncryption,
    options: &ReconcileOptions,
    state: &mut ReconcileProgress,
    progress: &mut (dyn FnMut(&ReconcileProgress) + Send),
) -> Result<Tally, ReconcileError> {
    let repairer = UserRepairer {
        reader: sources.table,
        store: sources.store,
        config,
        hook: options.hook.as_deref(),
    };
    let judge = Judge {
        bucket: sources.bucket,
        repairer: &repairer,
        index,
        config,
        options,
        encryption,
    };
    let mut tally = Tally::default();
    let mut after: Option<String> = None;
    loop {
        let walked = index.walk(
            after.as_deref(),
            config,
            &|text| options.judges(text),
            BATCH,
        )?;
        let recorded = index.recorded_repairs(
            walked
                .groups
                .iter()
                .filter(|group| group.name().is_some())
                .map(|group| group.key.as_str()),
        )?;
        // Collected first (a batch is small): a stream mapping borrowed groups to futures
        // would not be provably `Send`. `buffered` keeps key order, so the examples are the
        // first in key order.
        let judged: Vec<BoxFuture<'_, Result<Outcome, ReconcileError>>> = walked
            .groups
            .iter()
            .map(|group| {
                judge
                    .group(group, recorded.get(&group.key).copied())
                    .boxed()
            })
            .collect();
        let mut outcomes: Vec<Outcome> = futures::stream::iter(judged)
            .buffered(options.concurrency)
            .try_collect()
            .await?;
        if options.repair {
            judge.repair(&walked.groups, &mut outcomes).await?;
        }
        for (group, outcome) in walked.groups.iter().zip(&outcomes) {
            tally.add(group, outcome.verdict, &outcome.repair, config);
            tally.body_reads += outcome.body_reads;
            tally.presence_checks += outcome.presence_checks;
        }
        state.judged += walked.groups.len() as u64;
        state.repaired = tally.repaired;
        state.failed = tally.failed;
        progress(state);
        after = walked.groups.last().map(|group| group.key.clone());
        if walked.complete {
            return Ok(tally);
        }
    }
}

/// What became of one group.
struct Outcome {
    verdict: Verdict,
    repair: Repair,
    body_reads: u64,
    presence_checks: u64,
}

/// Judges and repairs one group at a time.
struct Judge<'a, T, B, S> {
    bucket: &'a B,
    repairer: &'a UserRepairer<'a, T, S>,
    index: &'a Index,
    config: &'a usersync_function::Config,
    options: &'a ReconcileOptions,
    encryption: BucketEncryption,
}

impl<T: TableScanner, B: BucketReader, S: ObjectStore> Judge<'_, T, B, S> {
    /// Judges one group; repairs come after, a batch at a time ([`Judge::repair`]).
    async fn group(
        &self,
        group: &Group,
        recorded: Option<RecordedRepair>,
    ) -> Result<Outcome, ReconcileError> {
        match recorded {
            // Repaired by an interrupted attempt of this run: judged then, not again (the
            // object now reads as repaired), and not repaired twice.
            Some(RecordedRepair::Done(verdict)) => {
                return Ok(Outcome {
                    verdict,
                    repair: Repair::Repaired,
                    body_reads: 0,
                    presence_checks: 0,
                })
            }
            // Being repaired when that attempt stopped: its write may have landed, so the
            // object may read as in step now; the verdict is the one judged then, and the
            // repair is done again.
            Some(RecordedRepair::Pending(verdict)) => {
                return Ok(Outcome {
                    verdict,
                    repair: Repair::None,
                    body_reads: 0,
                    presence_checks: 0,
                })
            }
            None => {}
        }
        let mut outcome = Outcome {
            verdict: Verdict::NoUser,
            repair: Repair::None,
            body_reads: 0,
            presence_checks: 0,
        };
        let shared = self.options.share.is_some_and(|share| share.count > 1);
        let pending = group.pending(
            self.config,
            &|text| self.options.judges(text),
            shared,
            self.encryption,
        );
        outcome.verdict = match pending {
            Pending::Settled(verdict) => verdict,
            Pending::ReadBody { key, expected, .. } => {
                outcome.body_reads += 1;
                let read = self.bucket.body_md5(&key).await?;
                body_verdict(read.as_ref(), &expected)
            }
            Pending::CheckPresence { name } => {
                outcome.presence_checks += 1;
                match self.repairer.reader.read_user(&name).await? {
                    Some(_) => Verdict::NoUser,
                    None => Verdict::Orphaned,
                }
            }
        };
        Ok(outcome)
    }

    /// Repairs the drifted users of a judged batch, from fresh consistent reads: an orphan
    /// whose user appeared meanwhile gets the user's object, and a user changed meanwhile is
    /// written as they are now.
    async fn repair(
        &self,
        groups: &[Group],
        outcomes: &mut [Outcome],
    ) -> Result<(), ReconcileError> {
        // Each drifted user: where it is in the batch, its name, and what the index records.
        let drifted: Vec<(usize, &str, (&str, Verdict))> = groups
            .iter()
            .zip(outcomes.iter())
            .enumerate()
            .filter(|(_, (_, outcome))| {
                outcome.verdict.is_drift() && matches!(outcome.repair, Repair::None)
            })
            .filter_map(|(at, (group, outcome))| {
                Some((at, group.name()?, (group.key.as_str(), outcome.verdict)))
            })
            .collect();
        if drifted.is_empty() {
            return Ok(());
        }
        let pending: Vec<(&str, Verdict)> = drifted.iter().map(|(_, _, record)| *record).collect();
        self.index.record_pending(&pending)?;
        let names: Vec<String> = drifted
            .iter()
            .map(|(_, name, _)| (*name).to_owned())
            .collect();
        let results = self
            .repairer
            .repair_all(&names, self.options.concurrency)
            .await;
        let mut repaired = Vec::with_capacity(drifted.len());
        for ((at, _, record), result) in drifted.iter().zip(results) {
            outcomes[*at].repair = match result {
                Ok(_) => {
                    repaired.push(*record);
                    Repair::Repaired
                }
                Err(err) => Repair::Failed(chain(&err)),
            };
        }
        self.index.record_repairs(&repaired)?;
        Ok(())
    }
}
