//! The pipeline under faults: S3 failing at a rate, S3 unreachable for a while (shorter and
//! longer than the mapping's retry budget, then `replay-failures`), the function killed in the
//! middle of a batch, and the emulator restarted in the middle of a deploy.
//!
//! Each test starts its own emulator, deploys its own stack with settings suited to it, and
//! runs the real `bootstrap` in a local pipeline whose S3 traffic (and only that) goes through
//! a fault-injecting proxy (`itests::faults`): the function's `AWS_ENDPOINT_URL_S3` names the
//! proxy. Waits are bounded and polled. The stack is torn down, the function stopped and the
//! emulator killed also when a test fails. Each test prints what it injected and what the
//! mapping did (`--nocapture` shows it); the function's output and the poller's events are in
//! `target/usersync/itests/<stack>.function.log`.
//!
//! With the `soak` feature (`cargo xtask test --soak`), `soak_ten_thousand_users_under_faults`
//! runs the 30% case scaled to 10,000 users inserted and 3,000 deleted (about two minutes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use deployer::artifact::{self, Artifact, BuildOptions, Purpose};
use deployer::console::RecordingConsole;
use deployer::mirror_check::{self, MirrorDiff};
use deployer::replay::{self, compare_sequence_numbers, Outcome, ReplayOptions};
use deployer::settings::StackSettings;
use deployer::streams::reader::{ReadPosition, ShardReader};
use deployer::streams::shards::describe_shards;
use deployer::target::Target;
use deployer::template::output;
use deployer::workflow;
use itests::emulator::REGION;
use itests::faults::{FaultConfig, FaultCounts, FaultProxy, FaultRates};
use itests::test_stack::{n, s, user_item, TestStack};
use serde_json::Value;
use tokio::sync::OnceCell;
use usersync_local::emulator::proxy::{
    BoxFuture, Intercepted, Interceptor, ProxyBody, ReverseProxy, Upstream,
};
use usersync_local::emulator::Emulator;
use usersync_local::mapping::batch::{
    BatchEvent, DiscardReport, InvocationReport, RetryBackoff, Verdict,
};
use usersync_local::mapping::pipeline::{LocalPipeline, PipelineOptions};
use usersync_local::mapping::poller::{PollerEvent, PollerObserver, PollerOptions};
use usersync_local::runtime::function_host::OutputSink;

/// The longest any single wait of these tests may take.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The function, built once for every test of this binary (builds side by side would race on
/// the archive).
async fn artifact() -> &'static Artifact {
    static BUILT: OnceCell<Artifact> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let options = BuildOptions {
                    architecture: None,
                    purpose: Purpose::Local,
                };
                artifact::build(&options, &mut |line| eprintln!("[build] {line}"))
            })
            .await
            .expect("the build task does not panic")
            .unwrap_or_else(|err| panic!("failed to build the function: {err}"))
        })
        .await
}

fn stack_name(label: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "faults-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Everything the poller said, in order.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<PollerEvent>>>);

impl Events {
    fn all(&self) -> Vec<PollerEvent> {
        self.0.lock().unwrap().clone()
    }

    fn invocations(&self) -> Vec<InvocationReport> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                PollerEvent::Batch(BatchEvent::Invoked(report)) => Some(report),
                _ => None,
            })
            .collect()
    }

    fn discards(&self) -> Vec<DiscardReport> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                PollerEvent::Batch(BatchEvent::Discarded(report)) => Some(report),
                _ => None,
            })
            .collect()
    }

    /// Batch item failures the function reported, over every invocation.
    fn reported_failures(&self) -> usize {
        self.invocations()
            .iter()
            .map(|i| match i.verdict {
                Verdict::PartialFailure { reported, .. } => reported,
                _ => 0,
            })
            .sum()
    }

    /// Invocations whose records were all reported failed.
    fn fully_failed(&self) -> Vec<InvocationReport> {
        self.invocations()
            .into_iter()
            .filter(|i| {
                matches!(
                    i.verdict,
                    Verdict::PartialFailure {
                        first_failed: 0,
                        ..
                    }
                ) || matches!(i.verdict, Verdict::Failure { .. })
            })
            .collect()
    }

    /// Whether the record `sequence` of `shard` is the last of a run that was applied or
    /// discarded: the shard's single in-flight batch is done up to it.
    fn done_up_to(&self, shard: &str, sequence: &str) -> bool {
        self.all().iter().any(|e| match e {
            PollerEvent::Batch(BatchEvent::Invoked(i)) => {
                i.shard_id == shard && i.last_sequence == sequence && i.verdict == Verdict::Success
            }
            PollerEvent::Batch(BatchEvent::Discarded(d)) => {
                d.shard_id == shard && d.last_sequence == sequence
            }
            _ => false,
        })
    }
}

