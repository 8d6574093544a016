//! Function throughput against the raw S3 limit: the real `bootstrap` run by the local
//! Runtime API host on batches of several sizes, and a plain SDK loop doing the same S3
//! operations against the same endpoint, in the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use super::process_stats;
use super::stats::Summary;
use super::workload::{S3Operation, Variant, Workload};
use super::BenchError;
use deployer::stack::aws_error;
use usersync_function::config::vars;
use usersync_local::runtime::function_host::{FunctionHost, FunctionSpec, OutputSink};
use usersync_local::runtime::invoke::{InvokeOutcome, Invoker};

/// Where the function and the loop write.
#[derive(Clone)]
pub struct S3Target {
    pub endpoint_url: String,
    pub region: String,
    pub bucket: String,
    /// Credentials the function process is given (`AWS_ACCESS_KEY_ID`, …).
    pub credentials: BTreeMap<String, String>,
    /// A client built as the function builds its own (`aws_config` defaults, path-style).
    pub client: aws_sdk_s3::Client,
    /// The same credentials, for the raw loop's own clients.
    pub loop_credentials: aws_credential_types::Credentials,
}

impl S3Target {
    /// The same endpoint with a new, empty bucket `<bucket>-<label>`: each measurement starts
    /// from the same state (an emulator's S3 slows down as a bucket fills).
    pub async fn with_new_bucket(&self, label: &str) -> Result<S3Target, BenchError> {
        let bucket = format!("{}-{label}", self.bucket);
        create_bucket(&self.client, &bucket).await?;
        Ok(S3Target {
            bucket,
            ..self.clone()
        })
    }
}

/// Creates `bucket` with `client`.
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), BenchError> {
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|err| aws_error(format!("create bucket {bucket}"), err))?;
    Ok(())
}

/// One function measurement: a batch size and mix, repeated in one process.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionRun {
    pub variant: Variant,
    pub records: usize,
    pub max_concurrency: Option<usize>,
    pub repetitions: usize,
    /// Records per second, median of the repetitions.
    pub records_per_s: f64,
    pub records_per_s_spread: Summary,
    pub batch_ms: Summary,
    /// CPU time of the function process per batch.
    pub cpu_ms: Summary,
    /// Peak resident memory of the function process over all repetitions.
    pub peak_rss_bytes: u64,
}

/// One raw-loop measurement.
#[derive(Clone, Debug, Serialize)]
pub struct LimitRun {
    pub operations: usize,
    pub concurrency: usize,
    pub runtime: LoopRuntime,
    pub repetitions: usize,
    /// Operations per second, median of the repetitions: one operation per record.
    pub operations_per_s: f64,
    pub operations_per_s_spread: Summary,
    /// CPU time of the benchmark's own process per round (the loop, with nothing else
    /// running in it meanwhile), to compare with the function's.
    pub cpu_ms: Summary,
}

/// Runs `workload`'s event through a fresh function process `repetitions` times.
pub async fn measure_function(
    binary: &Path,
    s3: &S3Target,
    workload: &Workload,
    variant: Variant,
    max_concurrency: Option<usize>,
    repetitions: usize,
) -> Result<FunctionRun, BenchError> {
    let host = start_function(binary, s3, max_concurrency).await?;
    let event = workload.event();
    // One batch first, so that the measured ones find the connection pool warm, as a Lambda
    // environment that has served a batch does.
    invoke_checked(&host, event.clone()).await?;
    let pid = host.pid().ok_or(BenchError::FunctionGone)?;
    let mut seconds = Vec::with_capacity(repetitions);
    let mut cpu_ms = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let before = process_stats::read(pid).ok_or(BenchError::FunctionGone)?;
        // The copy is made before the clock starts: only the invocation is timed.
        let payload = event.clone();
        let started = Instant::now();
        invoke_checked(&host, payload).await?;
        seconds.push(started.elapsed().as_secs_f64());
        let after = process_stats::read(pid).ok_or(BenchError::FunctionGone)?;
        cpu_ms.push((after.cpu.saturating_sub(before.cpu)).as_secs_f64() * 1000.0);
    }
    let peak_rss_bytes = process_stats::read(pid)
        .ok_or(BenchError::FunctionGone)?
        .peak_rss_bytes;
    host.shutdown().await;
    let records = workload.records();
    let rates: Vec<f64> = seconds.iter().map(|s| records as f64 / s).collect();
    let rate = Summary::of(&rates);
    Ok(FunctionRun {
        variant,
        records,
        max_concurrency,
        repetitions,
        records_per_s: rate.median,
        records_per_s_spread: rate,
        batch_ms: Summary::of(&seconds.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        cpu_ms: Summary::of(&cpu_ms),
        peak_rss_bytes,
    })
}

