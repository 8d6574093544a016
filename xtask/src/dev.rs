//! `cargo xtask dev`: the whole pipeline on this machine, with a live line per batch, until
//! Ctrl-C; `--demo` runs a scripted session instead and exits.
//!
//! On an endpoint or AWS, `--take-over` lets dev disable the deployed stack's event source
//! mapping while it runs; the mapping is enabled again however dev ends (Ctrl-C, while starting
//! too, and errors included), so Ctrl-C is listened for from the start.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use deployer::mirror_check;
use usersync_local::dev::{self, DevSession, DevTarget, TakeOver};
use usersync_local::mapping::batch::{BatchEvent, Verdict};
use usersync_local::mapping::poller::{PollerEvent, PollerObserver};
use usersync_local::runtime::function_host::{OutputSink, OutputStream};

use crate::args::{print_json, TargetArgs};
use crate::console::TerminalConsole;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Insert users, modify one, delete one, check the bucket follows, tear down and exit
    #[arg(long)]
    demo: bool,
    /// Seconds each demo step may take to show up in the bucket
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    demo_timeout: u64,
    /// Print every line the function logs (default: only warnings, errors and non-JSON lines)
    #[arg(long)]
    function_logs: bool,
    /// On an endpoint or AWS, where dev refuses to run beside the deployed stack's enabled event
    /// source mapping: disable the mapping while dev runs, and enable it again when dev stops
    #[arg(long)]
    take_over: bool,
}

/// Ctrl-C, listened for once for the whole command.
type Interrupt<'a> = Pin<&'a mut (dyn Future<Output = std::io::Result<()>> + Send)>;

pub async fn run(args: DevArgs, target_args: &TargetArgs) -> Result<()> {
    let settings = target_args.settings()?;
    // `dev` runs on a private embedded emulator unless told otherwise; `--profile` or
    // `--region` alone mean AWS, as for every other command.
    let where_to = if target_args.endpoint_url.is_some()
        || (!target_args.local && (target_args.profile.is_some() || target_args.region.is_some()))
    {
        let target = target_args.connect().await?;
        DevTarget::Connected(Box::new(target))
    } else {
        DevTarget::PrivateEmulator
    };
    if args.take_over && matches!(where_to, DevTarget::PrivateEmulator) {
        eprintln!("note: --take-over has nothing to take over on dev's private emulator, whose stack is its own");
    }

    // Listening replaces Ctrl-C's default (ending the process at once) from here on, so that
    // every way out passes by the restore below. (A yes/no question on AWS reads its answer
    // first: Ctrl-C there ends dev once Enter is pressed.)
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut take_over = TakeOver::new(args.take_over, target_args.profile.clone());
    let result = run_session(
        args,
        target_args,
        where_to,
        &settings,
        &mut take_over,
        ctrl_c,
    )
    .await;

    let mut console = TerminalConsole::new(true);
    let restored = take_over.restore(&mut console).await;
    console.finish();
    match (result, restored) {
        (result, Ok(())) => result,
        (Ok(()), Err(err)) => Err(err.into()),
        (Err(err), Err(restore)) => {
            // Both are said: the session's failure is the command's, the restore's names the
            // command that enables the mapping by hand.
            eprintln!("{}", crate::error_line(&restore.into()));
            Err(err)
        }
    }
}

/// Starts the session and runs it (or the demo) until Ctrl-C or its end.
async fn run_session(
    args: DevArgs,
    target_args: &TargetArgs,
    where_to: DevTarget,
    settings: &deployer::settings::StackSettings,
    take_over: &mut TakeOver,
    mut ctrl_c: Interrupt<'_>,
) -> Result<()> {
    let mut console = TerminalConsole::new(target_args.yes);
    let started = tokio::select! {
        // Ctrl-C first, so that it is listened for before the start does anything.
        biased;
        signal = &mut ctrl_c => {
            signal.context("failed to listen for Ctrl-C")?;
            bail!("interrupted while the dev session was starting");
        }
        started = DevSession::start(
            where_to,
            settings,
            take_over,
            &mut console,
            function_output(args.function_logs),
            batch_lines(),
        ) => started,
    };
    console.finish();
    let session = started.context("failed to start the dev session")?;

    if args.demo {
        return run_demo(
            session,
            Duration::from_secs(args.demo_timeout),
            target_args,
            ctrl_c,
        )
        .await;
    }

    eprintln!("watching the stream; write to the table, or press Ctrl-C to stop");
    eprintln!("(a rebuilt bootstrap, e.g. `cargo xtask build --for-local`, is picked up on the next batch)");
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("failed to listen for Ctrl-C")?;
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if session.pipeline_stopped() {
                    eprintln!("the poller stopped on its own");
                    break;
                }
            }
        }
    }
    let mut console = TerminalConsole::new(true);
    session
        .stop(false, &mut console)
        .await
        .context("failed to stop the dev session")?;
    eprintln!("stopped");
    Ok(())
}

