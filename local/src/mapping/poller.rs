//! An event source mapping, run on this machine: reads a DynamoDB stream and invokes the
//! function with its records, under the mapping's settings, as Lambda's own poller does.
//!
//! - Shards are found through `DescribeStream` and re-checked every
//!   [`PollerOptions::discovery_interval`]; a child shard is read only after its parent has been
//!   read to its end, so a user's records stay in order across shard splits.
//! - Each shard has one iterator and, in a round, up to `ParallelizationFactor` batches in
//!   flight at once, one per lane (1 by default: one batch at a time, in stream order). A
//!   record goes to the lane its partition key (the record's `Keys`, the user's key) hashes to,
//!   so all of one user's records go to the same lane, in their order: Lambda "still ensures
//!   in-order processing at the item (partition and sort key) level"
//!   (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html; the parameter:
//!   https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html). A lane takes
//!   records until its batch is full; a record it cannot take stays in the shard's queue with
//!   every later record of that lane, for the next round.
//! - The shard moves on only past a finished round: the next round starts, and the shard ends,
//!   only when every lane's batch has been applied or discarded. Each lane keeps the failure
//!   rules of [`crate::mapping::batch`] (a failed lane is retried, bisected or discarded on its
//!   own records) while the round waits for it, so a lane that retries holds the shard as one
//!   batch does at factor 1. (Lambda's lanes go on independently; waiting for the whole round is
//!   this poller's simpler way to never move past an unfinished lane.)
//!   Shards are read concurrently; their invocations go to the same [`Invoker`].
//! - A batch holds up to `BatchSize` records and Lambda's 6 MB payload limit; with a batching
//!   window the poller keeps reading until a round's worth of records (`BatchSize` times the
//!   factor) is read or the window has passed since the round's first record.
//! - Failures follow [`crate::mapping::batch`]: partial batch responses, bisection, bounded retries,
//!   maximum record age, on-failure destination.
//! - `StartingPosition` applies to the shards open when the poller starts; shards that appear
//!   later are read from their start, as Lambda does. Checkpoints live in memory: a restarted
//!   poller starts again from `StartingPosition` (the function's operations are idempotent,
//!   so replaying is safe).
//! - A held poller ([`Poller::hold`]) takes the iterators of the shards open at its start before
//!   anything else, says so, and then reads on but invokes nothing until it is released: what
//!   is written from that point on waits in the stream (and, a batch per shard, in memory) for
//!   the caller to finish what it does first (`dev` reconciles the whole table).
//! - With a [`MappingState`] to follow ([`Poller::follow_state`]), the mapping's state is read
//!   again at each shard discovery: while the mapping is disabled the poller reads and invokes
//!   nothing (a batch already being invoked finishes), and it goes on from where it stopped once
//!   the mapping is enabled again, as Lambda does: "When false, Lambda pauses polling and
//!   invocation" (https://docs.aws.amazon.com/lambda/latest/dg/API_UpdateEventSourceMapping.html).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::mapping::batch::{BatchEvent, BatchRunner, Discards, RetryBackoff};
use crate::mapping::destination::{DestinationError, QueueDestination};
use crate::mapping::settings::{MappingSettings, StartingPosition};
use crate::runtime::invoke::Invoker;
use deployer::streams::reader::{ReadError, ReadPosition, ShardReader, MAX_RECORDS_PER_READ};
use deployer::streams::record::StreamEventRecord;
use deployer::streams::shards::{describe_shards, ShardListing};

/// Lambda's limit on a synchronous invocation's payload.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// `{"Records":[` and `]}` around the records, and a comma between two.
const PAYLOAD_OVERHEAD_BYTES: usize = 14;

/// How often the poller looks for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollerOptions {
    /// Wait between reads of a shard that had nothing new (Lambda polls about four times a
    /// second).
    pub poll_interval: Duration,
    /// How often the stream's shard list is read again.
    pub discovery_interval: Duration,
    /// Waits between retries of a failed batch.
    pub retry_backoff: RetryBackoff,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            discovery_interval: Duration::from_secs(5),
            retry_backoff: RetryBackoff::default(),
        }
    }
}

/// What the poller tells its observer as it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollerEvent {
    /// The mapping is disabled: the poller reads nothing until it is enabled again (when it
    /// follows the mapping's state) or stopped.
    MappingDisabled {
        uuid: String,
    },
    /// The mapping was enabled again: the poller goes on reading.
    MappingEnabled {
        uuid: String,
    },
    /// The mapping's state could not be read; the last known state stands and it is read again
    /// at the next shard discovery.
    StateReadFailed {
        uuid: String,
        message: String,
    },
    /// The mapping declares filter criteria, which the local poller does not apply: every
    /// record is delivered.
    FiltersNotApplied {
        uuid: String,
    },
    ShardStarted {
        shard_id: String,
        position: ReadPosition,
    },
    /// The shard is closed and every record in it was applied or discarded.
    ShardFinished {
        shard_id: String,
    },
    Batch(BatchEvent),
    /// A read of the stream failed; it is retried.
    ReadFailed {
        message: String,
    },
}

/// Receives [`PollerEvent`]s; called from the poller's tasks, so it should be quick.
pub type PollerObserver = Arc<dyn Fn(PollerEvent) + Send + Sync>;

/// The deployed mapping's state, read again while the poller runs.
pub trait MappingState: Send + Sync {
    /// Whether the mapping reads its stream now, or why that could not be told.
    fn enabled(&self) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + '_>>;
}