/// Starts the function for `s3` with the environment a deployed stack gives it.
pub async fn start_function(
    binary: &Path,
    s3: &S3Target,
    max_concurrency: Option<usize>,
) -> Result<FunctionHost, BenchError> {
    start_spec(function_spec(binary, s3, max_concurrency)).await
}

/// Starts the function of `spec`, its warnings and errors on standard error.
pub async fn start_spec(spec: FunctionSpec) -> Result<FunctionHost, BenchError> {
    FunctionHost::start_with_output(spec, function_output())
        .await
        .map_err(BenchError::Host)
}

/// The function's configuration for `s3`, with the environment a deployed stack gives it
/// (256 MB: set `memory_mb` for another size; Lambda gives the process its value).
pub fn function_spec(binary: &Path, s3: &S3Target, max_concurrency: Option<usize>) -> FunctionSpec {
    let mut spec = FunctionSpec::new(binary, "usersync-bench");
    spec.region = s3.region.clone();
    spec.memory_mb = 256;
    spec.timeout = Duration::from_secs(300);
    spec.environment = s3.credentials.clone();
    spec.environment.extend([
        (vars::BUCKET_NAME.to_owned(), s3.bucket.clone()),
        ("AWS_ENDPOINT_URL".to_owned(), s3.endpoint_url.clone()),
        (vars::S3_FORCE_PATH_STYLE.to_owned(), "true".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT".to_owned(), "JSON".to_owned()),
    ]);
    if let Some(concurrency) = max_concurrency {
        spec.environment
            .insert(vars::MAX_CONCURRENCY.to_owned(), concurrency.to_string());
    }
    spec
}

/// The function's warnings and errors go to standard error; its batch summaries are not
/// needed here.
fn function_output() -> OutputSink {
    OutputSink::new(|line| {
        let text = line.text;
        if text.contains("\"WARN\"") || text.contains("\"ERROR\"") || !text.starts_with('{') {
            eprintln!("[bootstrap] {text}");
        }
    })
}

/// Invokes and insists on a response with no batch item failures: a benchmark of a function
/// that failed would measure nothing.
pub async fn invoke_checked(host: &FunctionHost, event: Value) -> Result<Value, BenchError> {
    match host.invoke(event).await {
        InvokeOutcome::Response(response) => {
            let failures = response
                .get("batchItemFailures")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if failures > 0 {
                return Err(BenchError::FunctionFailed(format!(
                    "{failures} user(s) failed: {response}"
                )));
            }
            Ok(response)
        }
        other => Err(BenchError::FunctionFailed(format!("{other:?}"))),
    }
}

/// How the raw loop's tokio runtime runs its tasks: on one thread, as the function does, or on
/// a thread per core. Both are tried; the limit is the better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopRuntime {
    OneThread,
    ThreadPerCore,
}

impl LoopRuntime {
    pub const ALL: [LoopRuntime; 2] = [LoopRuntime::OneThread, LoopRuntime::ThreadPerCore];

    pub fn as_str(self) -> &'static str {
        match self {
            LoopRuntime::OneThread => "one thread",
            LoopRuntime::ThreadPerCore => "a thread per core",
        }
    }

    /// A short name for bucket names.
    pub fn label(self) -> &'static str {
        match self {
            LoopRuntime::OneThread => "one",
            LoopRuntime::ThreadPerCore => "pool",
        }
    }

    fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            LoopRuntime::OneThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            LoopRuntime::ThreadPerCore => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build(),
        }
    }
}

