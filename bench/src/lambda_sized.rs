//! The function sized as Lambda sizes it: the real `bootstrap` in a cgroup with the CPU share
//! and the memory limit of each memory size (`cgroup`), its S3 requests held for the latency
//! of real S3 by the fault proxy (`usersync_local::emulator::faults`) in front of the target's
//! S3, invoked back to back as the poller invokes it.
//!
//! Runs, each against a new bucket and a new proxy:
//!
//! - every memory size × every batch size, S3 20 ms away; and with a jitter of 10-40 ms instead
//!   (no fixed latency) for the jitter batch sizes;
//! - `MAX_CONCURRENCY` at 128 MB, 20 ms, for every batch size (rows with `max_concurrency`);
//! - Lambda's parallelization factor N at 128 MB, 20 ms: N function processes, each in a
//!   128 MB group of its own, the shard's records split by user into N lanes, each lane
//!   invoked back to back with batches of 100 (rows with `parallelization_factor`).
//!
//! Records per second is the records ÷ the invocations' summed wall time (so the gaps between
//! invocations, which the poller also has, do not count); with a parallelization factor, all
//! records ÷ the wall time of the whole run. A row's CPU time is the group's (see
//! [`crate::cgroup::CpuTimeSource`]) over the measured batches; its peak RSS the process's
//! `VmHWM` (the largest of the lanes').
//!
//! Each process joins its group right after it starts, before a warm-up batch; a process the
//! host replaces (one that crashed) would run outside the group, so the run then fails with
//! [`BenchError::FunctionGone`]. Where cgroups cannot be used, or the target's S3 is not a
//! plain HTTP address the proxy can forward to, the section is skipped by name, with the
//! reason, and never run unthrottled.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::cgroup::{self, CgroupVersion, Cgroups, Group, Unusable};
use super::process_stats;
use super::stats::percentile;
use super::throughput::{function_spec, invoke_checked, start_spec, S3Target};
use super::workload::{Variant, Workload};
use super::{in_new_bucket, BenchError};
use deployer::target::Target;
use usersync_function::config;
use usersync_local::emulator::faults::{FaultConfig, FaultProxy, FaultRates};
use usersync_local::emulator::tls::TRUST_FILE_VAR;
use usersync_local::runtime::function_host::FunctionHost;

/// The memory size of the `MAX_CONCURRENCY` sweep and the parallelization-factor runs.
pub const SMALL_MEMORY_MB: u32 = 128;

/// The batch size of the parallelization-factor lanes.
pub const LANE_BATCH_SIZE: usize = 100;

/// Lambda's largest parallelization factor.
pub const MAX_PARALLELIZATION_FACTOR: usize = 10;

/// The proxy's seed (it only draws the jitter: no faults are injected).
pub const PROXY_SEED: u64 = 15;

/// How the function speaks to the latency proxy. HTTPS, as to S3 itself, makes the function pay
/// for the handshakes and the encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Scheme {
    Http,
    Https,
}

impl S3Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            S3Scheme::Http => "HTTP",
            S3Scheme::Https => "HTTPS",
        }
    }
}

/// What the section measures.
#[derive(Clone, Debug)]
pub struct LambdaOptions {
    pub memory_sizes: Vec<u32>,
    pub batch_sizes: Vec<usize>,
    /// Records a run sends, cut into batches of its size; at least `min_batches` batches.
    pub records_per_run: usize,
    pub min_batches: usize,
    /// The fixed latency the proxy adds to every S3 request.
    pub s3_latency: Duration,
    /// The jitter runs' latency range (no fixed latency then).
    pub jitter: (Duration, Duration),
    /// The batch sizes also run with the jitter, at every memory size.
    pub jitter_batch_sizes: Vec<usize>,
    /// `MAX_CONCURRENCY` values at 128 MB; empty skips the sweep.
    pub max_concurrency_sweep: Vec<usize>,
    /// Parallelization factors at 128 MB; empty skips them.
    pub parallelization_factors: Vec<usize>,
    pub scheme: S3Scheme,
}

