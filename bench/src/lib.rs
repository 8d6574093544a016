//! `cargo xtask bench`: the function's throughput against the raw S3 limit of the same
//! endpoint, its memory and cold start, the function sized as Lambda sizes it (CPU and memory
//! of each memory size, S3 at real S3's latency), end-to-end latency on the local pipeline,
//! deploy times, and the whole-table reconcile at scale. Performance is measured here, never in
//! timed tests.
//!
//! Everything runs against one target: a private embedded emulator (the default) or an
//! endpoint. The function always runs on this machine, through the local Runtime API host.

pub mod cgroup;
pub mod cold_start;
pub mod deploy_times;
pub mod end_to_end;
pub mod lambda_sized;
pub mod process_stats;
pub mod reconcile;
pub mod report;
pub mod stats;
pub mod table_writes;
pub mod throughput;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;

use deployer::artifact::{self, BuildError, BuildOptions, Purpose};
use deployer::reconcile::DeployedMirrorError;
use deployer::stack::StackError;
use deployer::target::{Target, DEFAULT_LOCAL_REGION};
use deployer::workflow::DeployError;
use lambda_sized::{LambdaOptions, LambdaSection};
use report::{BenchReport, Machine, RunSettings, Versions};
use throughput::{LoopRuntime, S3Target, SizeResult};
use usersync_function::config;
use usersync_local::emulator::{ensure_binary, Emulator, EmulatorError, FAKECLOUD_VERSION};
use usersync_local::runtime::function_host::HostError;
use workload::{Variant, Workload};

