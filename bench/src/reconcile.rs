//! The whole-table reconcile at scale (`deployer::reconcile`): a stack deployed on the target,
//! its table loaded with users, and two reconciles of it, each in a process of its own
//! (`usersync-bench-reconcile`, built here) so that the peak memory read from `/proc` is the
//! reconcile's alone, not this process's: a backfill (the bucket empty, every object missing,
//! `repair`), then a check of the bucket that the backfill left in step.
//!
//! The backfill is held to the function's records/s on 10,000-record mixed batches, measured in
//! this section once the users are loaded, just before the backfill: the emulator slows down
//! as it holds more (and did more before), so the function measured at the start of the run
//! would be measured on a faster emulator than the backfill runs on. Both write one object per
//! user or record, so a backfill much slower than the function spends requests or time that
//! the function does not.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use super::process_stats;
use super::table_writes::{self, BATCH_WRITE_ITEMS};
use super::throughput::{self, FunctionRun, S3Target};
use super::workload::{Variant, Workload};
use super::{in_new_bucket, BenchError};
use deployer::artifact::{Artifact, BuildError};
use deployer::console::RecordingConsole;
use deployer::reconcile::options::{DEFAULT_CONCURRENCY, DEFAULT_SEGMENTS};
use deployer::reconcile::{DeployedMirror, ReconcileReport};
use deployer::settings::StackSettings;
use deployer::stack;
use deployer::target::Target;
use deployer::workflow;

/// Records per batch of the function measurement the backfill is compared with (mixed).
pub const REFERENCE_RECORDS: usize = 10_000;

/// `BatchWriteItem` requests in flight while the table is loaded.
const LOAD_CONCURRENCY: usize = 16;

/// The reconcile process, a binary of this package.
const BINARY: &str = "usersync-bench-reconcile";

/// The section's measurements.
#[derive(Clone, Debug, Serialize)]
pub struct ReconcileRun {
    pub users: usize,
    /// The reconcile's settings (its defaults, as `cargo xtask reconcile` runs it).
    pub concurrency: usize,
    pub segments: u32,
    /// Writing the users into the table (`BatchWriteItem`, several requests at once).
    pub loading_s: f64,
    /// Every object missing, repaired.
    pub backfill: ReconcilePass,
    /// The bucket the backfill left, compared and found in step.
    pub check_only: ReconcilePass,
    /// The function's throughput the backfill is held to.
    pub function: FunctionReference,
    /// `backfill.items_per_s / function.records_per_s`.
    pub backfill_ratio: f64,
}

/// One reconcile process.
#[derive(Clone, Debug, Serialize)]
pub struct ReconcilePass {
    pub repair: bool,
    /// Items scanned.
    pub items: u64,
    /// The reconcile call, from reading the stack to its report.
    pub seconds: f64,
    /// The part of it spent scanning the table and listing the bucket (the rest judges and
    /// repairs).
    pub reading_s: f64,
    pub items_per_s: f64,
    /// Peak resident memory of the reconcile process.
    pub peak_rss_bytes: u64,
    /// CPU time of the reconcile process.
    pub cpu_ms: f64,
    pub drifted_users: u64,
    pub repaired: u64,
}

/// The function measurement the backfill is compared with.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionReference {
    /// Records per batch, mixed (80% INSERT, 20% REMOVE).
    pub records: usize,
    pub records_per_s: f64,
    /// When it was measured: in this section, after loading the users, before the backfill.
    pub measured_in: String,
    pub function: FunctionRun,
}

/// Builds the reconcile process, deploys stack `stack_name`, loads `users` users, measures
/// the function for the comparison, runs the backfill and the check, and tears the stack down.
///
/// The reconcile and the loading go to `s3`'s endpoint, where the function and the raw loop
/// go too (on the embedded emulator, past its front, which changes only `BatchWriteItem`; no
/// mapping runs here, so the stream records that front exists for would only fill the
/// emulator).
pub async fn measure(
    target: &Target,
    s3: &S3Target,
    artifact: &Artifact,
    users: usize,
    repetitions: usize,
    stack_name: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<ReconcileRun, BenchError> {
    // Built before the stack exists: a failed build leaves nothing to tear down.
    let binary = tokio::task::block_in_place(build_binary)?;
    let settings = StackSettings {
        stack_name: stack_name.to_owned(),
        ..StackSettings::default()
    };
    let mut console = RecordingConsole::agreeing();
    workflow::deploy_built(target, &settings, artifact, &mut console).await?;
    let stack = Stack {
        target,
        direct: Target::for_endpoint(&s3.endpoint_url, &target.region()),
        s3,
        function_binary: &artifact.binary_path,
        repetitions,
        name: stack_name,
    };
    let result = run_on_stack(&stack, &binary, users, progress).await;
    let teardown = stack::teardown(target, stack_name, false, false, &mut console).await;
    let run = result?;
    teardown?;
    Ok(run)
}

/// Where the section runs.
struct Stack<'a> {
    /// The benchmark's target (on the emulator, its front).
    target: &'a Target,
    /// Where the function writes.
    s3: &'a S3Target,
    /// The same endpoint as `s3`, for the loading and the reconcile.
    direct: Target,
    function_binary: &'a Path,
    repetitions: usize,
    name: &'a str,
}