impl Default for LambdaOptions {
    fn default() -> Self {
        Self {
            memory_sizes: vec![128, 256, 512, 1024, 1769],
            batch_sizes: vec![100, 1_000],
            records_per_run: 4_000,
            min_batches: 8,
            s3_latency: Duration::from_millis(20),
            jitter: (Duration::from_millis(10), Duration::from_millis(40)),
            jitter_batch_sizes: vec![100, 1_000],
            max_concurrency_sweep: vec![8, 16, 32, 64, 128, 256],
            parallelization_factors: vec![1, 2, 4, 10],
            scheme: S3Scheme::Https,
        }
    }
}

impl LambdaOptions {
    /// Every memory size and batch size with a quarter of the records (10 batches of 100, 4
    /// of 1,000), the jitter on batches of 100 only, three `MAX_CONCURRENCY` values and three
    /// parallelization factors.
    pub fn quick() -> Self {
        Self {
            records_per_run: 1_000,
            min_batches: 4,
            jitter_batch_sizes: vec![100],
            max_concurrency_sweep: vec![8, 64, 256],
            parallelization_factors: vec![1, 4, 10],
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        let bad = |what, expected| Err(BenchError::BadOption { what, expected });
        if self.memory_sizes.is_empty()
            || self
                .memory_sizes
                .iter()
                .any(|mb| !cgroup::LAMBDA_MEMORY_MB.contains(mb))
        {
            return bad(
                "every Lambda memory size",
                "between 128 and 10240 MB (Lambda's range)",
            );
        }
        let batch = |n: &usize| (1..=10_000).contains(n);
        if self.batch_sizes.is_empty()
            || !self.batch_sizes.iter().all(batch)
            || !self.jitter_batch_sizes.iter().all(batch)
        {
            return bad(
                "every Lambda-sized batch size",
                "between 1 and 10000 (Lambda's maximum)",
            );
        }
        if self.records_per_run == 0 || self.min_batches == 0 {
            return bad("the Lambda-sized records and batches per run", "at least 1");
        }
        if self
            .max_concurrency_sweep
            .iter()
            .any(|&n| config::check_max_concurrency(n).is_err())
        {
            return bad("every MAX_CONCURRENCY to sweep", "between 1 and 1024");
        }
        if self
            .parallelization_factors
            .iter()
            .any(|n| !(1..=MAX_PARALLELIZATION_FACTOR).contains(n))
        {
            return bad("every parallelization factor", "between 1 and 10");
        }
        if self.jitter.0 > self.jitter.1 {
            return bad("the jitter range", "from its low to its high end");
        }
        Ok(())
    }

    /// The records a run of `batch_size` sends: `records_per_run`, or `min_batches` batches
    /// when that is more.
    pub fn records_for(&self, batch_size: usize) -> usize {
        self.records_per_run.max(self.min_batches * batch_size)
    }

    /// Every run, in the order measured.
    pub fn plan(&self) -> Vec<RunPlan> {
        let fixed = Latency::Fixed(self.s3_latency);
        let jitter = Latency::Jitter(self.jitter.0, self.jitter.1);
        let base = |memory_mb, batch_size, latency| RunPlan {
            memory_mb,
            batch_size,
            latency,
            max_concurrency: None,
            parallelization_factor: None,
        };
        let mut runs = Vec::new();
        for &memory_mb in &self.memory_sizes {
            for &batch_size in &self.batch_sizes {
                runs.push(base(memory_mb, batch_size, fixed));
            }
            for &batch_size in &self.jitter_batch_sizes {
                runs.push(base(memory_mb, batch_size, jitter));
            }
        }
        for &batch_size in &self.batch_sizes {
            for &concurrency in &self.max_concurrency_sweep {
                runs.push(RunPlan {
                    max_concurrency: Some(concurrency),
                    ..base(SMALL_MEMORY_MB, batch_size, fixed)
                });
            }
        }
        for &factor in &self.parallelization_factors {
            runs.push(RunPlan {
                parallelization_factor: Some(factor),
                ..base(SMALL_MEMORY_MB, LANE_BATCH_SIZE, fixed)
            });
        }
        runs
    }
}

/// The latency the proxy adds to each S3 request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Fixed(Duration),
    /// Uniform from the first to the second.
    Jitter(Duration, Duration),
}