async fn run_demo(
    session: DevSession,
    timeout: Duration,
    target_args: &TargetArgs,
    ctrl_c: Interrupt<'_>,
) -> Result<()> {
    let mut console = TerminalConsole::new(true);
    let result = tokio::select! {
        result = dev::demo(&session, timeout, &mut console) => result.map_err(anyhow::Error::from),
        signal = ctrl_c => Err(signal.map_or_else(
            |err| anyhow::Error::new(err).context("failed to listen for Ctrl-C"),
            |()| anyhow!("interrupted"),
        )),
    };
    // Whatever happened, leave nothing behind.
    let target = session.target.clone();
    let (table, bucket) = session.table_and_bucket()?;
    let layout = session.key_layout();
    let side = match &result {
        Ok(_) => {
            let items = mirror_check::scan_users(&target, &table).await?;
            let objects = mirror_check::user_objects(&target, &bucket, &layout).await?;
            Some(dev::side_by_side(&items, &objects, &layout))
        }
        Err(_) => None,
    };
    let teardown = session
        .stop(true, &mut console)
        .await
        .context("failed to tear the demo stack down");
    console.finish();
    let steps = result.context("the demo failed")?;
    teardown?;

    if target_args.json() {
        return print_json(&serde_json::json!({ "steps": steps, "in_step": true }));
    }
    if let Some(rows) = side {
        let width = rows
            .iter()
            .map(|(t, _)| t.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        println!("{:<width$}  bucket", "table");
        for (table, bucket) in rows {
            println!("{table:<width$}  {bucket}");
        }
    }
    for step in &steps {
        if !step.diff.in_step() {
            bail!("step {} ended out of step: {}", step.step, step.diff);
        }
        println!("in step after {} ({} ms)", step.step, step.millis);
    }
    println!("demo passed: the bucket followed the table through every step");
    Ok(())
}

/// The function's own output: everything, or only what needs attention.
fn function_output(all: bool) -> OutputSink {
    OutputSink::new(move |line| {
        if all || !is_routine(line.stream, line.text) {
            eprintln!("  {line}");
        }
    })
}

/// Whether a line of the function's output is routine: a JSON line at INFO or below, such as
/// the batch summary (whose figures each batch line shows anyway). Warnings, errors, text
/// lines and the host's own lines are not.
fn is_routine(stream: OutputStream, text: &str) -> bool {
    stream != OutputStream::Platform
        && (text.contains(r#""level":"INFO""#)
            || text.contains(r#""level":"DEBUG""#)
            || text.contains(r#""level":"TRACE""#))
}

/// A batch's lag for its line: seconds to a tenth, or `-` when no record carried its creation
/// time.
fn lag_text(lag_ms: Option<u64>) -> String {
    lag_ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.1} s", Duration::from_millis(ms).as_secs_f64()),
    )
}

/// One line per invocation and per discarded run of records.
fn batch_lines() -> PollerObserver {
    Arc::new(|event| {
        match event {
        PollerEvent::Batch(BatchEvent::Invoked(report)) => {
            let outcome = match &report.verdict {
                Verdict::Success => "ok".to_owned(),
                Verdict::PartialFailure {
                    first_failed,
                    reported,
                } => format!(
                    "{reported} user(s) failed; retrying from record {}",
                    first_failed + 1
                ),
                Verdict::Failure {
                    error_type,
                    message,
                } => format!("failed: {error_type}: {message}"),
            };
            let retry = if report.attempt > 1 {
                format!(" (attempt {})", report.attempt)
            } else {
                String::new()
            };
            eprintln!(
                "batch  {:>5} records  {:>6} ms  lag {:>7}  {outcome}{retry}",
                report.records,
                report.duration.as_millis(),
                lag_text(report.lag_ms)
            );
        }
        PollerEvent::Batch(BatchEvent::Discarded(report)) => eprintln!(
            "discarded {} record(s) {}..{} ({}){}",
            report.records,
            report.first_sequence,
            report.last_sequence,
            report.condition.as_str(),
            report.sent_to.map_or_else(
                || ": no on-failure destination".to_owned(),
                |to| format!(" -> {to}")
            )
        ),
        PollerEvent::Batch(BatchEvent::DestinationFailed { message, .. }) => {
            eprintln!("on-failure destination: {message}; trying again")
        }
        PollerEvent::MappingDisabled { uuid } => {
            eprintln!("mapping {uuid} is disabled: nothing is read until it is enabled")
        }
        PollerEvent::MappingEnabled { uuid } => {
            eprintln!("mapping {uuid} is enabled again: reading goes on")
        }
        PollerEvent::StateReadFailed { uuid, message } => eprintln!(
            "failed to read the state of mapping {uuid} ({message}); its last known state stands until the next read"
        ),
        PollerEvent::FiltersNotApplied { uuid } => eprintln!(
            "mapping {uuid} declares filter criteria; the local poller delivers every record"
        ),
        PollerEvent::ShardStarted { shard_id, position } => {
            eprintln!("reading shard {shard_id} from {position:?}")
        }
        PollerEvent::ShardFinished { shard_id } => eprintln!("shard {shard_id} is done"),
        PollerEvent::ReadFailed { message } => eprintln!("stream read failed: {message}; retrying"),
    }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_summary_is_routine_and_problems_are_not() {
        let counts = usersync_function::BatchSummary::default();
        let summary = usersync_function::metrics::BatchRecord {
            function_name: "f",
            request_id: None,
            at: std::time::SystemTime::now(),
            summary: &counts,
            elapsed_ms: 3,
        }
        .to_line();
        let summary = summary.as_str();
        assert!(is_routine(OutputStream::Stdout, summary));
        assert!(!is_routine(
            OutputStream::Stdout,
            r#"{"level":"WARN","fields":{"message":"failed to write the batch's metrics record"}}"#
        ));
        assert!(!is_routine(OutputStream::Stderr, "thread 'main' panicked"));
        assert!(!is_routine(OutputStream::Platform, summary));
    }

    #[test]
    fn the_lag_shows_in_seconds_or_as_unknown() {
        assert_eq!(lag_text(Some(1_234)), "1.2 s");
        assert_eq!(lag_text(Some(0)), "0.0 s");
        assert_eq!(lag_text(Some(61_500)), "61.5 s");
        assert_eq!(lag_text(None), "-");
    }
}
