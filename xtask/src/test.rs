//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use deployer::local::emulator::ensure_binary;
use deployer::project::{project_root, toolchain_program};
use deployer::tools::ensure_cfn_lint;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (a test name filter, for example), after `--`.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

pub fn run(args: TestArgs) -> Result<()> {
    let root = project_root();
    let started = Instant::now();

    step(&root, "format", &["fmt", "--all", "--", "--check"], &[])?;
    step(
        &root,
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;

    let emulator = ensure_binary(&mut |line| eprintln!("[fakecloud] {line}"))
        .context("failed to provide the embedded emulator (fakecloud)")?;
    let cfn_lint = ensure_cfn_lint(&mut |line| eprintln!("[cfn-lint] {line}"))
        .context("failed to provide cfn-lint")?;
    let env = [
        ("FAKECLOUD_BIN", emulator.path.as_os_str()),
        ("CFN_LINT", cfn_lint.as_os_str()),
    ];

    let mut test_args = vec!["test", "--workspace"];
    if !args.cargo_test_args.is_empty() {
        test_args.push("--");
        test_args.extend(args.cargo_test_args.iter().map(String::as_str));
    }
    step(&root, "tests", &test_args, &env)?;

    eprintln!(
        "[xtask test] all checks passed in {}s",
        started.elapsed().as_secs()
    );
    Ok(())
}

fn step(root: &Path, name: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    eprintln!("[xtask test] {name}: cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new(toolchain_program("CARGO", "cargo"))
        .args(args)
        .current_dir(root)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("failed to run cargo for the {name} step"))?;
    if !status.success() {
        bail!("the {name} step failed ({status}); its output is above");
    }
    eprintln!(
        "[xtask test] {name}: ok in {}s",
        started.elapsed().as_secs()
    );
    Ok(())
}