impl Latency {
    fn fault_config(self) -> FaultConfig {
        let none = FaultConfig::new(PROXY_SEED, FaultRates::default());
        match self {
            Latency::Fixed(latency) => none.with_latency(latency),
            Latency::Jitter(low, high) => none.with_jitter(low, high),
        }
    }

    fn describe(self) -> String {
        match self {
            Latency::Fixed(latency) => format!("+{} ms", latency.as_millis()),
            Latency::Jitter(low, high) => {
                format!("+{}-{} ms", low.as_millis(), high.as_millis())
            }
        }
    }
}

/// One run to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunPlan {
    pub memory_mb: u32,
    pub batch_size: usize,
    pub latency: Latency,
    /// `None`: the function's default.
    pub max_concurrency: Option<usize>,
    /// `None`: one process, the shard's records in one lane.
    pub parallelization_factor: Option<usize>,
}

/// The section in the report.
#[derive(Clone, Debug, Serialize)]
pub struct LambdaSection {
    /// Why the section did not run (`lambda-sized section skipped: …` on the terminal); null
    /// when it ran.
    pub skipped: Option<String>,
    /// How the runs were made; null when skipped.
    pub setup: Option<LambdaSetup>,
    pub rows: Vec<LambdaRow>,
}

impl LambdaSection {
    fn skipped(reason: String) -> LambdaSection {
        LambdaSection {
            skipped: Some(reason),
            setup: None,
            rows: Vec::new(),
        }
    }

