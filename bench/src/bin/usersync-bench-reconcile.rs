//! `usersync-bench-reconcile`: one whole-table reconcile of a deployed stack in a process of
//! its own, for `cargo xtask bench`, so that the peak memory the benchmark reads from `/proc`
//! is the reconcile's alone.
//!
//! `usersync-bench-reconcile --endpoint-url URL --region REGION --stack NAME --state-dir DIR
//! [--repair] [--concurrency N]` runs `deployer::reconcile::reconcile`, prints one JSON line
//! (`{"seconds": …, "reading_seconds": …, "report": {…}}`: the whole call, the part of it
//! spent reading the table and the bucket, and the report) and then waits for its standard input to close: the
//! benchmark reads `/proc/<pid>` of a process that has done all its work and not yet exited,
//! whose counters the kernel would drop at exit.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use deployer::reconcile::{reconcile, Phase, ReconcileOptions, ReconcileProgress};
use deployer::target::Target;

struct Args {
    endpoint_url: String,
    region: String,
    stack: String,
    state_dir: PathBuf,
    repair: bool,
    concurrency: Option<usize>,
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut endpoint_url, mut region, mut stack, mut state_dir) = (None, None, None, None);
    let mut repair = false;
    let mut concurrency = None;
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--endpoint-url" => endpoint_url = Some(value()?),
            "--region" => region = Some(value()?),
            "--stack" => stack = Some(value()?),
            "--state-dir" => state_dir = Some(value()?),
            "--concurrency" => {
                let text = value()?;
                concurrency = Some(
                    text.parse()
                        .map_err(|_| format!("--concurrency {text} is not a number"))?,
                );
            }
            "--repair" => repair = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let required = |value: Option<_>, name: &str| value.ok_or_else(|| format!("{name} is needed"));
    Ok(Args {
        endpoint_url: required(endpoint_url, "--endpoint-url")?,
        region: required(region, "--region")?,
        stack: required(stack, "--stack")?,
        state_dir: PathBuf::from(required(state_dir, "--state-dir")?),
        repair,
        concurrency,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("usersync-bench-reconcile: {problem}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("usersync-bench-reconcile: failed to start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = Target::for_endpoint(&args.endpoint_url, &args.region);
    let mut options = ReconcileOptions {
        repair: args.repair,
        state_dir: Some(args.state_dir),
        restart: true,
        ..ReconcileOptions::default()
    };
    if let Some(concurrency) = args.concurrency {
        options.concurrency = concurrency;
    }
    let started = Instant::now();
    // When the table and the bucket were read and the comparison began.
    let mut reading_seconds = None;
    let mut progress = |progress: &ReconcileProgress| {
        if progress.phase != Phase::Reading && reading_seconds.is_none() {
            reading_seconds = Some(started.elapsed().as_secs_f64());
        }
    };
    let result = runtime.block_on(reconcile(&target, &args.stack, &options, &mut progress));
    let seconds = started.elapsed().as_secs_f64();
    drop(runtime);
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!(
                "usersync-bench-reconcile: {}",
                deployer::errors::chain(&err)
            );
            return ExitCode::FAILURE;
        }
    };
    let line = serde_json::json!({
        "seconds": seconds,
        "reading_seconds": reading_seconds.unwrap_or(seconds),
        "report": report,
    });
    println!("{line}");
    // Until the benchmark has read this process's counters; any end of input will do.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    ExitCode::SUCCESS
}
