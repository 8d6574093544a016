//! `cargo xtask`: usersync's command line. Each subcommand is a thin layer over the libraries (`deployer`, `usersync_local`, `usersync_bench`); the fuzz runner and the tool installers, which are CI tooling, live here.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage (unknown flag, invalid value);
//! `reconcile` also exits 3 when it finds drift it was not asked to repair, and 130 when
//! interrupted (see `reconcile.rs`).

mod args;
mod bench;
mod build;
mod console;
mod deploy;
mod dev;
#[cfg(test)]
mod error_chains;
mod fuzz;
mod reconcile;
mod reconcile_progress;
mod replay;
mod status;
mod synth;
mod teardown;
mod test;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "Build, deploy and test usersync"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: args::TargetArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build the function archive for Lambda (target/lambda/function/bootstrap.zip)
    Build(build::BuildArgs),
    /// Print the CloudFormation template
    Synth(synth::SynthArgs),
    /// Build, upload and create or update the stack through a change set
    Deploy(deploy::DeployArgs),
    /// Run the stack here: deploy it (on a private embedded emulator by default) and run the
    /// real function against its stream until Ctrl-C; --demo runs a scripted check and exits
    Dev(dev::DevArgs),
    /// Show the stack, its resources, the event source mapping, the failure queue and the bucket
    Status,
    /// Empty the data bucket, delete the stack and remove the uploaded archives
    Teardown(teardown::TeardownArgs),
    /// Repair the users of the batches in the stack's failure queue from the table's current
    /// state (their records, read back from the stream, name them); delete the messages
    /// replayed. --reconcile-expired: reconcile the whole table for messages whose records expired
    ReplayFailures(replay::ReplayArgs),
    /// Compare the bucket with the table under the deployed function's settings; --repair fixes
    /// every missing, stale and orphaned object. Exit code 3: drift found (without --repair)
    Reconcile(reconcile::ReconcileArgs),
    /// Measure the function's throughput against the raw S3 limit, its memory and cold start,
    /// the function sized as Lambda sizes it, end-to-end latency, deploy times and the
    /// reconcile; results under target/bench/
    Bench(bench::BenchArgs),
    /// Run every check CI runs: format, clippy, unit tests, template lint and the end-to-end suite
    Test(test::TestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A reconcile is one future whose requests gain nothing from more threads; handing them
    // between threads costs it a third more CPU (measured by `cargo xtask bench`, whose
    // reconcile process runs the same way): one thread, as the function's runtime.
    let mut builder = match cli.command {
        Command::Reconcile(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = &cli.target;
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Build(args) => build::run(args, target).map(success),
        Command::Synth(args) => runtime.block_on(synth::run(args, target)).map(success),
        Command::Deploy(args) => runtime.block_on(deploy::run(args, target)).map(success),
        Command::Dev(args) => runtime.block_on(dev::run(args, target)).map(success),
        Command::Status => runtime.block_on(status::run(target)).map(success),
        Command::Teardown(args) => runtime.block_on(teardown::run(args, target)).map(success),
        Command::ReplayFailures(args) => runtime.block_on(replay::run(args, target)).map(success),
        Command::Test(args) => test::run(args).map(success),
        Command::Bench(args) => runtime.block_on(bench::run(args, target)).map(success),
        Command::Reconcile(args) => runtime.block_on(reconcile::run(args, target)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a command that finished without a code of its own.
fn success((): ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// The line printed for a failed command: the whole chain once, ripgrep-style, "error: failed
/// to X: because Y: because Z". Each error's message leaves its source out, so that each cause
/// appears once (checked by `error_chains.rs`).
fn error_line(err: &anyhow::Error) -> String {
    format!("error: {err:#}")
}