async fn run_on_stack(
    stack: &Stack<'_>,
    binary: &Path,
    users: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<ReconcileRun, BenchError> {
    let target = &stack.direct;
    let mirror = DeployedMirror::load(target, stack.name).await?;
    let started = Instant::now();
    load_users(target, &mirror.table, &mirror.config.key_attribute, users).await?;
    let loading_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "  loaded {users} users into table {} in {loading_s:.1} s",
        mirror.table
    ));
    let function = reference(stack).await?;
    progress(&format!(
        "  function, mixed, {} records: {:>8.0} records/s",
        function.records, function.records_per_s
    ));

    let state_dir =
        deployer::project::state_dir().join(format!("bench-reconcile-{}", std::process::id()));
    let pass = Pass {
        binary,
        target,
        stack_name: stack.name,
        state_dir: &state_dir,
    };
    let result = async {
        let (report, backfill) = pass.run(true).await?;
        if (report.missing, report.repaired, report.failed) != (users as u64, users as u64, 0) {
            return Err(BenchError::Unexpected(format!(
                "the backfill of {users} users found {} missing and repaired {} ({} failed)",
                report.missing, report.repaired, report.failed
            )));
        }
        progress(&format!(
            "  backfill:   {:>8.0} items/s, peak RSS {:.1} MiB",
            backfill.items_per_s,
            mib(backfill.peak_rss_bytes)
        ));
        let (report, check_only) = pass.run(false).await?;
        if report.drifted_users > 0 || report.table_items != users as u64 {
            return Err(BenchError::Unexpected(format!(
                "the check after the backfill found {} of {} users drifted",
                report.drifted_users, report.table_items
            )));
        }
        progress(&format!(
            "  check-only: {:>8.0} items/s, peak RSS {:.1} MiB",
            check_only.items_per_s,
            mib(check_only.peak_rss_bytes)
        ));
        Ok((backfill, check_only))
    }
    .await;
    // The checkpoint of a failed pass is of no use to anyone.
    let _ = std::fs::remove_dir_all(&state_dir);
    let (backfill, check_only) = result?;
    let backfill_ratio = if function.records_per_s > 0.0 {
        backfill.items_per_s / function.records_per_s
    } else {
        0.0
    };
    Ok(ReconcileRun {
        users,
        concurrency: DEFAULT_CONCURRENCY,
        segments: DEFAULT_SEGMENTS,
        loading_s,
        backfill,
        check_only,
        function,
        backfill_ratio,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Writes users `user-0000000` … with `BatchWriteItem`, [`LOAD_CONCURRENCY`] requests at once.
async fn load_users(
    target: &Target,
    table: &str,
    key_attribute: &str,
    users: usize,
) -> Result<(), BenchError> {
    let dynamodb = target.dynamodb();
    let chunks = (0..users)
        .step_by(BATCH_WRITE_ITEMS)
        .map(|start| start..(start + BATCH_WRITE_ITEMS).min(users));
    futures::stream::iter(chunks)
        .map(|range| write_users(&dynamodb, table, key_attribute, range))
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect()
        .await
}

async fn write_users(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    key_attribute: &str,
    users: Range<usize>,
) -> Result<(), BenchError> {
    let items = users.map(|i| user_item(key_attribute, &format!("user-{i:07}")));
    table_writes::batch_put(dynamodb, table, items).await
}

/// The function on mixed batches of [`REFERENCE_RECORDS`], as the throughput section measures
/// it, in a bucket of its own.
async fn reference(stack: &Stack<'_>) -> Result<FunctionReference, BenchError> {
    let records = REFERENCE_RECORDS;
    let workload = &Workload::new(Variant::Mixed, records, "ref");
    let (binary, repetitions) = (stack.function_binary, stack.repetitions);
    let run = in_new_bucket(stack.target, stack.s3, "ref", |bucket| async move {
        throughput::measure_function(binary, &bucket, workload, Variant::Mixed, None, repetitions)
            .await
    })
    .await?;
    Ok(FunctionReference {
        records,
        records_per_s: run.records_per_s,
        measured_in: "the reconcile section, after loading the users, before the backfill"
            .to_owned(),
        function: run,
    })
}

/// A user with the profile the throughput batches carry (about 150 bytes as JSON).
fn user_item(key_attribute: &str, name: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (key_attribute.to_owned(), AttributeValue::S(name.to_owned())),
        (
            "email".to_owned(),
            AttributeValue::S(format!("{name}@example.com")),
        ),
        ("plan".to_owned(), AttributeValue::S("pro".to_owned())),
        ("seats".to_owned(), AttributeValue::N("12".to_owned())),
        ("active".to_owned(), AttributeValue::Bool(true)),
        (
            "created".to_owned(),
            AttributeValue::S("2026-11-30T08:15:00Z".to_owned()),
        ),
    ])
}