    /// The row the target is judged on: `memory_mb` MB, batches of `batch_size`, S3
    /// `latency_ms` away, the function's own `MAX_CONCURRENCY`, one lane.
    pub fn base_row(
        &self,
        memory_mb: u32,
        batch_size: usize,
        latency_ms: u64,
    ) -> Option<&LambdaRow> {
        self.rows.iter().find(|row| {
            row.is_base()
                && row.jitter_ms.is_none()
                && row.memory_mb == memory_mb
                && row.batch_size == batch_size
                && row.s3_latency_ms == latency_ms
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LambdaSetup {
    pub cgroup: CgroupVersion,
    pub cpu_period_us: u64,
    /// How the CPU quota follows the memory size.
    pub cpu_quota: String,
    pub memory_limit: String,
    /// Where `cpu_us_per_record` comes from.
    pub cpu_time_from: String,
    /// Where `peak_rss_bytes` comes from.
    pub peak_rss_from: String,
    /// Whether the function spoke HTTP or HTTPS to the latency proxy.
    pub s3_scheme: S3Scheme,
    /// Records per run: batches of 100 get `records_per_run / 100` invocations, larger
    /// batches at least `min_batches`.
    pub records_per_run: usize,
    pub min_batches: usize,
    /// The machine's cores, which the emulator, the proxy and the function share.
    pub host_cores: usize,
}

/// One run: the fields are the report's stable names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LambdaRow {
    pub memory_mb: u32,
    pub batch_size: usize,
    /// The fixed latency added to every S3 request (0 on the jitter rows).
    pub s3_latency_ms: u64,
    /// `[low, high]` of the uniform jitter added to every S3 request, or null.
    pub jitter_ms: Option<[u64; 2]>,
    pub records_per_s: f64,
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
    pub cpu_us_per_record: f64,
    pub peak_rss_bytes: u64,
    /// The `MAX_CONCURRENCY` swept (absent: the function's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// The parallelization factor simulated (absent: one lane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelization_factor: Option<usize>,
}

impl LambdaRow {
    /// Not a row of the `MAX_CONCURRENCY` sweep nor of a parallelization factor.
    pub fn is_base(&self) -> bool {
        self.max_concurrency.is_none() && self.parallelization_factor.is_none()
    }
}

/// Why the section cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum LambdaSkip {
    #[error("cgroups cannot be used")]
    Cgroups(#[source] Unusable),
    #[error(
        "the S3 endpoint {url} is not plain HTTP, which the latency proxy needs in front of it"
    )]
    NotHttp { url: String },
    #[error("the S3 endpoint {url} does not resolve to an address")]
    Unresolved {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// Measures the section; a section that cannot run here is returned as skipped, with the
/// reason, not as an error.
pub async fn measure(
    options: &LambdaOptions,
    target: &Target,
    binary: &Path,
    s3: &S3Target,
    progress: &mut dyn FnMut(&str),
) -> Result<LambdaSection, BenchError> {
    let (cgroups, upstream) = match prepare(s3).await {
        Ok(prepared) => prepared,
        Err(skipped) => {
            let reason = deployer::errors::chain(&skipped);
            progress(&format!("lambda-sized section skipped: {reason}"));
            return Ok(LambdaSection::skipped(reason));
        }
    };
    let setup = LambdaSetup {
        cgroup: cgroups.version(),
        cpu_period_us: cgroup::CFS_PERIOD_US,
        cpu_quota: format!(
            "floor({} × memory_mb / {}) µs per period",
            cgroup::CFS_PERIOD_US,
            cgroup::ONE_VCPU_MB
        ),
        memory_limit: "memory_mb MiB".to_owned(),
        cpu_time_from: cgroups.cpu_time_source().describe().to_owned(),
        peak_rss_from: "the process's VmHWM (/proc/<pid>/status)".to_owned(),
        s3_scheme: options.scheme,
        records_per_run: options.records_per_run,
        min_batches: options.min_batches,
        host_cores: std::thread::available_parallelism().map_or(1, usize::from),
    };
    progress(&format!(
        "lambda-sized: bootstrap in a {} group per memory size (CPU {}, memory limit the size; groups in {}), S3 over {} through a proxy adding latency",
        cgroups.version().as_str(),
        setup.cpu_quota,
        cgroups
            .parent_dirs()
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        options.scheme.as_str()
    ));
    let context = Context {
        options,
        binary,
        cgroups: &cgroups,
        upstream,
    };
    let mut rows = Vec::new();
    for (index, plan) in options.plan().into_iter().enumerate() {
        let context = &context;
        let measured = in_new_bucket(target, s3, &format!("lam{index}"), |bucket| async move {
            measure_run(context, &plan, &bucket).await
        })
        .await?;
        progress(&measured.describe(&plan));
        rows.push(measured.row);
    }
    Ok(LambdaSection {
        skipped: None,
        setup: Some(setup),
        rows,
    })
}

/// Cgroups to use, tried out, and the S3 address the proxy forwards to.
async fn prepare(s3: &S3Target) -> Result<(Cgroups, SocketAddr), LambdaSkip> {
    let cgroups = Cgroups::detect_here().map_err(LambdaSkip::Cgroups)?;
    cgroups.try_out().map_err(LambdaSkip::Cgroups)?;
    let upstream = http_address(&s3.endpoint_url).await?;
    Ok((cgroups, upstream))
}

/// The address of a plain-HTTP endpoint URL.
async fn http_address(url: &str) -> Result<SocketAddr, LambdaSkip> {
    let not_http = || LambdaSkip::NotHttp {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(not_http)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(not_http());
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    }) && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let unresolved = |source| LambdaSkip::Unresolved {
        url: url.to_owned(),
        source,
    };
    tokio::net::lookup_host(with_port)
        .await
        .map_err(unresolved)?
        .next()
        .ok_or_else(|| unresolved(std::io::Error::other("no address")))
}

struct Context<'a> {
    options: &'a LambdaOptions,
    binary: &'a Path,
    cgroups: &'a Cgroups,
    upstream: SocketAddr,
}

/// The proxy the function's S3 requests go through, and what the function needs to use it.
/// The one place that chooses plain HTTP or TLS.
struct S3Proxy {
    proxy: FaultProxy,
    /// With TLS, the CA the function trusts (through [`TRUST_FILE_VAR`]); removed on drop.
    ca_file: Option<tempfile::TempPath>,
}

impl S3Proxy {
    async fn start(
        upstream: SocketAddr,
        config: FaultConfig,
        scheme: S3Scheme,
    ) -> Result<S3Proxy, BenchError> {
        match scheme {
            S3Scheme::Http => Ok(S3Proxy {
                proxy: FaultProxy::start(upstream, config)
                    .await
                    .map_err(BenchError::Proxy)?,
                ca_file: None,
            }),
            S3Scheme::Https => {
                let proxy = FaultProxy::start_tls(upstream, config)
                    .await
                    .map_err(BenchError::Proxy)?;
                let dir = deployer::project::state_dir();
                let file = std::fs::create_dir_all(&dir)
                    .and_then(|()| {
                        tempfile::Builder::new()
                            .prefix("bench-s3-proxy-ca-")
                            .suffix(".pem")
                            .tempfile_in(&dir)
                    })
                    .map(tempfile::NamedTempFile::into_temp_path)
                    .and_then(|path| proxy.write_ca_file(&path).map(|()| path))
                    .map_err(|source| BenchError::Write {
                        path: dir.join("bench-s3-proxy-ca-*.pem"),
                        source,
                    })?;
                Ok(S3Proxy {
                    proxy,
                    ca_file: Some(file),
                })
            }
        }
    }