/// Runs `operations` with a plain SDK loop at `concurrency`, `repetitions` times, on a runtime
/// and client of its own (so nothing else of this process shares its threads), after one
/// round that warms the connection pool to the size the measured rounds use.
pub async fn measure_limit(
    s3: &S3Target,
    operations: &[S3Operation],
    concurrency: usize,
    runtime: LoopRuntime,
    repetitions: usize,
) -> Result<LimitRun, BenchError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let count = operations.len();
    let operations = operations.to_vec();
    let endpoint = (
        s3.endpoint_url.clone(),
        s3.region.clone(),
        s3.loop_credentials.clone(),
    );
    let bucket = s3.bucket.clone();
    std::thread::spawn(move || {
        let result = runtime
            .build()
            .map_err(|err| BenchError::LimitFailed(format!("failed to start its runtime: {err}")))
            .and_then(|rt| {
                rt.block_on(async {
                    let (endpoint_url, region, credentials) = endpoint;
                    let client =
                        s3_client_like_the_function(&endpoint_url, &region, credentials).await;
                    run_operations(&client, &bucket, &operations, concurrency).await?;
                    let own = std::process::id();
                    let mut rounds = Vec::with_capacity(repetitions);
                    for _ in 0..repetitions {
                        let before = process_stats::read(own).unwrap_or_default();
                        let started = Instant::now();
                        run_operations(&client, &bucket, &operations, concurrency).await?;
                        let rate = operations.len() as f64 / started.elapsed().as_secs_f64();
                        let after = process_stats::read(own).unwrap_or_default();
                        rounds.push((
                            rate,
                            after.cpu.saturating_sub(before.cpu).as_secs_f64() * 1000.0,
                        ));
                    }
                    Ok(rounds)
                })
            });
        let _ = sender.send(result);
    });
    let rounds = receiver
        .await
        .map_err(|_| BenchError::LimitFailed("its thread ended without a result".to_owned()))??;
    let rate = Summary::of(&rounds.iter().map(|r| r.0).collect::<Vec<_>>());
    Ok(LimitRun {
        operations: count,
        concurrency,
        runtime,
        repetitions,
        operations_per_s: rate.median,
        operations_per_s_spread: rate,
        cpu_ms: Summary::of(&rounds.iter().map(|r| r.1).collect::<Vec<_>>()),
    })
}

async fn run_operations(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    operations: &[S3Operation],
    concurrency: usize,
) -> Result<(), BenchError> {
    let failed = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    stream::iter(operations)
        .for_each_concurrent(concurrency, |operation| {
            let failed = &failed;
            let first_error = &first_error;
            async move {
                let result = match operation {
                    S3Operation::Put { key, body } => client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .content_type("application/json")
                        .body(body.clone().into())
                        .send()
                        .await
                        .map(drop)
                        .map_err(|err| aws_sdk_s3::error::DisplayErrorContext(err).to_string()),
                    S3Operation::Delete { key } => client
                        .delete_object()
                        .bucket(bucket)
                        .key(key)
                        .send()
                        .await
                        .map(drop)
                        .map_err(|err| aws_sdk_s3::error::DisplayErrorContext(err).to_string()),
                };
                if let Err(message) = result {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert(message);
                    }
                }
            }
        })
        .await;
    match failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(BenchError::LimitFailed(format!(
            "{n} S3 request(s) failed, the first: {}",
            first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()
        ))),
    }
}

/// The loop's client: the function's own (`usersync_function::s3_client_from`), over the same
/// kind of shared configuration the function loads from its environment.
pub async fn s3_client_like_the_function(
    endpoint_url: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint_url)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .load()
        .await;
    usersync_function::s3_client_from(&shared, true)
}

/// The function's and the loop's measurements for one batch size, side by side.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    pub records: usize,
    pub records_per_s: f64,
    pub limit_records_per_s: f64,
    /// `records_per_s / limit_records_per_s`: the headline figure.
    pub ratio: f64,
    pub peak_rss_bytes: u64,
    pub function: FunctionRun,
    pub churn: FunctionRun,
    pub limit: LimitRun,
}

impl SizeResult {
    pub fn new(function: FunctionRun, churn: FunctionRun, limit: LimitRun) -> SizeResult {
        let limit_records_per_s = limit.operations_per_s;
        SizeResult {
            records: function.records,
            records_per_s: function.records_per_s,
            limit_records_per_s,
            ratio: if limit_records_per_s > 0.0 {
                function.records_per_s / limit_records_per_s
            } else {
                0.0
            },
            peak_rss_bytes: function.peak_rss_bytes.max(churn.peak_rss_bytes),
            function,
            churn,
            limit,
        }
    }
}
