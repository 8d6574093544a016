//! End to end on the local pipeline: a stack deployed on the target, the real function run by
//! the local host and poller, 1,000 users written with `BatchWriteItem`, and the time from each
//! user's write to its object being listed in the bucket.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use super::stats::{percentile, Summary};
use super::table_writes::{self, BATCH_WRITE_ITEMS};
use super::BenchError;
use deployer::artifact::Artifact;
use deployer::console::RecordingConsole;
use deployer::settings::StackSettings;
use deployer::stack;
use deployer::stack::aws_error;
use deployer::target::Target;
use deployer::template::output;
use deployer::workflow;
use usersync_local::mapping::pipeline::{LocalPipeline, PipelineOptions};
use usersync_local::mapping::poller::PollerOptions;
use usersync_local::runtime::function_host::OutputSink;

/// How often the bucket is listed while waiting.
const LIST_INTERVAL: Duration = Duration::from_millis(50);
/// Give up when the pipeline has not caught up by then.
const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Debug, Serialize)]
pub struct EndToEndRun {
    pub users: usize,
    /// The stack's mapping settings the latency includes.
    pub batch_size: u32,
    pub maximum_batching_window_seconds: u32,
    /// Each user's write (its `BatchWriteItem` call answered) to its object listed.
    pub latency_ms: Summary,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The last write answered to the last object listed.
    pub last_write_to_last_object_ms: f64,
    /// The time the 1,000 writes took.
    pub writing_ms: f64,
}

pub async fn measure(
    target: &Target,
    artifact: &Artifact,
    users: usize,
    stack_name: &str,
) -> Result<EndToEndRun, BenchError> {
    let settings = StackSettings {
        stack_name: stack_name.to_owned(),
        ..StackSettings::default()
    };
    let mut console = RecordingConsole::agreeing();
    let report = workflow::deploy_built(target, &settings, artifact, &mut console).await?;
    let result = run_on_stack(
        target,
        &artifact.binary_path,
        &settings,
        &report.outputs,
        users,
    )
    .await;
    let teardown = stack::teardown(target, stack_name, false, false, &mut console).await;
    let run = result?;
    teardown?;
    Ok(run)
}

async fn run_on_stack(
    target: &Target,
    binary: &Path,
    settings: &StackSettings,
    outputs: &BTreeMap<String, String>,
    users: usize,
) -> Result<EndToEndRun, BenchError> {
    let output_of = |name: &'static str| {
        outputs
            .get(name)
            .cloned()
            .ok_or(BenchError::MissingOutput(name))
    };
    let (function, table, bucket) = (
        output_of(output::FUNCTION_NAME)?,
        output_of(output::TABLE_NAME)?,
        output_of(output::BUCKET_NAME)?,
    );
    let pipeline = LocalPipeline::start(
        target,
        &function,
        PipelineOptions {
            binary: binary.to_path_buf(),
            poller: PollerOptions::default(),
            output: OutputSink::new(|line| {
                if line.text.contains("\"ERROR\"") {
                    eprintln!("[bootstrap] {}", line.text);
                }
            }),
            observer: Arc::new(|_| {}),
            extra_environment: BTreeMap::new(),
        },
    )
    .await
    .map_err(|err| BenchError::Pipeline(deployer::errors::chain(&err)))?;
    let result = write_and_watch(target, &table, &bucket, users).await;
    let stopped = pipeline.stop().await;
    let mut run = result?;
    stopped.map_err(|err| BenchError::Pipeline(deployer::errors::chain(&err)))?;
    run.batch_size = settings.batch_size;
    run.maximum_batching_window_seconds = settings.maximum_batching_window_seconds;
    Ok(run)
}

async fn write_and_watch(
    target: &Target,
    table: &str,
    bucket: &str,
    users: usize,
) -> Result<EndToEndRun, BenchError> {
    let dynamodb = target.dynamodb();
    let names: Vec<String> = (0..users).map(|i| format!("e2e-{i:05}")).collect();
    let started = Instant::now();
    let mut written_at: HashMap<String, Duration> = HashMap::with_capacity(users);
    for chunk in names.chunks(BATCH_WRITE_ITEMS) {
        let items = chunk.iter().map(|name| {
            HashMap::from([
                ("name".to_owned(), AttributeValue::S(name.clone())),
                ("plan".to_owned(), AttributeValue::S("pro".to_owned())),
            ])
        });
        table_writes::batch_put(&dynamodb, table, items).await?;
        let at = started.elapsed();
        for name in chunk {
            written_at.insert(format!("{name}/userdata"), at);
        }
    }
    let last_write = started.elapsed();

    let s3 = target.s3();
    let mut seen_at: HashMap<String, Duration> = HashMap::with_capacity(users);
    let deadline = Instant::now() + TIMEOUT;
    while seen_at.len() < users {
        if Instant::now() > deadline {
            return Err(BenchError::Pipeline(format!(
                "only {} of {users} objects appeared within {}s",
                seen_at.len(),
                TIMEOUT.as_secs()
            )));
        }
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| aws_error(format!("list bucket {bucket}"), err))?;
            let now = started.elapsed();
            for key in page.contents().iter().filter_map(|o| o.key()) {
                if written_at.contains_key(key) {
                    seen_at.entry(key.to_owned()).or_insert(now);
                }
            }
        }
        if seen_at.len() < users {
            tokio::time::sleep(LIST_INTERVAL).await;
        }
    }
    let latencies: Vec<f64> = seen_at
        .iter()
        .map(|(key, seen)| seen.saturating_sub(written_at[key]).as_secs_f64() * 1000.0)
        .collect();
    let last_object = seen_at.values().max().copied().unwrap_or_default();
    Ok(EndToEndRun {
        users,
        batch_size: 0,
        maximum_batching_window_seconds: 0,
        latency_ms: Summary::of(&latencies),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        last_write_to_last_object_ms: last_object.saturating_sub(last_write).as_secs_f64() * 1000.0,
        writing_ms: last_write.as_secs_f64() * 1000.0,
    })
}