    /// The variables the function needs to reach the proxy: with TLS, the CA file to trust.
    fn environment(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.ca_file
            .iter()
            .map(|path| (TRUST_FILE_VAR.to_owned(), path.display().to_string()))
    }

    fn url(&self) -> String {
        self.proxy.url()
    }
}

/// One function process in its group.
struct Lane {
    // Dropped first: the process is killed before its group is removed.
    host: FunctionHost,
    pid: u32,
    group: Group,
}

impl Lane {
    async fn start(
        context: &Context<'_>,
        s3: &S3Target,
        proxy: &S3Proxy,
        plan: &RunPlan,
        index: usize,
    ) -> Result<Lane, BenchError> {
        let mut spec = function_spec(context.binary, s3, plan.max_concurrency);
        spec.memory_mb = plan.memory_mb;
        spec.environment.extend(proxy.environment());
        let host = start_spec(spec).await?;
        let pid = host.pid().ok_or(BenchError::FunctionGone)?;
        let group = context
            .cgroups
            .create(&format!("{}mb-{index}", plan.memory_mb), plan.memory_mb)?;
        group.join(pid)?;
        Ok(Lane { host, pid, group })
    }

    /// The process the group holds is still the host's.
    fn check(&self) -> Result<(), BenchError> {
        if self.host.pid() == Some(self.pid) && process_stats::read(self.pid).is_some() {
            Ok(())
        } else {
            Err(BenchError::FunctionGone)
        }
    }

    async fn invoke(&self, event: Value) -> Result<Duration, BenchError> {
        self.check()?;
        let started = Instant::now();
        invoke_checked(&self.host, event).await?;
        let took = started.elapsed();
        self.check()?;
        Ok(took)
    }

    /// Invokes `events` back to back; the wall time of each.
    async fn run(&self, events: Vec<Value>) -> Result<Vec<Duration>, BenchError> {
        let mut took = Vec::with_capacity(events.len());
        for event in events {
            took.push(self.invoke(event).await?);
        }
        Ok(took)
    }

    fn cpu(&self) -> Result<Duration, BenchError> {
        match self.group.cpu_time()? {
            Some(cpu) => Ok(cpu),
            None => Ok(process_stats::read(self.pid)
                .ok_or(BenchError::FunctionGone)?
                .cpu),
        }
    }

    fn peak_rss_bytes(&self) -> Result<u64, BenchError> {
        Ok(process_stats::read(self.pid)
            .ok_or(BenchError::FunctionGone)?
            .peak_rss_bytes)
    }