/// Why the poller stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("the stream {stream_arn} no longer exists (was the stack torn down?): {message}")]
    StreamGone { stream_arn: String, message: String },
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// One mapping's poller.
pub struct Poller<I> {
    shared: Arc<Shared<I>>,
    /// Where the mapping's state is read again, if anywhere.
    state: Option<Arc<dyn MappingState>>,
    hold: Option<Hold>,
}

/// A held start: invocations wait for `release` to turn true; `positioned` is told once every
/// shard open at the start has its iterator.
struct Hold {
    release: watch::Receiver<bool>,
    positioned: oneshot::Sender<()>,
}

struct Shared<I> {
    settings: MappingSettings,
    streams: aws_sdk_dynamodbstreams::Client,
    destination: Option<QueueDestination>,
    invoker: Arc<I>,
    options: PollerOptions,
    observer: PollerObserver,
}

impl<I: Invoker + 'static> Poller<I> {
    /// A poller for `settings`, invoking `invoker`. The on-failure destination, if the mapping
    /// has one, is looked up through `sqs` now, so a missing queue is reported before any
    /// record is read.
    pub async fn new(
        settings: MappingSettings,
        streams: aws_sdk_dynamodbstreams::Client,
        sqs: aws_sdk_sqs::Client,
        invoker: Arc<I>,
        options: PollerOptions,
        observer: PollerObserver,
    ) -> Result<Self, PollerError> {
        let destination = match &settings.on_failure_destination {
            Some(arn) => Some(QueueDestination::resolve(sqs, arn).await?),
            None => None,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                streams,
                destination,
                invoker,
                options,
                observer,
            }),
            state: None,
            hold: None,
        })
    }

    /// Holds the poller: it takes the iterator of every shard open at its start first (so that,
    /// from `StartingPosition::Latest`, what is written after that is read), tells
    /// `positioned`, and then reads on but invokes nothing until `release` turns true. The
    /// `positioned` sender is dropped unsent when the poller stops before that.
    pub fn hold(mut self, release: watch::Receiver<bool>, positioned: oneshot::Sender<()>) -> Self {
        self.hold = Some(Hold {
            release,
            positioned,
        });
        self
    }

    /// Follows the mapping's state as `state` reports it, read again at each shard discovery:
    /// reading pauses while it is disabled and goes on once it is enabled.
    pub fn follow_state(mut self, state: Arc<dyn MappingState>) -> Self {
        self.state = Some(state);
        self
    }

    pub fn settings(&self) -> &MappingSettings {
        &self.shared.settings
    }

    /// Runs until `stop` turns true (then returns `Ok`) or the stream disappears. A batch in
    /// flight when `stop` turns is abandoned; its records were not checkpointed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), PollerError> {
        let shared = self.shared;
        let state = self.state;
        // Unheld, the release is a flag that is always set (its sender gone).
        let (release, mut positioned) = match self.hold {
            Some(hold) => (hold.release, Some(hold.positioned)),
            None => (watch::channel(true).1, None),
        };
        let observe = |event| (shared.observer)(event);
        let uuid = &shared.settings.uuid;
        if !shared.settings.enabled {
            observe(PollerEvent::MappingDisabled { uuid: uuid.clone() });
            // Nothing would ever enable it.
            if state.is_none() {
                let _ = stop.wait_for(|stopped| *stopped).await;
                return Ok(());
            }
        }
        if shared.settings.has_filter_criteria {
            observe(PollerEvent::FiltersNotApplied { uuid: uuid.clone() });
        }

        let (enabled, enabled_now) = watch::channel(shared.settings.enabled);
        let mut shards = ShardTable::default();
        let mut tasks: JoinSet<(String, Result<(), PollerError>)> = JoinSet::new();
        let mut first_discovery = true;
        loop {
            if let Some(state) = &state {
                refresh_state(state.as_ref(), &enabled, uuid, &observe).await;
            }
            match describe_shards(&shared.streams, &shared.settings.stream_arn).await {
                Ok(found) => {
                    for (shard_id, position) in shards.merge(
                        found,
                        first_discovery.then_some(shared.settings.starting_position),
                    ) {
                        observe(PollerEvent::ShardStarted {
                            shard_id: shard_id.clone(),
                            position: position.clone(),
                        });
                        let mut reader = ShardReader::new(
                            shared.streams.clone(),
                            &shared.settings.stream_arn,
                            &shard_id,
                            position,
                        );
                        // Still to tell: these are the shards open at the start.
                        if positioned.is_some()
                            && !open_reader(&shared, &mut reader, &mut stop).await?
                        {
                            tasks.shutdown().await;
                            return Ok(());
                        }
                        let shared = Arc::clone(&shared);
                        let stop = stop.clone();
                        let enabled = enabled_now.clone();
                        let release = release.clone();
                        tasks.spawn(async move {
                            let result = read_shard(&shared, reader, stop, enabled, release).await;
                            (shard_id, result)
                        });
                    }
                    first_discovery = false;
                    if let Some(positioned) = positioned.take() {
                        let _ = positioned.send(());
                    }
                }
                Err(ReadError::StreamGone {
                    stream_arn,
                    message,
                }) => {
                    return Err(PollerError::StreamGone {
                        stream_arn,
                        message,
                    })
                }
                Err(err) => observe(PollerEvent::ReadFailed {
                    message: err.to_string(),
                }),
            }

            let next_discovery = tokio::time::sleep(shared.options.discovery_interval);
            tokio::pin!(next_discovery);
            let finished = tokio::select! {
                // The guard `wait_for` returns must not be held across the shutdown's await.
                _ = stop.wait_for(|stopped| *stopped) => Err(()),
                () = &mut next_discovery => Ok(None),
                Some(joined) = tasks.join_next() => Ok(joined.ok()),
            };
            let Ok(finished) = finished else {
                tasks.shutdown().await;
                return Ok(());
            };
            if let Some((shard_id, result)) = finished {
                result?;
                if *stop.borrow() {
                    return Ok(());
                }
                observe(PollerEvent::ShardFinished {
                    shard_id: shard_id.clone(),
                });
                // A parent just finished: its children may start at the next listing, now.
                shards.finish(&shard_id);
            }
        }
    }
}