/// What the mapping did, in numbers.
struct MappingNumbers {
    invocations: usize,
    retried_invocations: usize,
    partial_failures: usize,
    reported_batch_item_failures: usize,
    function_errors: usize,
    discarded_batches: usize,
    discarded_records: usize,
}

impl std::fmt::Display for MappingNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} invocations ({} retries), {} partial failures reporting {} batch item failures, \
             {} function errors, {} batches ({} records) sent to the failure queue",
            self.invocations,
            self.retried_invocations,
            self.partial_failures,
            self.reported_batch_item_failures,
            self.function_errors,
            self.discarded_batches,
            self.discarded_records
        )
    }
}

impl MappingNumbers {
    fn of(events: &Events) -> Self {
        let invocations = events.invocations();
        let discards = events.discards();
        MappingNumbers {
            invocations: invocations.len(),
            retried_invocations: invocations.iter().filter(|i| i.attempt > 1).count(),
            partial_failures: invocations
                .iter()
                .filter(|i| matches!(i.verdict, Verdict::PartialFailure { .. }))
                .count(),
            reported_batch_item_failures: events.reported_failures(),
            function_errors: invocations
                .iter()
                .filter(|i| matches!(i.verdict, Verdict::Failure { .. }))
                .count(),
            discarded_batches: discards.len(),
            discarded_records: discards.iter().map(|d| d.records).sum(),
        }
    }
}

/// A private emulator, a stack on it, and the stack's function running here with its S3
/// traffic through a fault proxy. Fields drop in order: the pipeline (its pollers stop and the
/// function's process is killed), the stack (torn down) and then the emulator it lives on.
struct Faulty {
    pipeline: Option<LocalPipeline>,
    stack: TestStack,
    faults: FaultProxy,
    events: Events,
    started: Instant,
    _emulator: Emulator,
}

struct Setup {
    label: &'static str,
    settings: StackSettings,
    faults: FaultConfig,
    backoff: RetryBackoff,
}

