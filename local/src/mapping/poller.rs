//! An event source mapping, run on this machine: reads a DynamoDB stream and invokes the
//! function with its records, under the mapping's settings, as Lambda's own poller does.
//!
//! - Shards are found through `DescribeStream` and re-checked every
//!   [`PollerOptions::discovery_interval`]; a child shard is read only after its parent has been
//!   read to its end, so a user's records stay in order across shard splits.
//! - Each shard has one iterator and at most one batch in flight (parallelization factor 1).
//!   Shards are read concurrently; their invocations go to the same [`Invoker`].
//! - A batch holds up to `BatchSize` records and Lambda's 6 MB payload limit; with a batching
//!   window the poller keeps reading until the batch is full or the window has passed since
//!   the batch's first record.
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

use crate::mapping::batch::{BatchEvent, BatchRunner, RetryBackoff};
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
            if pending.len() >= settings.batch_size || reader.is_finished() {
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
            let wanted = (settings.batch_size - pending.len()).min(MAX_RECORDS_PER_READ);
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
        let batch = take_batch(&mut pending, settings.batch_size);
        let mut stop_for_batch = stop.clone();
        runner
            .run(batch, async move {
                let _ = stop_for_batch.wait_for(|stopped| *stopped).await;
            })
            .await;
    }
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