/// Reads the mapping's state from `state` and, when it changed, publishes it on `enabled` and
/// tells the observer.
async fn refresh_state(
    state: &dyn MappingState,
    enabled: &watch::Sender<bool>,
    uuid: &str,
    observe: &(dyn Fn(PollerEvent) + Sync),
) {
    match state.enabled().await {
        Ok(now) => {
            if enabled.send_replace(now) != now {
                let uuid = uuid.to_owned();
                observe(if now {
                    PollerEvent::MappingEnabled { uuid }
                } else {
                    PollerEvent::MappingDisabled { uuid }
                });
            }
        }
        Err(message) => observe(PollerEvent::StateReadFailed {
            uuid: uuid.to_owned(),
            message,
        }),
    }
}

/// Waits while `flag` (the mapping being enabled, a hold being released) is unset; `false` when
/// the poller stops meanwhile.
async fn until_set(flag: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) -> bool {
    if *flag.borrow() {
        return true;
    }
    // The guards `wait_for` returns are dropped within their arm.
    tokio::select! {
        resumed = flag.wait_for(|on| *on) => resumed.is_ok(),
        _ = stop.wait_for(|stopped| *stopped) => false,
    }
}

/// After the `failures`-th failed read in a row: a stream that is gone ends the poller; any
/// other failure is reported and waited out, longer after each one. `false` when the poller
/// stops meanwhile.
async fn after_read_failure<I>(
    shared: &Shared<I>,
    stop: &mut watch::Receiver<bool>,
    err: ReadError,
    failures: u32,
) -> Result<bool, PollerError> {
    if let ReadError::StreamGone {
        stream_arn,
        message,
    } = err
    {
        return Err(PollerError::StreamGone {
            stream_arn,
            message,
        });
    }
    (shared.observer)(PollerEvent::ReadFailed {
        message: err.to_string(),
    });
    let wait = shared.options.retry_backoff.max.min(
        shared
            .options
            .poll_interval
            .saturating_mul(failures.min(20)),
    );
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(true),
        _ = stop.wait_for(|stopped| *stopped) => Ok(false),
    }
}

