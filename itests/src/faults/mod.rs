//! The harness of the fault tests (`tests/faults.rs`): a private emulator per test, a stack
//! deployed on it with settings suited to the test, and the stack's function (the real
//! `bootstrap`) running here in a local pipeline whose S3 traffic, and only that, goes through
//! a fault-injecting proxy ([`usersync_local::emulator::faults`]): the function's
//! `AWS_ENDPOINT_URL_S3` names the proxy. The function's output and the poller's events go to
//! `target/usersync/itests/<stack>.function.log`.
//!
//! [`RestartDuringDeploy`] restarts an emulator in a chosen phase of a deploy.

mod events;
mod restart;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use deployer::artifact::{self, Artifact, BuildOptions, Purpose};
use deployer::console::RecordingConsole;
use deployer::mirror_check::{self, MirrorDiff};
use deployer::settings::StackSettings;
use deployer::streams::reader::{ReadPosition, ShardReader};
use deployer::streams::shards::describe_shards;
use deployer::target::Target;
use deployer::template::output;
use deployer::workflow;
use serde_json::Value;
use tokio::sync::OnceCell;
use usersync_local::emulator::faults::{FaultConfig, FaultCounts, FaultProxy};
use usersync_local::emulator::Emulator;
use usersync_local::mapping::batch::RetryBackoff;
use usersync_local::mapping::pipeline::{LocalPipeline, PipelineOptions};
use usersync_local::mapping::poller::PollerOptions;

pub use events::{Events, MappingNumbers};
pub use restart::{DeployPhase, RestartDuringDeploy};

use crate::emulator::REGION;
use crate::harness::function_log;
use crate::test_stack::{n, s, unique_stack_name, user_item, TestStack};

/// The function, built once for every test of the binary (builds side by side would race on
/// the archive).
pub async fn artifact() -> &'static Artifact {
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

/// User `name` with a `plan` and a `version`.
pub fn user(name: &str, plan: &str, version: u32) -> HashMap<String, AttributeValue> {
    user_item(name, &[("plan", s(plan)), ("version", n(version))])
}

/// Every record of a stream, per shard, in order: (sequence number, user, event name).
pub type StreamRecords = BTreeMap<String, Vec<(String, String, String)>>;

/// A private emulator, a stack on it, and the stack's function running here with its S3
/// traffic through a fault proxy. Fields drop in order: the pipeline (its pollers stop and the
/// function's process is killed), the stack (torn down) and then the emulator it lives on.
pub struct Faulty {
    pipeline: Option<LocalPipeline>,
    pub stack: TestStack,
    pub faults: FaultProxy,
    pub events: Events,
    started: Instant,
    _emulator: Emulator,
}

/// How to start a [`Faulty`].
pub struct Setup {
    /// Names the stack (`e2e-faults<label>-<pid>-<n>`) and the test in reports.
    pub label: &'static str,
    pub settings: StackSettings,
    pub faults: FaultConfig,
    pub backoff: RetryBackoff,
}

impl Setup {
    /// The default stack without a batching window, the faults of `faults`, and Lambda's
    /// back-off between retries scaled down.
    pub fn new(label: &'static str, faults: FaultConfig) -> Self {
        Setup {
            label,
            settings: StackSettings {
                maximum_batching_window_seconds: 0,
                ..StackSettings::default()
            },
            faults,
            backoff: RetryBackoff {
                first: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        }
    }

    /// Starts an emulator, deploys the stack on it and starts its pipeline behind the faults.
    pub async fn start(self) -> Result<Faulty> {
        let started = Instant::now();
        let artifact = artifact().await;
        let emulator = crate::emulator::start().await;
        let target = Target::for_endpoint(&emulator.endpoint_url(), REGION);
        let settings = StackSettings {
            stack_name: unique_stack_name(&format!("faults-{}", self.label)),
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
        let (output_sink, observer) = function_log(&settings.stack_name, Some(events.observer()))?;
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

impl Faulty {
    pub fn target(&self) -> &Target {
        &self.stack.target
    }

    pub fn pipeline(&self) -> &LocalPipeline {
        self.pipeline
            .as_ref()
            .expect("the pipeline runs until the test finishes")
    }

    /// Stops the function and the pollers (failing if a poller stopped on its own), then tears
    /// the stack down.
    pub async fn finish(mut self) -> Result<()> {
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

    /// What the fault proxy has done so far.
    pub fn counts(&self) -> FaultCounts {
        self.faults.injector().counts()
    }

    /// How the bucket differs from the table.
    pub async fn diff(&self) -> Result<MirrorDiff> {
        Ok(mirror_check::check(
            self.target(),
            self.stack.table(),
            self.stack.bucket(),
            &self.stack.layout(),
        )
        .await?)
    }

    /// Every record of the stream, per shard, in order.
    pub async fn stream(&self) -> Result<StreamRecords> {
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
    pub async fn wait_settled(&self, after: &str) -> Result<Duration> {
        self.wait_settled_within(after, crate::test_stack::CONVERGE_TIMEOUT)
            .await
    }

    pub async fn wait_settled_within(&self, after: &str, limit: Duration) -> Result<Duration> {
        let tips: Vec<(String, String)> = self
            .stream()
            .await?
            .into_iter()
            .filter_map(|(shard, records)| records.last().map(|(seq, ..)| (shard, seq.clone())))
            .collect();
        self.stack
            .wait_for_within(
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
    pub async fn queue_depth(&self) -> Result<u64> {
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
    pub async fn peek_queue(&self) -> Result<Vec<Value>> {
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

    /// Prints how long the test ran, what was injected and what the mapping did.
    pub fn report(&self, test: &str) {
        eprintln!(
            "{test}: {:.1}s; faults {:?}; mapping: {}",
            self.started.elapsed().as_secs_f64(),
            self.counts(),
            MappingNumbers::of(&self.events)
        );
    }
}
