//! `cargo xtask reconcile`: compare the bucket with the table under the deployed function's
//! settings and, with `--repair`, fix every missing, stale and orphaned object; `--merge`
//! sums the reports of `--share` runs.
//!
//! Exit codes: 0 in step (or everything repaired), 3 drift found and nothing failed (without
//! `--repair`), 1 the operation failed (a repair that could not finish included), 2 bad usage,
//! 130 interrupted (the next run continues from the checkpoint).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::CommandFactory;
use deployer::reconcile::options::{DEFAULT_CONCURRENCY, DEFAULT_SEGMENTS, MAX_SEGMENTS};
use deployer::reconcile::report::{Example, EXIT_FAILED};
use deployer::reconcile::{
    default_state_dir, reconcile, ReconcileError, ReconcileOptions, ReconcileProgress,
    ReconcileReport, Share,
};
use deployer::stack;

use crate::args::{number_in, print_json, TargetArgs};
use crate::console::TerminalConsole;
use crate::reconcile_progress::ProgressView;

/// The exit code of a run stopped with Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// Fix every missing, stale and orphaned object through the function's own code (foreign
    /// keys are never touched); asks first on AWS
    #[arg(long)]
    repair: bool,
    /// Segments of the parallel scan (DynamoDB's TotalSegments)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEGMENTS, value_parser = number_in(1u32, MAX_SEGMENTS))]
    segments: u32,
    /// Do share I of N (another machine does each other share): the scan segments ≡ I mod N,
    /// and the keys whose users hash to I; N at most --segments
    #[arg(long, value_name = "I/N", value_parser = parse_share)]
    share: Option<Share>,
    /// Also write the report as JSON to FILE (it is always written into the state directory)
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Where the checkpoint lives [default: target/usersync/reconcile/<stack>/, a directory per
    /// share]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Start afresh, dropping an interrupted run's checkpoint
    #[arg(long)]
    restart: bool,
    /// Users compared at once, and writes in flight while repairing
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY, value_parser = number_in(1usize, 1024))]
    concurrency: usize,
    /// Merge the JSON reports of every share of one run into one report (reads no AWS)
    #[arg(
        long,
        value_name = "FILE",
        num_args = 1..,
        conflicts_with_all = ["repair", "share", "state_dir", "restart"]
    )]
    merge: Vec<PathBuf>,
}

fn parse_share(text: &str) -> Result<Share, String> {
    text.parse()
}

pub async fn run(args: ReconcileArgs, target_args: &TargetArgs) -> Result<ExitCode> {
    if !args.merge.is_empty() {
        return merge(&args.merge, args.report.as_deref(), target_args);
    }
    if let Some(share) = args.share {
        if share.count > args.segments {
            crate::Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "--share {share} needs at least {} scan segments: pass --segments {} or more",
                        share.count, share.count
                    ),
                )
                .exit();
        }
    }
    let settings = target_args.settings()?;
    let stack_name = settings.stack_name.clone();
    let target = target_args.connect().await?;
    if args.repair {
        let mut console = TerminalConsole::new(target_args.yes);
        stack::confirm_on_aws(
            &target,
            &mut console,
            &format!(
                "repair the bucket of stack {stack_name}: rewrite or delete every drifted object"
            ),
        )
        .await?;
        console.finish();
    }
    let options = ReconcileOptions {
        repair: args.repair,
        segments: args.segments,
        share: args.share,
        state_dir: args.state_dir.clone(),
        restart: args.restart,
        concurrency: args.concurrency,
        hook: None,
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&stack_name, args.share));

    let mut view = ProgressView::new();
    let mut show = |progress: &ReconcileProgress| view.show(progress);
    let reconciled = reconcile(&target, &stack_name, &options, &mut show);
    // Every page is committed as it arrives, so stopping here loses nothing.
    let report = tokio::select! {
        report = reconciled => Some(report),
        _ = tokio::signal::ctrl_c() => None,
    };
    view.finish();
    let Some(report) = report else {
        eprintln!(
            "interrupted: the same command continues from the checkpoint in {}",
            state_dir.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    };
    let report = report.map_err(|err| {
        // A request that failed mid-way leaves the checkpoint to continue from.
        let resumable = matches!(err, ReconcileError::Aws(_) | ReconcileError::Read(_));
        let mut context = format!("failed to reconcile stack {stack_name}");
        if resumable {
            context.push_str(&format!(
                " (what was read is kept in {}: the same command continues from it)",
                state_dir.display()
            ));
        }
        anyhow::Error::new(err).context(context)
    })?;
    finish(&report, args.report.as_deref(), target_args)
}

/// `--merge`: sums the shares' reports.
fn merge(files: &[PathBuf], output: Option<&Path>, target_args: &TargetArgs) -> Result<ExitCode> {
    let reports = files
        .iter()
        .map(|file| ReconcileReport::read(file))
        .collect::<Result<Vec<_>, _>>()
        .context("failed to merge the reconcile reports")?;
    let merged =
        ReconcileReport::merge(reports).context("failed to merge the reconcile reports")?;
    finish(&merged, output, target_args)
}

/// Prints the report (and writes it to `output`), and gives its exit code.
fn finish(
    report: &ReconcileReport,
    output: Option<&Path>,
    target_args: &TargetArgs,
) -> Result<ExitCode> {
    if let Some(path) = output {
        let json = serde_json::to_vec_pretty(report).context("failed to render the report")?;
        std::fs::write(path, json)
            .with_context(|| format!("failed to write the report {}", path.display()))?;
    }
    if target_args.json() {
        print_json(report)?;
    } else {
        print_examples(report);
        println!("{}", report.summary());
    }
    let code = report.exit_code();
    if code == EXIT_FAILED {
        eprintln!(
            "error: {} user(s) could not be repaired (listed above); run the command again to \
             retry them",
            report.failed
        );
    }
    Ok(ExitCode::from(code))
}

fn print_examples(report: &ReconcileReport) {
    let examples = &report.examples;
    let list = |class: &str, shown: &[Example], total: u64| {
        for example in shown {
            match &example.user {
                Some(user) => println!("{class:<12} {} (user {user:?})", example.key),
                None => println!("{class:<12} {}", example.key),
            }
        }
        more(class, shown.len(), total);
    };
    list("missing", &examples.missing, report.missing);
    list("stale", &examples.stale, report.stale);
    list("orphaned", &examples.orphaned, report.orphaned);
    list("foreign", &examples.foreign, report.foreign);
    for item in &examples.unmirrorable {
        println!("{:<12} {}: {}", "unmirrorable", item.item, item.reason);
    }
    more(
        "unmirrorable",
        examples.unmirrorable.len(),
        report.unmirrorable,
    );
    for failed in &examples.failed {
        println!("{:<12} {:?}: {}", "failed", failed.user, failed.error);
    }
    more("failed", examples.failed.len(), report.failed);
}

fn more(class: &str, shown: usize, total: u64) {
    let rest = total.saturating_sub(shown as u64);
    if rest > 0 {
        println!("{class:<12} … and {rest} more");
    }
}