/// What every pass runs with.
struct Pass<'a> {
    binary: &'a Path,
    target: &'a Target,
    stack_name: &'a str,
    state_dir: &'a Path,
}

impl Pass<'_> {
    /// Runs one reconcile process and reads its counters once it has reported.
    async fn run(&self, repair: bool) -> Result<(ReconcileReport, ReconcilePass), BenchError> {
        let endpoint_url = self
            .target
            .endpoint_url()
            .expect("the benchmark's target is an endpoint");
        let mut command = tokio::process::Command::new(self.binary);
        command
            .arg("--endpoint-url")
            .arg(&endpoint_url)
            .arg("--region")
            .arg(self.target.region())
            .arg("--stack")
            .arg(self.stack_name)
            .arg("--state-dir")
            .arg(self.state_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if repair {
            command.arg("--repair");
        }
        let spawn_error = |source| BenchError::Spawn {
            program: self.binary.to_owned(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().ok_or(BenchError::ReconcileGone)?;
        let stdout = child.stdout.take().ok_or(BenchError::ReconcileGone)?;
        let line = tokio::io::BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .map_err(spawn_error)?;
        let Some(line) = line else {
            let status = child.wait().await.map_err(spawn_error)?;
            return Err(BenchError::Reconcile(format!(
                "it ended ({status}) without a report; its errors are above"
            )));
        };
        // Read before its standard input closes, which is what the process waits for to exit.
        let reading = process_stats::read(pid).ok_or(BenchError::ReconcileGone)?;
        drop(child.stdin.take());
        let status = child.wait().await.map_err(spawn_error)?;
        if !status.success() {
            return Err(BenchError::Reconcile(format!(
                "it exited with {status} after reporting"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Output {
            seconds: f64,
            reading_seconds: f64,
            report: ReconcileReport,
        }
        let output: Output = serde_json::from_str(&line).map_err(|err| {
            BenchError::Reconcile(format!("its output is not a report ({err}): {line}"))
        })?;
        let report = output.report;
        let pass = ReconcilePass {
            repair,
            items: report.table_items,
            seconds: output.seconds,
            reading_s: output.reading_seconds,
            items_per_s: report.table_items as f64 / output.seconds.max(f64::EPSILON),
            peak_rss_bytes: reading.peak_rss_bytes,
            cpu_ms: reading.cpu.as_secs_f64() * 1000.0,
            drifted_users: report.drifted_users,
            repaired: report.repaired,
        };
        Ok((report, pass))
    }
}

/// Builds the reconcile process with cargo, in the profile this code was built with (a
/// release `cargo xtask bench` measures a release reconcile), and returns its path.
fn build_binary() -> Result<PathBuf, BenchError> {
    let mut command = deployer::project::cargo_command();
    command
        .current_dir(deployer::project::project_root())
        .args(["build", "--package", "usersync-bench", "--bin", BINARY])
        // JSON on standard output tells where the binary went; diagnostics still reach people
        // on standard error.
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let shown = format!("{command:?}");
    let spawn_error = |source| {
        BenchError::Build(BuildError::Spawn {
            command: shown.clone(),
            source,
        })
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        // Read to the end, so that cargo never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] == "compiler-artifact" && message["target"]["name"] == BINARY {
                executable = message["executable"].as_str().map(PathBuf::from);
            }
        }
    }
    let status = child.wait().map_err(spawn_error)?;
    if !status.success() {
        return Err(BenchError::Build(BuildError::CommandFailed {
            command: shown,
            status: status.to_string(),
            fix: "fix the errors cargo printed above".to_owned(),
        }));
    }
    executable.ok_or_else(|| BenchError::Unexpected(format!("`{shown}` built no {BINARY}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_carry_the_throughput_batches_profile() {
        let item = user_item("name", "user-0000001");
        let image: HashMap<String, serde_dynamo::AttributeValue> = item
            .into_iter()
            .map(|(k, v)| (k, serde_dynamo::AttributeValue::from(v)))
            .collect();
        let body = usersync_function::image::object_body(&image);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"active":true,"created":"2026-11-30T08:15:00Z","email":"user-0000001@example.com","name":"user-0000001","plan":"pro","seats":12}"#
        );
    }
}
