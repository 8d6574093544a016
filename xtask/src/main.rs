//! `cargo xtask`: usersync's command line. Each subcommand is a thin layer over the libraries (`deployer`, `usersync_local`, `usersync_bench`); the fuzz runner and the tool installers, which are CI tooling, live here.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage (unknown flag, invalid value).

mod args;
mod bench;
mod build;
mod console;
mod deploy;
mod dev;
#[cfg(test)]
mod error_chains;
mod fuzz;
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
    /// Replay the batches in the stack's failure queue: read their records back from the
    /// stream, apply them as the function would, delete the messages replayed
    ReplayFailures(replay::ReplayArgs),
    /// Measure the function's throughput against the raw S3 limit, its memory and cold start,
    /// end-to-end latency and deploy times; results under target/bench/
    Bench(bench::BenchArgs),
    /// Run every check CI runs: format, clippy, unit tests, template lint and the end-to-end suite
    Test(test::TestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = &cli.target;
    let result = match cli.command {
        Command::Build(args) => build::run(args, target),
        Command::Synth(args) => synth::run(args, target),
        Command::Deploy(args) => runtime.block_on(deploy::run(args, target)),
        Command::Dev(args) => runtime.block_on(dev::run(args, target)),
        Command::Status => runtime.block_on(status::run(target)),
        Command::Teardown(args) => runtime.block_on(teardown::run(args, target)),
        Command::ReplayFailures(args) => runtime.block_on(replay::run(args, target)),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => runtime.block_on(bench::run(args, target)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The line printed for a failed command: the whole chain once, ripgrep-style, "error: failed
/// to X: because Y: because Z". Each error's message leaves its source out, so that each cause
/// appears once (checked by `error_chains.rs`).
fn error_line(err: &anyhow::Error) -> String {
    format!("error: {err:#}")
}