/// Failures of a benchmark run; a run that fails measures nothing and writes nothing.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("failed to provide the embedded emulator")]
    Emulator(#[from] EmulatorError),
    #[error("failed to build the function")]
    Build(#[from] BuildError),
    #[error("failed to start the function")]
    Host(#[source] HostError),
    #[error("the function process went away during the benchmark")]
    FunctionGone,
    #[error("a Lambda-sized cgroup failed")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("failed to start the S3 latency proxy")]
    Proxy(#[source] std::io::Error),
    #[error("the function failed a benchmark batch, so the run measures nothing: {0}")]
    FunctionFailed(String),
    #[error("the raw S3 loop failed, so the run measures nothing: {0}")]
    LimitFailed(String),
    #[error("failed to resolve credentials for the function: {0}")]
    Credentials(String),
    #[error("failed to deploy the benchmark stack")]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("the benchmark stack has no output {0}")]
    MissingOutput(&'static str),
    #[error("the local pipeline failed: {0}")]
    Pipeline(String),
    #[error(transparent)]
    Mirror(#[from] DeployedMirrorError),
    #[error("failed to run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the reconcile process failed: {0}")]
    Reconcile(String),
    #[error("the reconcile process went away before it was measured")]
    ReconcileGone,
    #[error("{0}")]
    Unexpected(String),
    #[error("failed to draw the chart: {0}")]
    Chart(String),
    #[error("failed to write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} must be {expected}")]
    BadOption {
        what: &'static str,
        expected: &'static str,
    },
}

/// What to measure and how often.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `None`: a private embedded emulator, stopped at the end.
    pub endpoint: Option<Target>,
    /// The raw S3 limit, the function's throughput by batch size and its `MAX_CONCURRENCY`
    /// sweep; `false` skips them.
    pub throughput: bool,
    pub batch_sizes: Vec<usize>,
    pub repetitions: usize,
    /// The raw loop's concurrencies to try; the best is the limit.
    pub limit_concurrencies: Vec<usize>,
    /// The function's `MAX_CONCURRENCY` values to sweep (on 1,000-record batches); empty skips.
    pub function_concurrencies: Vec<usize>,
    /// Cold starts measured; 0 skips them.
    pub cold_start_repetitions: usize,
    /// The function sized as Lambda sizes it; `None` skips it.
    pub lambda: Option<LambdaOptions>,
    /// Users written for the end-to-end measurement; 0 skips it.
    pub end_to_end_users: usize,
    /// Create / no-op / teardown cycles; 0 skips them.
    pub deploy_repetitions: usize,
    /// Users in the table the whole-table reconcile is measured on; 0 skips it.
    pub reconcile_users: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            throughput: true,
            batch_sizes: vec![100, 1_000, 10_000],
            repetitions: 5,
            limit_concurrencies: vec![16, 32, 64, 128, 256],
            function_concurrencies: vec![8, 16, 32, 64, 128, 256],
            cold_start_repetitions: 10,
            lambda: Some(LambdaOptions::default()),
            end_to_end_users: 1_000,
            deploy_repetitions: 3,
            reconcile_users: 100_000,
        }
    }
}

impl BenchOptions {
    /// A short run to try the command: sizes 100 and 1,000, two repetitions, one deploy
    /// cycle, 200 users end to end, no `MAX_CONCURRENCY` sweep, the Lambda-sized section's
    /// [`LambdaOptions::quick`], a reconcile of 10,000 users (not 100,000; the function is
    /// still measured on 10,000-record batches, for the reconcile to be compared with).
    pub fn quick() -> Self {
        Self {
            batch_sizes: vec![100, 1_000],
            repetitions: 2,
            limit_concurrencies: vec![32, 64, 128],
            function_concurrencies: Vec::new(),
            cold_start_repetitions: 3,
            lambda: Some(LambdaOptions::quick()),
            end_to_end_users: 200,
            deploy_repetitions: 1,
            reconcile_users: 10_000,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |what, expected| Err(BenchError::BadOption { what, expected });
        if self.batch_sizes.is_empty() || self.batch_sizes.iter().any(|&n| n == 0 || n > 10_000) {
            return bad("every batch size", "between 1 and 10000 (Lambda's maximum)");
        }
        if self.repetitions == 0 {
            return bad("the number of repetitions", "at least 1");
        }
        if self.limit_concurrencies.is_empty() || self.limit_concurrencies.contains(&0) {
            return bad("the raw loop's concurrencies", "a list of numbers above 0");
        }
        if self
            .function_concurrencies
            .iter()
            .any(|&n| config::check_max_concurrency(n).is_err())
        {
            return bad("every MAX_CONCURRENCY to sweep", "between 1 and 1024");
        }
        if let Some(lambda) = &self.lambda {
            lambda.validate()?;
        }
        Ok(())
    }

    /// The sections this run measures, by the names `--only` and `--skip` take.
    pub fn sections(&self) -> Vec<&'static str> {
        [
            ("throughput", self.throughput),
            ("cold-start", self.cold_start_repetitions > 0),
            ("lambda", self.lambda.is_some()),
            ("end-to-end", self.end_to_end_users > 0),
            ("deploy", self.deploy_repetitions > 0),
            ("reconcile", self.reconcile_users > 0),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// Runs the benchmark and returns its report (not yet written; see [`report::write`]).
pub async fn run(
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let started = Instant::now();
    let started_at = DateTime::from(SystemTime::now())
        .fmt(Format::DateTime)
        .unwrap_or_default();

    // The target: the function and the raw loop reach S3 directly, bypassing the emulator's
    // front, which only matters for BatchWriteItem.
    let (emulator, target, s3_endpoint) = match &options.endpoint {
        Some(target) => {
            let url = target.endpoint_url().ok_or(BenchError::BadOption {
                what: "the benchmark target",
                expected: "an emulator or endpoint URL (real AWS is not benchmarked)",
            })?;
            (None, target.clone(), url)
        }
        None => {
            let binary = tokio::task::block_in_place(|| {
                ensure_binary(&mut |line| progress(&format!("[fakecloud] {line}")))
            })?;
            let log = deployer::project::state_dir().join("bench-fakecloud.log");
            let emulator = Emulator::start(&binary, &log).await?;
            progress(&format!(
                "started the embedded emulator at {} (log {})",
                emulator.endpoint_url(),
                log.display()
            ));
            let target = Target::for_endpoint(&emulator.endpoint_url(), DEFAULT_LOCAL_REGION);
            let direct = emulator.direct_url();
            (Some(emulator), target, direct)
        }
    };

    let artifact = tokio::task::block_in_place(|| {
        artifact::build(
            &BuildOptions {
                architecture: None,
                purpose: Purpose::Local,
            },
            &mut |line| progress(line),
        )
    })?;

    let s3 = s3_target(&target, &s3_endpoint).await?;
    let result = measure_all(options, &target, &artifact, &s3, progress).await;
    cleanup_bucket(&target, &s3).await;
    drop(emulator);
    let mut parts = result?;

    let mut report = BenchReport {
        schema: report::SCHEMA_VERSION,
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        machine: machine(),
        versions: Versions {
            usersync: env!("CARGO_PKG_VERSION").to_owned(),
            rustc: rustc_version(),
            fakecloud: options
                .endpoint
                .is_none()
                .then(|| FAKECLOUD_VERSION.to_owned()),
        },
        archive: report::Archive {
            architecture: artifact.architecture.as_str().to_owned(),
            zip_bytes: artifact.size,
            binary_bytes: std::fs::metadata(&artifact.binary_path).map_or(0, |m| m.len()),
        },
        settings: RunSettings {
            target: match &options.endpoint {
                Some(target) => target.describe(),
                None => "embedded emulator".to_owned(),
            },
            batch_sizes: options.batch_sizes.clone(),
            repetitions: options.repetitions,
            function_max_concurrency: "the function's default".to_owned(),
            limit_concurrency_candidates: options.limit_concurrencies.clone(),
            cold_start_repetitions: options.cold_start_repetitions,
            end_to_end_users: options.end_to_end_users,
            deploy_repetitions: options.deploy_repetitions,
            reconcile_users: options.reconcile_users,
            sections: options.sections().into_iter().map(str::to_owned).collect(),
        },
        throughput: std::mem::take(&mut parts.throughput),
        limit_sweep: parts.limit_sweep,
        limit_concurrency: parts.limit.map(|(concurrency, _)| concurrency),
        limit_runtime: parts.limit.map(|(_, runtime)| runtime),
        function_concurrency_sweep: parts.function_concurrency_sweep,
        cold_start_ms: parts.cold_start.as_ref().map(|c| c.to_first_next_ms.median),
        cold_start: parts.cold_start,
        lambda: parts.lambda,
        noop_deploy_ms: parts.deploy.as_ref().map(|d| d.noop_deploy_ms.median),
        end_to_end: parts.end_to_end,
        deploy: parts.deploy,
        reconcile: parts.reconcile,
        targets: Vec::new(),
    };
    report.targets = report::check_targets(&report);
    Ok(report)
}

struct Parts {
    throughput: Vec<SizeResult>,
    limit_sweep: Vec<throughput::LimitRun>,
    /// The raw loop's best concurrency and runtime.
    limit: Option<(usize, LoopRuntime)>,
    function_concurrency_sweep: Vec<throughput::FunctionRun>,
    cold_start: Option<cold_start::ColdStartRun>,
    lambda: Option<LambdaSection>,
    end_to_end: Option<end_to_end::EndToEndRun>,
    deploy: Option<deploy_times::DeployRun>,
    reconcile: Option<reconcile::ReconcileRun>,
}

async fn measure_all(
    options: &BenchOptions,
    target: &Target,
    artifact: &artifact::Artifact,
    s3: &S3Target,
    progress: &mut dyn FnMut(&str),
) -> Result<Parts, BenchError> {
    let binary = &artifact.binary_path;
    let reps = options.repetitions;

    let throughput = if options.throughput {
        measure_throughput(options, target, binary, s3, progress).await?
    } else {
        Throughput::default()
    };

    let cold_start = if options.cold_start_repetitions > 0 {
        progress("cold starts");
        Some(cold_start::measure(binary, s3, options.cold_start_repetitions).await?)
    } else {
        None
    };

    let lambda = match &options.lambda {
        Some(lambda) => Some(lambda_sized::measure(lambda, target, binary, s3, progress).await?),
        None => None,
    };

    let end_to_end = if options.end_to_end_users > 0 {
        progress(&format!(
            "end to end: {} users with BatchWriteItem through the local pipeline",
            options.end_to_end_users
        ));
        Some(
            end_to_end::measure(
                target,
                artifact,
                options.end_to_end_users,
                &format!("bench-e2e-{}", std::process::id()),
            )
            .await?,
        )
    } else {
        None
    };

    let deploy = if options.deploy_repetitions > 0 {
        progress("deploy: a new stack, a no-change deploy and a teardown");
        Some(
            deploy_times::measure(
                target,
                options.deploy_repetitions,
                &format!("bench-deploy-{}", std::process::id()),
                progress,
            )
            .await?,
        )
    } else {
        None
    };

    let reconcile = if options.reconcile_users > 0 {
        let users = options.reconcile_users;
        progress(&format!(
            "reconcile: {users} users in a deployed stack's table, a backfill and a check, each in a process of its own"
        ));
        Some(
            reconcile::measure(
                target,
                s3,
                artifact,
                users,
                reps,
                &format!("bench-reconcile-{}", std::process::id()),
                progress,
            )
            .await?,
        )
    } else {
        None
    };

    Ok(Parts {
        throughput: throughput.sizes,
        limit_sweep: throughput.limit_sweep,
        limit: throughput.limit,
        function_concurrency_sweep: throughput.function_concurrency_sweep,
        cold_start,
        lambda,
        end_to_end,
        deploy,
        reconcile,
    })
}

/// The throughput sections' results.
#[derive(Default)]
struct Throughput {
    sizes: Vec<SizeResult>,
    limit_sweep: Vec<throughput::LimitRun>,
    limit: Option<(usize, LoopRuntime)>,
    function_concurrency_sweep: Vec<throughput::FunctionRun>,
}

/// The raw S3 limit, the function by batch size against it, and the `MAX_CONCURRENCY` sweep.
async fn measure_throughput(
    options: &BenchOptions,
    target: &Target,
    binary: &std::path::Path,
    s3: &S3Target,
    progress: &mut dyn FnMut(&str),
) -> Result<Throughput, BenchError> {
    let reps = options.repetitions;
    let sweep_size = options
        .batch_sizes
        .iter()
        .copied()
        .max()
        .unwrap_or(1000)
        .min(1000);
    progress(&format!(
        "finding the raw S3 limit: a plain SDK loop of {sweep_size} operations at several concurrencies"
    ));
    let sweep_ops = &Workload::new(Variant::Mixed, sweep_size, "sweep").s3_operations();
    let mut limit_sweep = Vec::new();
    for runtime in LoopRuntime::ALL {
        for &concurrency in &options.limit_concurrencies {
            let label = format!("sweep-{concurrency}-{}", runtime.label());
            let run = in_new_bucket(target, s3, &label, |bucket| async move {
                throughput::measure_limit(&bucket, sweep_ops, concurrency, runtime, reps.min(3))
                    .await
            })
            .await?;
            progress(&format!(
                "  raw S3 loop, {:<17}, concurrency {concurrency:>4}: {:>8.0} operations/s",
                runtime.as_str(),
                run.operations_per_s
            ));
            limit_sweep.push(run);
        }
    }
    let (limit_concurrency, limit_runtime) = limit_sweep
        .iter()
        .max_by(|a, b| a.operations_per_s.total_cmp(&b.operations_per_s))
        .map_or((64, LoopRuntime::OneThread), |r| (r.concurrency, r.runtime));

    let mut sizes = Vec::new();
    for &records in &options.batch_sizes {
        progress(&format!("batches of {records} records"));
        let mixed = &Workload::new(Variant::Mixed, records, &format!("m{records}"));
        let function = in_new_bucket(target, s3, &format!("m{records}"), |bucket| async move {
            throughput::measure_function(binary, &bucket, mixed, Variant::Mixed, None, reps).await
        })
        .await?;
        progress(&format!(
            "  function, mixed: {:>8.0} records/s, batch {:.0} ms, peak RSS {:.1} MiB",
            function.records_per_s,
            function.batch_ms.median,
            function.peak_rss_bytes as f64 / 1048576.0
        ));
        let churned = &Workload::new(Variant::Churn, records, &format!("c{records}"));
        let churn = in_new_bucket(target, s3, &format!("c{records}"), |bucket| async move {
            throughput::measure_function(binary, &bucket, churned, Variant::Churn, None, reps).await
        })
        .await?;
        progress(&format!(
            "  function, churn: {:>8.0} records/s",
            churn.records_per_s
        ));
        let operations = &mixed.s3_operations();
        let limit = in_new_bucket(target, s3, &format!("l{records}"), |bucket| async move {
            throughput::measure_limit(&bucket, operations, limit_concurrency, limit_runtime, reps)
                .await
        })
        .await?;
        progress(&format!(
            "  raw S3 loop:     {:>8.0} operations/s (concurrency {limit_concurrency}, {})",
            limit.operations_per_s,
            limit_runtime.as_str()
        ));
        sizes.push(SizeResult::new(function, churn, limit));
    }

    let mut function_concurrency_sweep = Vec::new();
    if !options.function_concurrencies.is_empty() {
        let records = sweep_size;
        progress(&format!(
            "the function by MAX_CONCURRENCY, on batches of {records} records"
        ));
        let workload = &Workload::new(Variant::Mixed, records, "mc");
        for &concurrency in &options.function_concurrencies {
            let label = format!("mc{concurrency}");
            let run = in_new_bucket(target, s3, &label, |bucket| async move {
                throughput::measure_function(
                    binary,
                    &bucket,
                    workload,
                    Variant::Mixed,
                    Some(concurrency),
                    reps,
                )
                .await
            })
            .await?;
            progress(&format!(
                "  MAX_CONCURRENCY {concurrency:>4}: {:>8.0} records/s",
                run.records_per_s
            ));
            function_concurrency_sweep.push(run);
        }
    }

    Ok(Throughput {
        sizes,
        limit_sweep,
        limit: Some((limit_concurrency, limit_runtime)),
        function_concurrency_sweep,
    })
}

/// Creates the benchmark's bucket and the clients to write it.
async fn s3_target(target: &Target, endpoint_url: &str) -> Result<S3Target, BenchError> {
    let provider = target
        .sdk
        .credentials_provider()
        .ok_or_else(|| BenchError::Credentials("the target has no credentials".to_owned()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|err| BenchError::Credentials(err.to_string()))?;
    let mut environment = BTreeMap::from([
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            credentials.access_key_id().to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            credentials.secret_access_key().to_owned(),
        ),
    ]);
    if let Some(token) = credentials.session_token() {
        environment.insert("AWS_SESSION_TOKEN".to_owned(), token.to_owned());
    }
    let region = target.region();
    let client =
        throughput::s3_client_like_the_function(endpoint_url, &region, credentials.clone()).await;
    let bucket = format!("usersync-bench-{}", std::process::id());
    throughput::create_bucket(&client, &bucket).await?;
    Ok(S3Target {
        endpoint_url: endpoint_url.to_owned(),
        region,
        bucket,
        credentials: environment,
        client,
        loop_credentials: credentials,
    })
}

/// Runs `measure` against a new, empty bucket, removed afterwards.
pub(crate) async fn in_new_bucket<T, Fut>(
    target: &Target,
    s3: &S3Target,
    label: &str,
    measure: impl FnOnce(S3Target) -> Fut,
) -> Result<T, BenchError>
where
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let bucket = s3.with_new_bucket(label).await?;
    let result = measure(bucket.clone()).await;
    cleanup_bucket(target, &bucket).await;
    result
}

/// Empties and removes the benchmark's bucket; a leftover bucket is only reported.
async fn cleanup_bucket(target: &Target, s3: &S3Target) {
    let emptied = deployer::stack::delete_all_versions(target, &s3.bucket, None).await;
    let deleted = s3.client.delete_bucket().bucket(&s3.bucket).send().await;
    if emptied.is_err() || deleted.is_err() {
        eprintln!(
            "warning: failed to remove the benchmark bucket {}; remove it by hand",
            s3.bucket
        );
    }
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory_bytes = <procfs::Meminfo as procfs::Current>::current()
        .map(|m| m.mem_total)
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|release| {
            release
                .lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_bytes,
        os,
    }
}

fn rustc_version() -> String {
    std::process::Command::new(deployer::project::toolchain_program("RUSTC", "rustc"))
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc (unknown version)".to_owned())
}