/// Takes `reader`'s iterator now, retrying what is worth retrying; `false` when the poller
/// stops meanwhile.
async fn open_reader<I>(
    shared: &Shared<I>,
    reader: &mut ShardReader,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, PollerError> {
    let mut failures = 0u32;
    loop {
        match reader.open().await {
            Ok(()) => return Ok(true),
            Err(err) => {
                failures += 1;
                if !after_read_failure(shared, stop, err, failures).await? {
                    return Ok(false);
                }
            }
        }
    }
}

/// Every shard of the stream ever listed, and whether it is being read or done.
#[derive(Default)]
struct ShardTable {
    listed: BTreeMap<String, ShardListing>,
    state: BTreeMap<String, ShardState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardState {
    Reading,
    Done,
}

impl ShardTable {
    /// Adds a fresh listing and returns the shards to start reading now, with where to start.
    /// `starting_position` is the mapping's, given on the first listing only.
    fn merge(
        &mut self,
        listing: Vec<ShardListing>,
        starting_position: Option<StartingPosition>,
    ) -> Vec<(String, ReadPosition)> {
        for shard in listing {
            if starting_position == Some(StartingPosition::Latest) && shard.closed {
                // LATEST starts at the tip of the stream: closed shards hold only older records.
                self.state.insert(shard.shard_id.clone(), ShardState::Done);
            }
            self.listed.insert(shard.shard_id.clone(), shard);
        }
        let mut ready = Vec::new();
        for (shard_id, shard) in &self.listed {
            if self.state.contains_key(shard_id) {
                continue;
            }
            // A parent that aged out of the listing has nothing left to read.
            let parent_done = shard.parent_shard_id.as_ref().is_none_or(|parent| {
                !self.listed.contains_key(parent)
                    || self.state.get(parent) == Some(&ShardState::Done)
            });
            if parent_done {
                let position = match starting_position {
                    Some(StartingPosition::Latest) => ReadPosition::Latest,
                    _ => ReadPosition::TrimHorizon,
                };
                ready.push((shard_id.clone(), position));
            }
        }
        for (shard_id, _) in &ready {
            self.state.insert(shard_id.clone(), ShardState::Reading);
        }
        ready
    }

    fn finish(&mut self, shard_id: &str) {
        self.state.insert(shard_id.to_owned(), ShardState::Done);
    }
}

/// Reads one shard to its end (or until stopped) through `reader`, invoking the function batch
/// by batch; nothing is read or invoked while `enabled` says the mapping is disabled, and
/// nothing is invoked until `release` is set.
async fn read_shard<I: Invoker>(
    shared: &Shared<I>,
    mut reader: ShardReader,
    mut stop: watch::Receiver<bool>,
    mut enabled: watch::Receiver<bool>,
    mut release: watch::Receiver<bool>,
) -> Result<(), PollerError> {
    let settings = &shared.settings;
    let shard_id = reader.shard_id().to_owned();
    let shard_id = shard_id.as_str();
    let observer = Arc::clone(&shared.observer);
    let observe_batch = move |event: BatchEvent| observer(PollerEvent::Batch(event));
    let runner = BatchRunner {
        settings,
        shard_id,
        invoker: shared.invoker.as_ref(),
        destination: shared.destination.as_ref(),
        backoff: shared.options.retry_backoff,
        observe: &observe_batch,
    };
    let lanes = settings.parallelization_factor.max(1);
    // What a round can take at most: a full batch in every lane.
    let round_size = settings.batch_size.saturating_mul(lanes);
    let mut pending: VecDeque<StreamEventRecord> = VecDeque::new();
    let mut read_failures = 0u32;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // Gather a batch: until it is full, the shard has ended, or the batching window (from
        // the first record gathered) has passed.
        let mut first_record_at: Option<Instant> = None;
        loop {
            if pending.len() >= round_size || reader.is_finished() {
                break;
            }
            if first_record_at.is_none() && !pending.is_empty() {
                first_record_at = Some(Instant::now());
            }
            // Held, the reader reads on until a batch is full: reading keeps the iterator alive
            // (it expires when unused for 15 minutes), and a full batch is past its LATEST start.
            let held = !*release.borrow();
            // With no window, whatever one read brought is a batch.
            if !held && first_record_at.is_some_and(|at| at.elapsed() >= settings.batching_window) {
                break;
            }
            if !until_set(&mut enabled, &mut stop).await {
                return Ok(());
            }
            let wanted = (round_size - pending.len()).min(MAX_RECORDS_PER_READ);
            let read = tokio::select! {
                read = reader.read(wanted) => read,
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            };
            let got = match read {
                Ok(records) => {
                    read_failures = 0;
                    let got = records.len();
                    pending.extend(records);
                    got
                }
                Err(err) => {
                    read_failures += 1;
                    if !after_read_failure(shared, &mut stop, err, read_failures).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            if got == 0 && !reader.is_finished() {
                let wait = match first_record_at {
                    Some(at) if !held => shared
                        .options
                        .poll_interval
                        .min(settings.batching_window.saturating_sub(at.elapsed())),
                    _ => shared.options.poll_interval,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                }
            }
        }
        if pending.is_empty() {
            if reader.is_finished() {
                return Ok(());
            }
            continue;
        }

        // Disabled since these records were read: they wait, unsent, for the mapping; held,
        // they wait for the release.
        if !until_set(&mut enabled, &mut stop).await || !until_set(&mut release, &mut stop).await {
            return Ok(());
        }
        run_round(&runner, &mut pending, lanes, &stop).await;
    }
}

/// Runs one round of a shard: takes the next batch of each of `lanes` lanes off the front of
/// `pending` ([`take_lane_batches`]) and runs them through `runner` at once. Returns when every
/// one of them has been applied or discarded, or when the poller stops (the round is then
/// abandoned, unfinished, as a batch in flight is).
async fn run_round<I: Invoker, D: Discards>(
    runner: &BatchRunner<'_, I, D>,
    pending: &mut VecDeque<StreamEventRecord>,
    lanes: usize,
    stop: &watch::Receiver<bool>,
) {
    let batches = take_lane_batches(pending, lanes, runner.settings.batch_size);
    let runs = batches.into_iter().map(|batch| {
        let mut stop_for_batch = stop.clone();
        runner.run(batch, async move {
            let _ = stop_for_batch.wait_for(|stopped| *stopped).await;
        })
    });
    futures::future::join_all(runs).await;
}

/// Takes the next batch of each of `lanes` lanes off `pending` (records in shard order): each
/// record goes to the lane of its partition key ([`lane_of`]), which takes it while its batch
/// has room under `batch_size` and Lambda's payload limit (a lane's first record always goes).
/// The first record a lane cannot take closes it for this round, so a lane's batch is the
/// first records of that lane, in order, and what stays in `pending` keeps its order: every
/// record of one key comes after those of its key taken now. Returns the lanes' non-empty
/// batches; with one lane, exactly [`take_batch`]'s.
fn take_lane_batches(
    pending: &mut VecDeque<StreamEventRecord>,
    lanes: usize,
    batch_size: usize,
) -> Vec<Vec<StreamEventRecord>> {
    if lanes <= 1 {
        let batch = take_batch(pending, batch_size);
        return if batch.is_empty() {
            Vec::new()
        } else {
            vec![batch]
        };
    }
    let mut batches: Vec<Vec<StreamEventRecord>> = (0..lanes).map(|_| Vec::new()).collect();
    let mut bytes = vec![PAYLOAD_OVERHEAD_BYTES; lanes];
    let mut closed = vec![false; lanes];
    let mut rest = VecDeque::new();
    for record in pending.drain(..) {
        let lane = lane_of(&record, lanes);
        if !closed[lane] {
            let batch = &mut batches[lane];
            let with = bytes[lane] + record.payload_bytes + 1;
            if batch.len() < batch_size && (batch.is_empty() || with <= MAX_PAYLOAD_BYTES) {
                bytes[lane] = with;
                batch.push(record);
                continue;
            }
            closed[lane] = true;
        }
        rest.push_back(record);
    }
    *pending = rest;
    batches.retain(|batch| !batch.is_empty());
    batches
}

/// The lane (0 to `lanes - 1`) of a record: a hash of its partition key, the stream record's
/// `dynamodb.Keys` with the attributes in name order, so that every record of one item (one
/// user) has the same lane. A record without keys goes to lane 0.
fn lane_of(record: &StreamEventRecord, lanes: usize) -> usize {
    use std::hash::{DefaultHasher, Hash, Hasher};

    let Some(keys) = record.event["dynamodb"]["Keys"].as_object() else {
        return 0;
    };
    let mut attributes: Vec<(&String, String)> = keys
        .iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect();
    attributes.sort();
    // SipHash with fixed keys: the same lane for a key throughout the run.
    let mut hasher = DefaultHasher::new();
    attributes.hash(&mut hasher);
    let lanes = u64::try_from(lanes.max(1)).unwrap_or(u64::MAX);
    usize::try_from(hasher.finish() % lanes).unwrap_or(0)
}

/// Takes the next batch off the front of `pending`: at most `batch_size` records whose event
/// fits in Lambda's payload limit (at least one record, which the function will then refuse
/// if it alone is too large, as Lambda would).
fn take_batch(
    pending: &mut VecDeque<StreamEventRecord>,
    batch_size: usize,
) -> Vec<StreamEventRecord> {
    let mut bytes = PAYLOAD_OVERHEAD_BYTES;
    let mut count = 0;
    for record in pending.iter().take(batch_size) {
        bytes += record.payload_bytes + 1;
        if count > 0 && bytes > MAX_PAYLOAD_BYTES {
            break;
        }
        count += 1;
    }
    pending.drain(..count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing(id: &str, parent: Option<&str>, closed: bool) -> ShardListing {
        ShardListing {
            shard_id: id.into(),
            parent_shard_id: parent.map(Into::into),
            closed,
        }
    }

    fn ids(ready: &[(String, ReadPosition)]) -> Vec<&str> {
        ready.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn children_wait_for_their_parents() {
        let mut table = ShardTable::default();
        let ready = table.merge(
            vec![
                listing("a", None, true),
                listing("b", Some("a"), true),
                listing("c", Some("b"), false),
                listing("d", Some("gone"), false),
            ],
            Some(StartingPosition::TrimHorizon),
        );
        assert_eq!(ids(&ready), ["a", "d"]);
        assert!(ready.iter().all(|(_, p)| *p == ReadPosition::TrimHorizon));
        assert!(
            table.merge(vec![], None).is_empty(),
            "nothing new until a finishes"
        );
        table.finish("a");
        assert_eq!(ids(&table.merge(vec![], None)), ["b"]);
        table.finish("b");
        assert_eq!(ids(&table.merge(vec![], None)), ["c"]);
        table.finish("c");
        // A split after the start: the new children are read from their beginning.
        let ready = table.merge(
            vec![
                listing("c", Some("b"), true),
                listing("e", Some("c"), false),
            ],
            None,
        );
        assert_eq!(ready, [("e".to_owned(), ReadPosition::TrimHorizon)]);
    }

    #[test]
    fn latest_skips_closed_shards_and_starts_open_ones_at_the_tip() {
        let mut table = ShardTable::default();
        let ready = table.merge(
            vec![
                listing("old", None, true),
                listing("open", Some("old"), false),
            ],
            Some(StartingPosition::Latest),
        );
        assert_eq!(ready, [("open".to_owned(), ReadPosition::Latest)]);
    }

    fn record(seq: usize, bytes: usize) -> StreamEventRecord {
        StreamEventRecord {
            event: json!({}),
            sequence_number: seq.to_string(),
            created_at_epoch_s: None,
            payload_bytes: bytes,
        }
    }

    /// A mapping state that answers from a script, one answer per read.
    struct ScriptedState(std::sync::Mutex<VecDeque<Result<bool, String>>>);

    impl MappingState for ScriptedState {
        fn enabled(&self) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + '_>> {
            let next = self
                .0
                .lock()
                .expect("not poisoned")
                .pop_front()
                .expect("a scripted answer");
            Box::pin(async move { next })
        }
    }

    /// Each read of the mapping's state is published to the shard readers; a change is told
    /// once, a failed read leaves the last known state and is told as such.
    #[tokio::test]
    async fn the_mapping_state_is_followed_and_each_change_told_once() {
        let state = ScriptedState(std::sync::Mutex::new(VecDeque::from([
            Ok(true),
            Ok(false),
            Ok(false),
            Err("throttled".to_owned()),
            Ok(true),
        ])));
        let (enabled, enabled_now) = watch::channel(true);
        let events = std::sync::Mutex::new(Vec::new());
        let observe = |event| events.lock().expect("not poisoned").push(event);

        for expected in [true, false, false, false, true] {
            refresh_state(&state, &enabled, "m-1", &observe).await;
            assert_eq!(*enabled_now.borrow(), expected);
        }

        let uuid = "m-1".to_owned();
        assert_eq!(
            events.into_inner().expect("not poisoned"),
            [
                PollerEvent::MappingDisabled { uuid: uuid.clone() },
                PollerEvent::StateReadFailed {
                    uuid: uuid.clone(),
                    message: "throttled".to_owned(),
                },
                PollerEvent::MappingEnabled { uuid },
            ]
        );
    }

    /// A shard reader waits, reading and invoking nothing, while the mapping is disabled; it
    /// goes on when the mapping is enabled, and gives up when the poller stops.
    #[tokio::test]
    async fn a_reader_waits_while_the_mapping_is_disabled() {
        let short = Duration::from_millis(50);
        let (set_enabled, mut enabled) = watch::channel(false);
        let (set_stop, mut stop) = watch::channel(false);

        let (resumed, ()) = tokio::join!(until_set(&mut enabled, &mut stop), async {
            tokio::time::sleep(short).await;
            set_enabled.send_replace(true);
        });
        assert!(resumed, "goes on once enabled");
        assert!(until_set(&mut enabled, &mut stop).await, "enabled: at once");

        set_enabled.send_replace(false);
        {
            let waiting = until_set(&mut enabled, &mut stop);
            tokio::pin!(waiting);
            assert!(
                tokio::time::timeout(short, &mut waiting).await.is_err(),
                "disabled: still waiting"
            );
            set_stop.send_replace(true);
            assert!(!waiting.await, "stopped while disabled");
        }
    }

    /// A record of `user` (the table's key `name`), as the stream delivers it.
    fn user_record(seq: usize, user: &str, bytes: usize) -> StreamEventRecord {
        StreamEventRecord {
            event: json!({"dynamodb": {
                "Keys": {"name": {"S": user}},
                "SequenceNumber": seq.to_string(),
            }}),
            sequence_number: seq.to_string(),
            created_at_epoch_s: None,
            payload_bytes: bytes,
        }
    }

    fn user_of(record: &StreamEventRecord) -> String {
        record.event["dynamodb"]["Keys"]["name"]["S"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn sequences(records: &[StreamEventRecord]) -> Vec<usize> {
        records
            .iter()
            .map(|r| r.sequence_number.parse().unwrap())
            .collect()
    }

    /// `count` user names whose records go to `count` different lanes of `lanes`.
    fn users_in_different_lanes(count: usize, lanes: usize) -> Vec<String> {
        let mut found: Vec<(usize, String)> = Vec::new();
        for n in 0.. {
            let user = format!("user-{n}");
            let lane = lane_of(&user_record(0, &user, 1), lanes);
            if found.iter().all(|(l, _)| *l != lane) {
                found.push((lane, user));
            }
            if found.len() == count {
                break;
            }
        }
        found.into_iter().map(|(_, user)| user).collect()
    }

    #[test]
    fn a_users_records_always_go_to_the_same_lane() {
        for lanes in 1..=10 {
            for user in ["alice", "bob", "carol", "dave", ""] {
                let lane = lane_of(&user_record(1, user, 1), lanes);
                assert!(lane < lanes);
                assert_eq!(lane_of(&user_record(99, user, 5000), lanes), lane);
            }
        }
        // The key's attributes are taken in name order, whatever order the JSON has them in.
        let mut two_keys = user_record(1, "alice", 1);
        two_keys.event["dynamodb"]["Keys"] = json!({"a": {"S": "x"}, "b": {"N": "1"}});
        let mut reversed = user_record(2, "alice", 1);
        reversed.event["dynamodb"]["Keys"] = json!({"b": {"N": "1"}, "a": {"S": "x"}});
        assert_eq!(lane_of(&two_keys, 7), lane_of(&reversed, 7));
        // Keyless records stay together, in lane 0.
        assert_eq!(lane_of(&record(1, 1), 7), 0);
        // Ten users spread over more than one of four lanes.
        let lanes: std::collections::BTreeSet<usize> = (0..10)
            .map(|n| lane_of(&user_record(n, &format!("user-{n}"), 1), 4))
            .collect();
        assert!(lanes.len() > 1, "{lanes:?}");
    }

    #[test]
    fn lanes_take_every_record_of_a_user_together_and_in_order() {
        let users = ["ann", "ben", "cat", "dan", "eve", "fay", "gus"];
        let mut pending: VecDeque<_> = (0..21)
            .map(|n| user_record(n, users[n % users.len()], 100))
            .collect();
        let batches = take_lane_batches(&mut pending, 3, 100);
        assert!(pending.is_empty());
        assert!(!batches.is_empty() && batches.len() <= 3);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 21);
        for user in users {
            let holding: Vec<&Vec<StreamEventRecord>> = batches
                .iter()
                .filter(|b| b.iter().any(|r| user_of(r) == user))
                .collect();
            assert_eq!(holding.len(), 1, "{user}'s records are in one batch");
        }
        for batch in &batches {
            let seqs = sequences(batch);
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        }
    }

    #[test]
    fn a_full_lane_leaves_the_rest_of_its_records_in_order_for_the_next_round() {
        let users = users_in_different_lanes(2, 2);
        let (a, b) = (users[0].as_str(), users[1].as_str());
        // a's lane fills at two records; b's takes its own.
        let mut pending: VecDeque<_> = [
            user_record(1, a, 10),
            user_record(2, a, 10),
            user_record(3, b, 10),
            user_record(4, a, 10),
            user_record(5, b, 10),
            user_record(6, a, 10),
        ]
        .into();
        let batches = take_lane_batches(&mut pending, 2, 2);
        let taken: Vec<Vec<usize>> = batches.iter().map(|b| sequences(b)).collect();
        assert_eq!(taken, [vec![1, 2], vec![3, 5]]);
        assert_eq!(sequences(pending.make_contiguous()), [4, 6]);

        // A record too large for its lane's batch closes the lane: a smaller later record of
        // the same lane must not overtake it.
        let mut pending: VecDeque<_> = [
            user_record(1, a, 4 * 1024 * 1024),
            user_record(2, a, 3 * 1024 * 1024),
            user_record(3, a, 10),
            user_record(4, b, 10),
        ]
        .into();
        let batches = take_lane_batches(&mut pending, 2, 100);
        let taken: Vec<Vec<usize>> = batches.iter().map(|b| sequences(b)).collect();
        assert_eq!(taken, [vec![1], vec![4]]);
        assert_eq!(sequences(pending.make_contiguous()), [2, 3]);
    }

    #[test]
    fn one_lane_takes_the_batch_of_one_batch_at_a_time() {
        let make = || -> VecDeque<_> {
            (0..10)
                .map(|n| user_record(n, &format!("u{n}"), 2 * 1024 * 1024))
                .collect()
        };
        let (mut one, mut plain) = (make(), make());
        let batches = take_lane_batches(&mut one, 1, 4);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            sequences(&batches[0]),
            sequences(&take_batch(&mut plain, 4))
        );
        assert_eq!(one.len(), plain.len());
        assert!(take_lane_batches(&mut VecDeque::new(), 1, 4).is_empty());
        assert!(take_lane_batches(&mut VecDeque::new(), 4, 4).is_empty());
    }

    /// A function for rounds: every invocation is logged with its sequence numbers; one holding
    /// a `gated` record waits for `gate`; a record in `fail_once` is reported failed the first
    /// time it is invoked; each invocation takes a few milliseconds that vary with its first
    /// record. `applied` lists the records each invocation applied, as it ends.
    struct RoundFunction {
        gated: Option<usize>,
        gate: watch::Receiver<bool>,
        fail_once: std::sync::Mutex<std::collections::BTreeSet<usize>>,
        calls: std::sync::Mutex<Vec<Vec<usize>>>,
        applied: std::sync::Mutex<Vec<usize>>,
        in_flight: std::sync::atomic::AtomicUsize,
        most_in_flight: std::sync::atomic::AtomicUsize,
    }

    impl RoundFunction {
        fn new(gated: Option<usize>, gate: watch::Receiver<bool>, fail_once: &[usize]) -> Self {
            Self {
                gated,
                gate,
                fail_once: std::sync::Mutex::new(fail_once.iter().copied().collect()),
                calls: std::sync::Mutex::new(Vec::new()),
                applied: std::sync::Mutex::new(Vec::new()),
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                most_in_flight: std::sync::atomic::AtomicUsize::new(0),
            }
        }
        fn calls(&self) -> Vec<Vec<usize>> {
            self.calls.lock().unwrap().clone()
        }
        fn applied(&self) -> Vec<usize> {
            self.applied.lock().unwrap().clone()
        }
    }

    impl Invoker for RoundFunction {
        fn invoke_reporting_id(
            &self,
            payload: serde_json::Value,
        ) -> impl Future<Output = crate::runtime::invoke::Invoked> + Send {
            use crate::runtime::invoke::{InvokeOutcome, Invoked};
            let seqs: Vec<usize> = payload["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r["dynamodb"]["SequenceNumber"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            self.calls.lock().unwrap().push(seqs.clone());
            let first_failed = {
                let mut fail_once = self.fail_once.lock().unwrap();
                let failed = seqs.iter().position(|s| fail_once.contains(s));
                if let Some(i) = failed {
                    fail_once.remove(&seqs[i]);
                }
                failed
            };
            let gated = self.gated.is_some_and(|g| seqs.contains(&g));
            let mut gate = self.gate.clone();
            let delay = Duration::from_millis(u64::try_from(seqs[0] % 7).unwrap());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = self.in_flight.fetch_add(1, SeqCst) + 1;
                self.most_in_flight.fetch_max(now, SeqCst);
                if gated {
                    let _ = gate.wait_for(|open| *open).await;
                }
                tokio::time::sleep(delay).await;
                let done = first_failed.unwrap_or(seqs.len());
                self.applied.lock().unwrap().extend(&seqs[..done]);
                self.in_flight.fetch_sub(1, SeqCst);
                let outcome = match first_failed {
                    Some(i) => InvokeOutcome::Response(json!({
                        "batchItemFailures": [{"itemIdentifier": seqs[i].to_string()}]
                    })),
                    None => InvokeOutcome::Response(json!({})),
                };
                Invoked {
                    request_id: format!("req-{}", seqs[0]),
                    outcome,
                }
            }
        }
    }

    /// The destination type of runners without one (`destination: None`): never called.
    struct NoQueue;

    impl Discards for NoQueue {
        fn discard(
            &self,
            _message: serde_json::Value,
        ) -> impl Future<Output = Result<(), DestinationError>> + Send {
            std::future::ready(Ok(()))
        }
    }

    fn round_settings(lanes: usize, batch_size: usize) -> MappingSettings {
        MappingSettings {
            uuid: "m".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s".into(),
            batch_size,
            batching_window: Duration::ZERO,
            parallelization_factor: lanes,
            starting_position: StartingPosition::TrimHorizon,
            max_retry_attempts: Some(5),
            max_record_age: None,
            bisect_on_error: true,
            report_batch_item_failures: true,
            enabled: true,
            on_failure_destination: None,
            has_filter_criteria: false,
        }
    }

    fn runner<'a>(
        settings: &'a MappingSettings,
        function: &'a RoundFunction,
        observe: &'a (dyn Fn(BatchEvent) + Send + Sync),
    ) -> BatchRunner<'a, RoundFunction, NoQueue> {
        BatchRunner {
            settings,
            shard_id: "shard-1",
            invoker: function,
            destination: None,
            backoff: RetryBackoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            observe,
        }
    }

    /// Both lanes' batches are in flight at once; the round (and with it the shard: its next
    /// round, its end) does not go past the lane that has not finished, even though the other
    /// lane is done and has records waiting.
    #[tokio::test]
    async fn the_shard_does_not_move_past_an_unfinished_lane() {
        let users = users_in_different_lanes(2, 2);
        let (a, b) = (users[0].as_str(), users[1].as_str());
        let settings = round_settings(2, 2);
        let (open, gate) = watch::channel(false);
        let function = RoundFunction::new(Some(1), gate, &[]);
        let observe = |_: BatchEvent| {};
        let runner = runner(&settings, &function, &observe);
        let (_stop_tx, stop) = watch::channel(false);
        // Batches of two: a's lane takes 1 and 5, b's 2 and 3; 4 and 6 wait for a round.
        let mut pending: VecDeque<_> = [
            user_record(1, a, 10),
            user_record(2, b, 10),
            user_record(3, b, 10),
            user_record(4, b, 10),
            user_record(5, a, 10),
            user_record(6, a, 10),
        ]
        .into();

        {
            let round = run_round(&runner, &mut pending, 2, &stop);
            tokio::pin!(round);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), &mut round)
                    .await
                    .is_err(),
                "the round waits for a's lane"
            );
            // Both batches were invoked at once; b's finished, a's is still in flight, and
            // b's next record is not invoked although b's lane is idle.
            let mut calls = function.calls();
            calls.sort();
            assert_eq!(calls, [vec![1, 5], vec![2, 3]]);
            assert_eq!(function.applied(), [2, 3]);
            open.send_replace(true);
            round.await;
        }
        assert_eq!(function.applied(), [2, 3, 1, 5]);
        assert_eq!(sequences(pending.make_contiguous()), [4, 6]);
        run_round(&runner, &mut pending, 2, &stop).await;
        assert!(pending.is_empty());
        let mut last = function.calls().split_off(2);
        last.sort();
        assert_eq!(last, [vec![4], vec![6]]);
    }

    /// A stopped poller abandons the round: the unfinished lane's records are not applied and
    /// the round returns.
    #[tokio::test]
    async fn a_stop_abandons_an_unfinished_round() {
        let users = users_in_different_lanes(2, 2);
        let settings = round_settings(2, 10);
        let (_open, gate) = watch::channel(false);
        let function = RoundFunction::new(Some(1), gate, &[]);
        let observe = |_: BatchEvent| {};
        let runner = runner(&settings, &function, &observe);
        let (stop_tx, stop) = watch::channel(false);
        let mut pending: VecDeque<_> =
            [user_record(1, &users[0], 10), user_record(2, &users[1], 10)].into();
        let round = run_round(&runner, &mut pending, 2, &stop);
        let ((), ()) = tokio::join!(round, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop_tx.send_replace(true);
        });
        assert_eq!(function.applied(), [2], "a's record was never applied");
    }

    /// Many users over three lanes, rounds after rounds, with failures that each lane retries
    /// on its own: every user's records are applied exactly in stream order, and every record
    /// is applied.
    #[tokio::test]
    async fn each_users_records_are_applied_in_order_across_lanes_and_retries() {
        let users: Vec<String> = (0..9).map(|n| format!("user-{n}")).collect();
        let records: Vec<StreamEventRecord> = (0..120)
            .map(|n| user_record(n, &users[(n * 7 + n / 9) % users.len()], 50))
            .collect();
        let user_by_seq: BTreeMap<usize, String> = records
            .iter()
            .map(|r| (sequences(std::slice::from_ref(r))[0], user_of(r)))
            .collect();
        let settings = round_settings(3, 4);
        let (_open, gate) = watch::channel(true);
        let function = RoundFunction::new(None, gate, &[3, 17, 18, 40, 41, 77, 119]);
        let observe = |_: BatchEvent| {};
        let runner = runner(&settings, &function, &observe);
        let (_stop_tx, stop) = watch::channel(false);
        let mut pending: VecDeque<_> = records.into();
        let mut rounds = 0;
        while !pending.is_empty() {
            run_round(&runner, &mut pending, 3, &stop).await;
            rounds += 1;
        }
        assert!(rounds >= 120 / 12, "{rounds} rounds");
        let most = function
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} batches at once");

        let applied = function.applied();
        let mut sorted = applied.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..120).collect::<Vec<_>>(),
            "each record applied once"
        );
        for user in &users {
            let order: Vec<usize> = applied
                .iter()
                .copied()
                .filter(|s| user_by_seq[s] == *user)
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "{user}'s records applied out of order: {order:?}"
            );
        }
    }

    #[test]
    fn batches_respect_the_batch_size_and_the_payload_limit() {
        let mut pending: VecDeque<_> = (0..10).map(|n| record(n, 100)).collect();
        assert_eq!(take_batch(&mut pending, 4).len(), 4);
        assert_eq!(pending.len(), 6);
        assert_eq!(pending[0].sequence_number, "4");

        let mut big: VecDeque<_> = (0..5).map(|n| record(n, 2 * 1024 * 1024)).collect();
        assert_eq!(take_batch(&mut big, 100).len(), 2, "three would pass 6 MB");
        let mut huge: VecDeque<_> = [record(0, 7 * 1024 * 1024)].into();
        assert_eq!(
            take_batch(&mut huge, 100).len(),
            1,
            "a lone record always goes"
        );
    }
}