impl Setup {
    fn new(label: &'static str, faults: FaultConfig) -> Self {
        Setup {
            label,
            settings: StackSettings {
                maximum_batching_window_seconds: 0,
                ..StackSettings::default()
            },
            faults,
            // Lambda's back-off between retries, scaled down.
            backoff: RetryBackoff {
                first: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        }
    }

    async fn start(self) -> Result<Faulty> {
        let started = Instant::now();
        let artifact = artifact().await;
        let emulator = itests::emulator::start().await;
        let target = Target::for_endpoint(&emulator.endpoint_url(), REGION);
        let settings = StackSettings {
            stack_name: stack_name(self.label),
            ..self.settings
        };
        let mut console = RecordingConsole::agreeing();
        let report = workflow::deploy_built(&target, &settings, artifact, &mut console)
            .await
            .with_context(|| format!("failed to deploy stack {}", settings.stack_name))?;
        let function = report
            .outputs
            .get(output::FUNCTION_NAME)
            .context("the stack has no FunctionName output")?
            .clone();
        // S3 behind the faults; everything else (the stream, the queue) reached directly.
        let faults = FaultProxy::start(emulator.addr(), self.faults)
            .await
            .context("failed to start the fault proxy")?;
        let events = Events::default();
        let (output_sink, observer) = function_log(&settings.stack_name, &events)?;
        let pipeline = LocalPipeline::start(
            &target,
            &function,
            PipelineOptions {
                binary: artifact.binary_path.clone(),
                poller: PollerOptions {
                    poll_interval: Duration::from_millis(50),
                    discovery_interval: Duration::from_millis(500),
                    retry_backoff: self.backoff,
                },
                output: output_sink,
                observer,
                extra_environment: BTreeMap::from([(
                    "AWS_ENDPOINT_URL_S3".to_owned(),
                    faults.url(),
                )]),
            },
        )
        .await
        .context("failed to start the local pipeline")?;
        let stack = TestStack::new(target, settings, report.outputs, None);
        Ok(Faulty {
            pipeline: Some(pipeline),
            stack,
            faults,
            events,
            started,
            _emulator: emulator,
        })
    }
}

/// The function's output and the poller's events to the stack's log file; the events to
/// `events` too.
fn function_log(stack_name: &str, events: &Events) -> Result<(OutputSink, PollerObserver)> {
    let path = deployer::project::state_dir()
        .join("itests")
        .join(format!("{stack_name}.function.log"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file =
        Arc::new(Mutex::new(File::create(&path).with_context(|| {
            format!("failed to create {}", path.display())
        })?));
    let output_file = Arc::clone(&file);
    let output = OutputSink::new(move |line| {
        if let Ok(mut file) = output_file.lock() {
            let _ = writeln!(file, "{line}");
        }
    });
    let events = events.clone();
    let observer: PollerObserver = Arc::new(move |event| {
        if let Ok(mut file) = file.lock() {
            let _ = writeln!(file, "[poller] {event:?}");
        }
        events.0.lock().unwrap().push(event);
    });
    Ok((output, observer))
}

/// Polls `check` until it holds; fails after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what} did not happen within {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Faulty {
    fn target(&self) -> &Target {
        &self.stack.target
    }

    fn pipeline(&self) -> &LocalPipeline {
        self.pipeline
            .as_ref()
            .expect("the pipeline runs until the test finishes")
    }

    /// Stops the function and the pollers (failing if a poller stopped on its own), then tears
    /// the stack down.
    async fn finish(mut self) -> Result<()> {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline
                .stop()
                .await
                .context("a poller stopped with an error")?;
        }
        self.stack.teardown().await?;
        Ok(())
    }

    fn output(&self, name: &str) -> &str {
        self.stack.outputs.get(name).map_or("", String::as_str)
    }

    fn counts(&self) -> FaultCounts {
        self.faults.injector().counts()
    }

    async fn diff(&self) -> Result<MirrorDiff> {
        Ok(mirror_check::check(
            self.target(),
            self.stack.table(),
            self.stack.bucket(),
            &self.stack.layout(),
        )
        .await?)
    }

    /// Every record of the stream, per shard, in order: (sequence number, user, event name).
    async fn stream(&self) -> Result<BTreeMap<String, Vec<(String, String, String)>>> {
        let streams = self.target().dynamodb_streams();
        let stream_arn = self.output(output::STREAM_ARN);
        let mut all = BTreeMap::new();
        for shard in describe_shards(&streams, stream_arn)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            let mut reader = ShardReader::new(
                streams.clone(),
                stream_arn,
                &shard.shard_id,
                ReadPosition::TrimHorizon,
            );
            let mut records = Vec::new();
            loop {
                let read = reader
                    .read(1000)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if read.is_empty() {
                    break;
                }
                for record in read {
                    let text = |pointer: &str| {
                        record
                            .event
                            .pointer(pointer)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    records.push((
                        record.sequence_number.clone(),
                        text("/dynamodb/Keys/name/S"),
                        text("/eventName"),
                    ));
                }
            }
            all.insert(shard.shard_id, records);
        }
        Ok(all)
    }

    /// Waits until every record in the stream now has been applied or discarded.
    async fn wait_settled(&self, after: &str) -> Result<Duration> {
        self.wait_settled_within(after, WAIT_LIMIT).await
    }

    async fn wait_settled_within(&self, after: &str, limit: Duration) -> Result<Duration> {
        let tips: Vec<(String, String)> = self
            .stream()
            .await?
            .into_iter()
            .filter_map(|(shard, records)| records.last().map(|(seq, ..)| (shard, seq.clone())))
            .collect();
        wait_until(
            &format!("the mapping finishing every record after {after}"),
            limit,
            || {
                let done = tips
                    .iter()
                    .all(|(shard, seq)| self.events.done_up_to(shard, seq));
                async move { Ok(done) }
            },
        )
        .await
    }

    /// The failure queue's depth, visible and in flight.
    async fn queue_depth(&self) -> Result<u64> {
        let attributes = self
            .target()
            .sqs()
            .get_queue_attributes()
            .queue_url(self.output(output::FAILURE_QUEUE_URL))
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        let read = |name: QueueAttributeName| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(read(QueueAttributeName::ApproximateNumberOfMessages)
            + read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Every message of the failure queue, read and made visible again at once.
    async fn peek_queue(&self) -> Result<Vec<Value>> {
        let sqs = self.target().sqs();
        let url = self.output(output::FAILURE_QUEUE_URL);
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await?;
            if received.messages().is_empty() {
                break;
            }
            for message in received.messages() {
                bodies.push(serde_json::from_str(message.body().unwrap_or("null"))?);
                receipts.extend(message.receipt_handle().map(str::to_owned));
            }
        }
        for receipt in receipts {
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await?;
        }
        Ok(bodies)
    }

    fn report(&self, test: &str) {
        eprintln!(
            "{test}: {:.1}s; faults {:?}; mapping: {}",
            self.started.elapsed().as_secs_f64(),
            self.counts(),
            MappingNumbers::of(&self.events)
        );
    }
}

fn user(name: &str, plan: &str, version: u32) -> HashMap<String, AttributeValue> {
    user_item(name, &[("plan", s(plan)), ("version", n(version))])
}

/// `users` users inserted and `deleted` of them deleted with `rate` of
/// the function's S3 requests failing: the bucket ends exactly like the table, nothing reaches
/// the failure queue, and the faults and the batch item failures happened.
async fn inserts_and_deletes_under_faults(
    label: &'static str,
    users: usize,
    deleted: usize,
    rate: f64,
    seed: u64,
) -> Result<()> {
    // Below about 20% a user's request rarely fails all three of the SDK's attempts, so a
    // batch item failure may not happen at all.
    let item_failures_expected = rate >= 0.2;
    let mut setup = Setup::new(label, FaultConfig::new(seed, FaultRates::failing(rate)));
    setup.settings.batch_size = 100;
    setup.settings.maximum_batching_window_seconds = 1;
    let test = setup.start().await?;

    let names: Vec<String> = (0..users).map(|i| format!("user-{i:05}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "free", 1)).collect())
        .await?;
    // Every third user, then the ones after those, as far as needed.
    let doomed: Vec<String> = names
        .iter()
        .step_by(3)
        .chain(names.iter().skip(1).step_by(3))
        .take(deleted)
        .cloned()
        .collect();
    test.stack.batch_delete(&doomed).await?;

    // Every record applied or given up on; then the bucket must be exactly the table.
    let limit = WAIT_LIMIT.max(Duration::from_millis(100) * users as u32);
    let settled = test
        .wait_settled_within("the inserts and deletes", limit)
        .await;
    test.report(label);
    let settled = settled.with_context(|| {
        format!(
            "the mapping so far: {}; faults: {:?}",
            MappingNumbers::of(&test.events),
            test.counts()
        )
    })?;
    eprintln!(
        "{label}: the mapping finished {:.1}s after the last write",
        settled.as_secs_f64()
    );
    let discards = test.events.discards();
    ensure!(
        discards.is_empty(),
        "{} batches ({} records) were given up on and sent to the failure queue: {discards:?}",
        discards.len(),
        discards.iter().map(|d| d.records).sum::<usize>()
    );
    let diff = test.diff().await?;
    ensure!(diff.in_step(), "the bucket is not the table: {diff}");
    ensure!(
        diff.users == users - deleted && diff.objects == users - deleted,
        "{diff}"
    );

    let counts = test.counts();
    let failed_share = counts.failed() as f64 / counts.requests as f64;
    ensure!(
        (failed_share - rate).abs() < 0.05,
        "{:.1}% of S3 requests failed, {:.0}% asked for: {counts:?}",
        failed_share * 100.0,
        rate * 100.0
    );
    let numbers = MappingNumbers::of(&test.events);
    ensure!(
        numbers.reported_batch_item_failures > 0 || !item_failures_expected,
        "no batch item failure was reported: the faults did not reach the mapping: {numbers}"
    );
    ensure!(
        test.queue_depth().await? == 0,
        "the failure queue is not empty"
    );
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_of_s3_requests_failing_lose_nothing() -> Result<()> {
    inserts_and_deletes_under_faults("rate10", 1000, 300, 0.10, 0x5EED_0010).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_of_s3_requests_failing_lose_nothing() -> Result<()> {
    inserts_and_deletes_under_faults("rate30", 1000, 300, 0.30, 0x5EED_0030).await
}

#[cfg(feature = "soak")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ten_thousand_users_under_faults() -> Result<()> {
    inserts_and_deletes_under_faults("soak", 10_000, 3_000, 0.30, 0x5EED_50A4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_for_less_than_the_retry_budget_recovers_without_discards() -> Result<()> {
    let mut setup = Setup::new("outage", FaultConfig::new(2, FaultRates::NONE));
    setup.settings.maximum_retry_attempts = 10;
    let test = setup.start().await?;
    test.faults.injector().set_unreachable(true);
    let outage = Instant::now();

    let names: Vec<String> = (0..40).map(|i| format!("outage-{i:02}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    // S3 comes back after three failed attempts of a batch: well inside 10 retries.
    wait_until("three failed invocations", WAIT_LIMIT, || {
        let failed = test.events.fully_failed().len();
        async move { Ok(failed >= 3) }
    })
    .await?;
    test.faults.injector().set_unreachable(false);
    let outage = outage.elapsed();

    test.stack.wait_in_step("S3 came back").await?;
    test.wait_settled("S3 came back").await?;
    test.report("outage");
    eprintln!("outage: S3 unreachable for {:.1}s", outage.as_secs_f64());

    // Every failed invocation reported every user of its batch (each appears once), by its
    // sequence number, as a batch item failure, and none failed as a whole.
    let failed = test.events.fully_failed();
    for invocation in &failed {
        ensure!(
            invocation.verdict
                == Verdict::PartialFailure {
                    first_failed: 0,
                    reported: invocation.records
                },
            "{invocation:?}"
        );
    }
    let retried = failed.iter().map(|i| i.attempt).max().unwrap_or(0);
    ensure!(retried <= 10, "attempts beyond the budget: {failed:?}");
    ensure!(test.counts().unreachable > 0, "{:?}", test.counts());
    ensure!(
        test.events.discards().is_empty(),
        "{:?}",
        test.events.discards()
    );
    ensure!(
        test.queue_depth().await? == 0,
        "the failure queue is not empty"
    );
    ensure!(test.diff().await?.users == 40);
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_longer_than_the_retry_budget_queues_exactly_the_unapplied_records_and_replay_applies_them(
) -> Result<()> {
    let mut setup = Setup::new("replay", FaultConfig::new(3, FaultRates::NONE));
    setup.settings.batch_size = 10;
    setup.settings.maximum_retry_attempts = 2;
    setup.settings.bisect_batch_on_function_error = false;
    let test = setup.start().await?;
    let stack = &test.stack;

    // Ten users applied while S3 is fine.
    let pre: Vec<String> = (0..10).map(|i| format!("pre-{i}")).collect();
    stack
        .batch_put(pre.iter().map(|name| user(name, "free", 1)).collect())
        .await?;
    stack.wait_in_step("the first users").await?;
    test.wait_settled("the first users").await?;

    // S3 down for longer than three attempts of every batch: 20 new users, 3 modified, 3
    // deleted; 26 records given up on.
    test.faults.injector().set_unreachable(true);
    let lost: Vec<String> = (0..20).map(|i| format!("lost-{i:02}")).collect();
    stack
        .batch_put(lost.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    for name in &pre[0..3] {
        stack
            .put_user(name, &[("plan", s("team")), ("version", n(2))])
            .await?;
    }
    for name in &pre[3..6] {
        stack.delete_user(name).await?;
    }
    test.wait_settled("the outage").await?;
    test.faults.injector().set_unreachable(false);
    let discards = test.events.discards();
    ensure!(
        discards.iter().map(|d| d.records).sum::<usize>() == 26,
        "{discards:?}"
    );

    // The shard moved on: later records are applied, among them a newer version of lost-00.
    for i in 0..5 {
        stack
            .put_user(&format!("after-{i}"), &[("plan", s("free"))])
            .await?;
    }
    stack
        .put_user(&lost[0], &[("plan", s("enterprise")), ("version", n(3))])
        .await?;
    test.wait_settled("S3 came back").await?;

    let diff = test.diff().await?;
    let keys = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .map(|name| format!("{name}/userdata"))
            .collect()
    };
    ensure!(diff.missing == keys(&lost[1..]), "{diff}");
    ensure!(diff.stale == keys(&pre[0..3]), "{diff}");
    ensure!(diff.orphaned == keys(&pre[3..6]), "{diff}");

    // The queue holds one message per discarded batch, with exactly its coordinates, and
    // together they cover exactly the 26 records written while S3 was down.
    let messages = test.peek_queue().await?;
    let infos: BTreeSet<(String, String, String, u64)> = messages
        .iter()
        .map(|m| {
            let info = &m["DDBStreamBatchInfo"];
            (
                info["shardId"].as_str().unwrap_or_default().to_owned(),
                info["startSequenceNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                info["endSequenceNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                info["batchSize"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, u64)> = discards
        .iter()
        .map(|d| {
            (
                d.shard_id.clone(),
                d.first_sequence.clone(),
                d.last_sequence.clone(),
                d.records as u64,
            )
        })
        .collect();
    ensure!(messages.len() == discards.len(), "{messages:#?}");
    ensure!(infos == expected, "{infos:?} != {expected:?}");
    ensure!(messages
        .iter()
        .all(|m| m["requestContext"]["condition"] == "RetryAttemptsExhausted"));
    let stream = test.stream().await?;
    let covered: BTreeSet<(String, String)> = stream
        .iter()
        .flat_map(|(shard, records)| {
            let infos = &infos;
            records
                .iter()
                .filter(move |(seq, ..)| {
                    infos.iter().any(|(s, start, end, _)| {
                        s == shard
                            && compare_sequence_numbers(seq, start).is_ge()
                            && compare_sequence_numbers(seq, end).is_le()
                    })
                })
                .map(|(_, user, event)| (user.clone(), event.clone()))
        })
        .collect();
    let outage_records: BTreeSet<(String, String)> = lost
        .iter()
        .map(|name| (name.clone(), "INSERT".to_owned()))
        .chain(
            pre[0..3]
                .iter()
                .map(|name| (name.clone(), "MODIFY".to_owned())),
        )
        .chain(
            pre[3..6]
                .iter()
                .map(|name| (name.clone(), "REMOVE".to_owned())),
        )
        .collect();
    ensure!(covered == outage_records, "{covered:?}");

    // A dry run reports and changes nothing.
    let dry = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions {
            dry_run: true,
            discard_expired: false,
        },
        &mut |line| eprintln!("replay: {line}"),
    )
    .await?;
    eprintln!("replay (dry run): {}", dry.summary());
    ensure!(dry.messages.len() == messages.len(), "{dry:#?}");
    ensure!(dry
        .messages
        .iter()
        .all(|m| m.outcome == Outcome::WouldReplay && !m.deleted));
    ensure!(
        dry.messages.iter().map(|m| m.records).sum::<usize>() == 26,
        "{dry:#?}"
    );
    ensure!(
        dry.messages.iter().map(|m| m.superseded).sum::<usize>() == 1,
        "{dry:#?}"
    );
    ensure!(dry.records_applied() == 25, "{dry:#?}");
    ensure!(test.queue_depth().await? == messages.len() as u64);
    ensure!(test.diff().await? == diff, "a dry run changed the bucket");

    // The replay applies the 25 records whose users have nothing newer (lost-00's insert is
    // superseded by its later version, which must survive), and deletes every message.
    let replayed = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions::default(),
        &mut |line| eprintln!("replay: {line}"),
    )
    .await?;
    eprintln!("replay: {}", replayed.summary());
    for message in &replayed.messages {
        eprintln!("replay: {message:?}");
    }
    ensure!(
        replayed
            .messages
            .iter()
            .all(|m| m.outcome == Outcome::Replayed && m.deleted),
        "{replayed:#?}"
    );
    ensure!(replayed.records_applied() == 25, "{replayed:#?}");
    ensure!(
        test.queue_depth().await? == 0,
        "messages left after the replay"
    );
    let after = test.diff().await?;
    ensure!(after.in_step(), "after the replay: {after}");
    ensure!(after.users == 10 - 3 + 20 + 5, "{after}");
    let objects = stack.objects().await?;
    ensure!(
        objects[&format!("{}/userdata", lost[0])]["plan"] == "enterprise",
        "the replay overwrote a newer version: {:?}",
        objects[&format!("{}/userdata", lost[0])]
    );
    // Nothing left to do: a second run finds an empty queue.
    let again = replay::replay_failures(
        test.target(),
        &stack.settings.stack_name,
        ReplayOptions::default(),
        &mut |_| {},
    )
    .await?;
    ensure!(again.messages.is_empty(), "{again:#?}");
    test.report("replay");
    test.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_function_in_the_middle_of_a_batch_retries_it_and_ends_correct() -> Result<()> {
    // Every S3 request takes 150 ms and four users are worked on at once: the 50-user batch
    // takes about two seconds, and the kill lands inside it.
    let mut setup = Setup::new(
        "kill",
        FaultConfig {
            latency: Duration::from_millis(150),
            ..FaultConfig::new(
                4,
                FaultRates {
                    latency: 1.0,
                    ..FaultRates::NONE
                },
            )
        },
    );
    setup.settings.batch_size = 50;
    setup.settings.maximum_batching_window_seconds = 2;
    setup.settings.max_concurrency = Some(4);
    let test = setup.start().await?;
    let host = test.pipeline().host();

    let names: Vec<String> = (0..50).map(|i| format!("kill-{i:02}")).collect();
    test.stack
        .batch_put(names.iter().map(|name| user(name, "pro", 1)).collect())
        .await?;
    // Some users applied, others in flight.
    wait_until("the batch half-way", WAIT_LIMIT, || {
        let counts = test.counts();
        let in_flight = test.faults.injector().in_flight();
        async move { Ok(counts.requests >= 12 && in_flight > 0) }
    })
    .await?;
    let pid = host.pid().context("the function runs")?;
    let applied_before = test.counts().requests;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    ensure!(killed.success(), "kill -KILL {pid} failed");

    test.stack.wait_in_step("the kill").await?;
    test.wait_settled("the kill").await?;
    test.report("kill");
    eprintln!("kill: killed pid {pid} after {applied_before} S3 requests of the batch");

    let invocations = test.events.invocations();
    let crashed = invocations
        .iter()
        .position(|i| {
            matches!(&i.verdict, Verdict::Failure { error_type, .. } if error_type == "Runtime.ExitError")
        })
        .with_context(|| format!("no invocation crashed: {invocations:#?}"))?;
    let killed_records = invocations[crashed].records;
    ensure!(
        killed_records > 1,
        "the kill landed in a batch: {invocations:#?}"
    );
    let retried: usize = invocations[crashed + 1..]
        .iter()
        .filter(|i| i.verdict == Verdict::Success && i.attempt > 1)
        .map(|i| i.records)
        .sum();
    ensure!(
        retried == killed_records,
        "the killed batch was retried to success: {invocations:#?}"
    );
    ensure!(host.pid() != Some(pid), "a new process took over");
    ensure!(test.events.discards().is_empty());
    ensure!(test.queue_depth().await? == 0);
    test.finish().await?;
    Ok(())
}

/// Where in a deploy the emulator is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeployPhase {
    /// As the function archive is uploaded (the assets bucket was just made sure of).
    Upload,
    /// After the change set was created, while it is read back.
    ChangeSet,
    /// After the change set was executed, while the deploy waits for the stack.
    Execution,
}

/// Restarts the emulator before passing on the first request of a deploy that arrives in the
/// armed phase; the request then reaches an emulator that has forgotten everything.
struct RestartDuringDeploy {
    emulator: tokio::sync::Mutex<Emulator>,
    /// The emulator itself, not through this proxy: for looking at the stack.
    probe: Target,
    armed: Mutex<Option<(DeployPhase, String)>>,
    restarts: std::sync::atomic::AtomicUsize,
}

impl RestartDuringDeploy {
    fn arm(&self, phase: DeployPhase, stack: &str) {
        *self.armed.lock().unwrap() = Some((phase, stack.to_owned()));
    }

    fn disarm(&self) {
        *self.armed.lock().unwrap() = None;
    }

    async fn in_phase(
        &self,
        phase: DeployPhase,
        stack: &str,
        request: &http::Request<ProxyBody>,
    ) -> bool {
        let status = || async {
            self.probe
                .cloudformation()
                .describe_stacks()
                .stack_name(stack)
                .send()
                .await
                .ok()
                .and_then(|out| out.stacks().first().and_then(|s| s.stack_status().cloned()))
                .map(|status| status.as_str().to_owned())
        };
        match phase {
            // The deployer looks for the archive before uploading it.
            DeployPhase::Upload => {
                request.method() == http::Method::HEAD
                    && request.uri().path().starts_with("/usersync-assets-")
                    && request.uri().path().ends_with(".zip")
            }
            // CloudFormation's requests are POSTs to `/`; the stack is looked at before each.
            _ if request.method() != http::Method::POST => false,
            DeployPhase::ChangeSet => status().await.as_deref() == Some("REVIEW_IN_PROGRESS"),
            DeployPhase::Execution => status().await.is_some_and(|s| s.starts_with("CREATE_")),
        }
    }
}

impl Interceptor for RestartDuringDeploy {
    fn intercept<'a>(
        &'a self,
        request: http::Request<ProxyBody>,
        _upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted> {
        Box::pin(async move {
            let armed = self.armed.lock().unwrap().clone();
            if let Some((phase, stack)) = armed {
                if self.in_phase(phase, &stack, &request).await {
                    self.disarm();
                    let mut emulator = self.emulator.lock().await;
                    emulator
                        .restart()
                        .await
                        .unwrap_or_else(|err| panic!("failed to restart the emulator: {err}"));
                    self.restarts
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Intercepted::Forward(request)
        })
    }
}

/// Deploys a new stack per phase with the emulator restarted in that phase, then deploys it
/// again; returns each phase's error message (as `cargo xtask deploy` prints it) and fails if a
/// deploy that saw a restart reported success, or the second deploy did not create the stack.
async fn deploys_with_a_restart() -> Result<Vec<(DeployPhase, String, String)>> {
    let artifact = artifact().await;
    let emulator = itests::emulator::start().await;
    let addr = emulator.addr();
    let restarter = Arc::new(RestartDuringDeploy {
        probe: Target::for_endpoint(&emulator.direct_url(), REGION),
        emulator: tokio::sync::Mutex::new(emulator),
        armed: Mutex::new(None),
        restarts: Default::default(),
    });
    let proxy = ReverseProxy::start(addr, Arc::clone(&restarter) as Arc<dyn Interceptor>).await?;
    let target = Target::for_endpoint(&proxy.url(), REGION);
    let restarts = || restarter.restarts.load(std::sync::atomic::Ordering::SeqCst);

    let mut messages = Vec::new();
    for phase in [
        DeployPhase::Upload,
        DeployPhase::ChangeSet,
        DeployPhase::Execution,
    ] {
        let settings = StackSettings {
            stack_name: stack_name("restart"),
            ..StackSettings::default()
        };
        let stack = settings.stack_name.clone();
        restarter.arm(phase, &stack);
        let before = restarts();
        let mut console = RecordingConsole::agreeing();
        let outcome = workflow::deploy_built(&target, &settings, artifact, &mut console).await;
        restarter.disarm();
        ensure!(
            restarts() == before + 1,
            "{phase:?}: the emulator was not restarted"
        );
        let message = match outcome {
            Ok(report) => bail!(
                "{phase:?}: the deploy reported success although the emulator lost the stack: {report:?}"
            ),
            // As `cargo xtask deploy` prints it.
            Err(err) => format!(
                "{:#}",
                anyhow::Error::new(err).context(format!("failed to deploy stack {stack}"))
            ),
        };
        eprintln!("restart during {phase:?}: error: {message}");

        // The emulator has forgotten everything: the second deploy creates it all again.
        let mut console = RecordingConsole::agreeing();
        let report = workflow::deploy_built(&target, &settings, artifact, &mut console)
            .await
            .with_context(|| format!("{phase:?}: the second deploy failed"))?;
        ensure!(report.result == "created", "{phase:?}: {report:?}");
        ensure!(report.artifact_uploaded, "{phase:?}: {report:?}");
        for name in output::ALL {
            ensure!(
                report.outputs.contains_key(name),
                "{phase:?}: no output {name}: {report:?}"
            );
        }
        let status = deployer::stack::status(&target, &stack)
            .await?
            .context("the stack exists after the second deploy")?;
        ensure!(status.status == "CREATE_COMPLETE", "{phase:?}: {status:?}");
        ensure!(
            status
                .resources
                .iter()
                .all(|r| r.status == "CREATE_COMPLETE"),
            "{phase:?}: {status:?}"
        );
        messages.push((phase, stack, message));
    }
    Ok(messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_restarted_during_deploy_fails_it_naming_the_step_and_a_second_deploy_converges(
) -> Result<()> {
    let started = Instant::now();
    for (phase, stack, message) in deploys_with_a_restart().await? {
        ensure!(
            message.starts_with(&format!("failed to deploy stack {stack}: ")),
            "{phase:?}: {message}"
        );
        let names_the_step = match phase {
            DeployPhase::Upload => {
                message.contains("upload") && message.contains("usersync-assets-")
            }
            DeployPhase::ChangeSet => message.contains("change set"),
            // Named by the stack in the prefix checked above.
            DeployPhase::Execution => true,
        };
        ensure!(
            names_the_step,
            "{phase:?} does not name the step: {message}"
        );
    }
    eprintln!("restart: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_restarted_during_deploy_is_named_as_the_cause_with_the_fix() -> Result<()> {
    for (phase, _stack, message) in deploys_with_a_restart().await? {
        let lowered = message.to_lowercase();
        ensure!(
            lowered.contains("disappeared") && lowered.contains("run the deploy again"),
            "{phase:?}: the message names neither the cause nor the fix: {message}"
        );
    }
    Ok(())
}