    /// Stops the process and removes its group.
    async fn finish(self) -> Result<(), BenchError> {
        let Lane { host, group, .. } = self;
        host.shutdown().await;
        drop(host);
        group.remove()?;
        Ok(())
    }
}

/// A run's row and what the terminal shows beside it.
struct Measured {
    row: LambdaRow,
    batches: usize,
    /// Periods the quota held a group back, of the periods it ran (summed over the lanes).
    throttled: cgroup::Throttling,
    /// The largest group memory peak, where the kernel reports it.
    group_memory_peak_bytes: Option<u64>,
}

impl Measured {
    fn describe(&self, plan: &RunPlan) -> String {
        let row = &self.row;
        let mut what = format!(
            "  {:>4} MB, batch {:>4}, S3 {:<9}",
            row.memory_mb,
            row.batch_size,
            plan.latency.describe()
        );
        if let Some(n) = row.max_concurrency {
            what.push_str(&format!(", MAX_CONCURRENCY {n:>3}"));
        }
        if let Some(n) = row.parallelization_factor {
            what.push_str(&format!(", parallelization factor {n:>2}"));
        }
        let group_peak = self
            .group_memory_peak_bytes
            .map(|bytes| format!(", group memory peak {:.1} MiB", mib(bytes)))
            .unwrap_or_default();
        format!(
            "{what}: {:>6.0} records/s, batch p50 {:.0} ms, p99 {:.0} ms ({} batches), CPU {:.0} µs/record, throttled in {} of {} periods, peak RSS {:.1} MiB{group_peak}",
            row.records_per_s,
            row.batch_p50_ms,
            row.batch_p99_ms,
            self.batches,
            row.cpu_us_per_record,
            self.throttled.throttled,
            self.throttled.periods,
            mib(row.peak_rss_bytes),
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn measure_run(
    context: &Context<'_>,
    plan: &RunPlan,
    bucket: &S3Target,
) -> Result<Measured, BenchError> {
    let proxy = S3Proxy::start(
        context.upstream,
        plan.latency.fault_config(),
        context.options.scheme,
    )
    .await?;
    let function_s3 = S3Target {
        endpoint_url: proxy.url(),
        ..bucket.clone()
    };
    let lanes_wanted = plan.parallelization_factor.unwrap_or(1);
    let mut lanes = Vec::with_capacity(lanes_wanted);
    for index in 0..lanes_wanted {
        lanes.push(Lane::start(context, &function_s3, &proxy, plan, index).await?);
    }

    let records = context.options.records_for(plan.batch_size);
    let shard = Workload::new(Variant::Mixed, records, "shard");
    let events: Vec<Vec<Value>> = match plan.parallelization_factor {
        Some(factor) => shard
            .split_by_user(factor)
            .iter()
            .map(|lane| lane.batches(plan.batch_size))
            .collect(),
        None => vec![shard.batches(plan.batch_size)],
    };
    let batches = events.iter().map(Vec::len).sum();

    // One batch first in each process, so that the measured ones find its connections open,
    // as in a Lambda environment that has served a batch.
    let warm = Workload::new(Variant::Mixed, plan.batch_size, "warm");
    futures::future::try_join_all(lanes.iter().map(|lane| lane.invoke(warm.event()))).await?;

    let cpu_before = lanes.iter().map(Lane::cpu).collect::<Result<Vec<_>, _>>()?;
    let throttled_before = lanes
        .iter()
        .map(|lane| lane.group.throttling())
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let took = futures::future::try_join_all(
        lanes
            .iter()
            .zip(events)
            .map(|(lane, events)| lane.run(events)),
    )
    .await?;
    let wall = started.elapsed();
    let mut cpu = Duration::ZERO;
    let mut throttled = cgroup::Throttling::default();
    let mut peak_rss_bytes = 0;
    let mut group_memory_peak_bytes = None;
    for ((lane, before), throttled_before) in lanes.iter().zip(&cpu_before).zip(&throttled_before) {
        cpu += lane.cpu()?.saturating_sub(*before);
        let now = lane.group.throttling()?;
        throttled.periods += now.periods.saturating_sub(throttled_before.periods);
        throttled.throttled += now.throttled.saturating_sub(throttled_before.throttled);
        peak_rss_bytes = peak_rss_bytes.max(lane.peak_rss_bytes()?);
        if let Some(peak) = lane.group.memory_peak_bytes()? {
            group_memory_peak_bytes = Some(group_memory_peak_bytes.unwrap_or(0).max(peak));
        }
    }
    for lane in lanes {
        lane.finish().await?;
    }
    drop(proxy);

    let durations_ms: Vec<f64> = took
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let seconds = match plan.parallelization_factor {
        Some(_) => wall.as_secs_f64(),
        None => took.iter().flatten().map(Duration::as_secs_f64).sum(),
    };
    let (s3_latency_ms, jitter_ms) = match plan.latency {
        Latency::Fixed(latency) => (millis(latency), None),
        Latency::Jitter(low, high) => (0, Some([millis(low), millis(high)])),
    };
    Ok(Measured {
        row: LambdaRow {
            memory_mb: plan.memory_mb,
            batch_size: plan.batch_size,
            s3_latency_ms,
            jitter_ms,
            records_per_s: if seconds > 0.0 {
                records as f64 / seconds
            } else {
                0.0
            },
            batch_p50_ms: percentile(&durations_ms, 50.0),
            batch_p99_ms: percentile(&durations_ms, 99.0),
            cpu_us_per_record: cpu.as_secs_f64() * 1e6 / records as f64,
            peak_rss_bytes,
            max_concurrency: plan.max_concurrency,
            parallelization_factor: plan.parallelization_factor,
        },
        batches,
        throttled,
        group_memory_peak_bytes,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
impl LambdaRow {
    /// A plain row (20 ms, no sweep) at `rate` records/s, for tests here and in `report`.
    pub(crate) fn sample(memory_mb: u32, batch_size: usize, rate: f64) -> LambdaRow {
        LambdaRow {
            memory_mb,
            batch_size,
            s3_latency_ms: 20,
            jitter_ms: None,
            records_per_s: rate,
            batch_p50_ms: batch_size as f64 / rate * 1000.0,
            batch_p99_ms: batch_size as f64 / rate * 1300.0,
            cpu_us_per_record: 90.0,
            peak_rss_bytes: 14 << 20,
            max_concurrency: None,
            parallelization_factor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_plan_has_every_size_the_jitter_the_sweep_and_the_factors() {
        let options = LambdaOptions::default();
        options.validate().unwrap();
        let plan = options.plan();
        let base: Vec<&RunPlan> = plan
            .iter()
            .filter(|r| r.max_concurrency.is_none() && r.parallelization_factor.is_none())
            .collect();
        assert_eq!(base.len(), 5 * (2 + 2));
        for memory in [128, 256, 512, 1024, 1769] {
            for batch in [100, 1000] {
                for latency in [
                    Latency::Fixed(Duration::from_millis(20)),
                    Latency::Jitter(Duration::from_millis(10), Duration::from_millis(40)),
                ] {
                    assert!(
                        base.iter().any(|r| r.memory_mb == memory
                            && r.batch_size == batch
                            && r.latency == latency),
                        "{memory} MB, {batch}, {latency:?}"
                    );
                }
            }
        }
        let sweep: Vec<(usize, usize)> = plan
            .iter()
            .filter_map(|r| r.max_concurrency.map(|n| (r.batch_size, n)))
            .collect();
        assert_eq!(sweep.len(), 12);
        assert!(plan
            .iter()
            .filter(|r| r.max_concurrency.is_some() || r.parallelization_factor.is_some())
            .all(|r| r.memory_mb == 128 && r.latency == Latency::Fixed(Duration::from_millis(20))));
        let factors: Vec<usize> = plan
            .iter()
            .filter_map(|r| r.parallelization_factor)
            .collect();
        assert_eq!(factors, [1, 2, 4, 10]);
        assert!(plan
            .iter()
            .filter(|r| r.parallelization_factor.is_some())
            .all(|r| r.batch_size == 100));
        assert_eq!(options.records_for(100), 4000, "40 batches of 100");
        assert_eq!(options.records_for(1000), 8000, "8 batches of 1,000");
    }

    #[test]
    fn the_quick_plan_is_shorter_but_keeps_every_memory_size_and_the_jitter_at_100() {
        let quick = LambdaOptions::quick();
        quick.validate().unwrap();
        let plan = quick.plan();
        for memory in [128, 256, 512, 1024, 1769] {
            assert!(plan.iter().any(|r| r.memory_mb == memory
                && r.batch_size == 100
                && matches!(r.latency, Latency::Jitter(..))));
        }
        assert!(plan.len() < LambdaOptions::default().plan().len());
        assert_eq!(quick.records_for(100), 1000);
        assert_eq!(quick.records_for(1000), 4000);
    }

    #[test]
    fn options_out_of_lambdas_ranges_are_refused() {
        let refused = |change: fn(&mut LambdaOptions)| {
            let mut options = LambdaOptions::default();
            change(&mut options);
            options.validate().is_err()
        };
        assert!(refused(|o| o.memory_sizes = vec![64]));
        assert!(refused(|o| o.memory_sizes = vec![20_000]));
        assert!(refused(|o| o.memory_sizes.clear()));
        assert!(refused(|o| o.batch_sizes = vec![0]));
        assert!(refused(|o| o.jitter_batch_sizes = vec![10_001]));
        assert!(refused(|o| o.parallelization_factors = vec![11]));
        assert!(refused(|o| o.parallelization_factors = vec![0]));
        assert!(refused(|o| o.max_concurrency_sweep = vec![0]));
        assert!(refused(|o| o.records_per_run = 0));
        assert!(refused(
            |o| o.jitter = (Duration::from_millis(40), Duration::from_millis(10))
        ));
    }

    #[test]
    fn latencies_become_the_proxys_settings_with_no_faults() {
        let fixed = Latency::Fixed(Duration::from_millis(20)).fault_config();
        assert_eq!(fixed.latency, Some(Duration::from_millis(20)));
        assert_eq!(fixed.jitter, None);
        assert_eq!(fixed.rates, FaultRates::NONE);
        let jitter =
            Latency::Jitter(Duration::from_millis(10), Duration::from_millis(40)).fault_config();
        assert_eq!(jitter.latency, None);
        assert_eq!(
            jitter.jitter,
            Some((Duration::from_millis(10), Duration::from_millis(40)))
        );
        assert_eq!(jitter.rates, FaultRates::NONE);
    }

    #[tokio::test]
    async fn only_plain_http_addresses_can_be_proxied() {
        assert_eq!(
            http_address("http://127.0.0.1:4566").await.unwrap(),
            "127.0.0.1:4566".parse().unwrap()
        );
        assert_eq!(
            http_address("http://127.0.0.1:9000/some/path")
                .await
                .unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            http_address("http://[::1]:4566").await.unwrap(),
            "[::1]:4566".parse().unwrap()
        );
        assert_eq!(
            http_address("http://127.0.0.1").await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        let err = http_address("https://s3.eu-west-1.amazonaws.com")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the S3 endpoint https://s3.eu-west-1.amazonaws.com is not plain HTTP, which the latency proxy needs in front of it"
        );
        assert!(matches!(
            http_address("http://").await,
            Err(LambdaSkip::NotHttp { .. })
        ));
    }

    fn row(memory_mb: u32, batch_size: usize, rate: f64) -> LambdaRow {
        LambdaRow::sample(memory_mb, batch_size, rate)
    }

    #[test]
    fn rows_have_exactly_the_reports_fields() {
        let json = serde_json::to_value(row(128, 100, 900.0)).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "batch_p50_ms",
                "batch_p99_ms",
                "batch_size",
                "cpu_us_per_record",
                "jitter_ms",
                "memory_mb",
                "peak_rss_bytes",
                "records_per_s",
                "s3_latency_ms"
            ]
        );
        assert_eq!(json["jitter_ms"], Value::Null);
        let swept = LambdaRow {
            max_concurrency: Some(16),
            jitter_ms: Some([10, 40]),
            ..row(128, 100, 900.0)
        };
        let json = serde_json::to_value(swept).unwrap();
        assert_eq!(json["max_concurrency"], 16);
        assert_eq!(json["jitter_ms"], serde_json::json!([10, 40]));
        assert!(json.get("parallelization_factor").is_none());

        let skipped =
            serde_json::to_value(LambdaSection::skipped("not running as root".into())).unwrap();
        assert_eq!(
            skipped,
            serde_json::json!({"skipped": "not running as root", "setup": null, "rows": []})
        );
    }

    #[test]
    fn the_base_row_leaves_out_the_sweeps_and_the_jitter() {
        let section = LambdaSection {
            skipped: None,
            setup: None,
            rows: vec![
                LambdaRow {
                    max_concurrency: Some(8),
                    ..row(128, 100, 1.0)
                },
                LambdaRow {
                    parallelization_factor: Some(2),
                    ..row(128, 100, 2.0)
                },
                LambdaRow {
                    s3_latency_ms: 0,
                    jitter_ms: Some([10, 40]),
                    ..row(128, 100, 3.0)
                },
                row(128, 100, 4.0),
            ],
        };
        assert_eq!(section.base_row(128, 100, 20).unwrap().records_per_s, 4.0);
        assert!(section.base_row(256, 100, 20).is_none());
    }
}
