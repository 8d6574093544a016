//! `cargo xtask test`: everything CI checks, in the order that fails fastest: format, clippy,
//! the workspace's tests (unit, template with cfn-lint, integration against the emulator),
//! the end-to-end suite on the available backend, the AWS archive built with cargo-lambda and
//! run once under the local host, then a short fuzz pass.

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use crate::fuzz;
use crate::tools::{ensure_cargo_lambda, ensure_cfn_lint, ensure_checkov};
use anyhow::{bail, Context, Result};
use deployer::project::{cargo_command, project_root, state_dir};
use deployer::settings::Architecture;
use serde::Deserialize;
use usersync_local::emulator::{ensure_binary, EmulatorBinary};
use usersync_local::lambda_check;

/// How long the short fuzz pass runs each target.
const FUZZ_SECONDS_PER_TARGET: u64 = 20;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Also run the long soak: 10,000 users inserted and 3,000 deleted with 30% of S3 requests
    /// failing (a few minutes)
    #[arg(long)]
    soak: bool,
    /// Extra arguments for the workspace's `cargo test` (a test name filter, for example),
    /// after `--`; the end-to-end suite then runs only the scenarios matching it
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

/// What the end-to-end suite writes about its run (`itests/tests/e2e.rs`).
#[derive(Deserialize)]
struct EndToEndReport {
    backend: String,
    reason: String,
    scenarios_run: u64,
    passed: u64,
    failed: u64,
}

pub fn run(args: TestArgs) -> Result<()> {
    let root = project_root();
    let started = Instant::now();
    let mut done: Vec<(String, u64)> = Vec::new();

    step(
        &root,
        "format",
        &["fmt", "--all", "--", "--check"],
        &[],
        &mut done,
    )?;
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
        &mut done,
    )?;

    let emulator = ensure_binary(&mut |line| eprintln!("[fakecloud] {line}"))
        .context("failed to provide the embedded emulator (fakecloud)")?;
    let cfn_lint = ensure_cfn_lint(&mut |line| eprintln!("[cfn-lint] {line}"))
        .context("failed to provide cfn-lint")?;
    let checkov = ensure_checkov(&mut |line| eprintln!("[checkov] {line}"))
        .context("failed to provide checkov")?;
    let env: Vec<(&str, OsString)> = vec![
        ("FAKECLOUD_BIN", emulator.path.clone().into_os_string()),
        ("CFN_LINT", cfn_lint.into_os_string()),
        ("CHECKOV", checkov.into_os_string()),
    ];

    let filter: Vec<&str> = args.cargo_test_args.iter().map(String::as_str).collect();
    let with_filter = |base: &[&'static str]| {
        let mut all: Vec<&str> = base.to_vec();
        if !filter.is_empty() {
            all.push("--");
            all.extend(filter.iter().copied());
        }
        all
    };
    step(
        &root,
        "tests",
        &with_filter(&["test", "--workspace"]),
        &env,
        &mut done,
    )?;

    let report_path = state_dir().join("e2e-report.json");
    let _ = std::fs::remove_file(&report_path);
    let e2e = step(
        &root,
        "end-to-end",
        &with_filter(&["test", "--package", "itests", "--test", "e2e"]),
        &env,
        &mut done,
    );
    match read_report(&report_path) {
        Some(report) => eprintln!(
            "[xtask test] end-to-end: {} scenario(s) on the {} backend ({}): {} passed, {} failed",
            report.scenarios_run, report.backend, report.reason, report.passed, report.failed
        ),
        None if e2e.is_ok() => bail!(
            "the end-to-end suite wrote no report at {}; it did not run",
            report_path.display()
        ),
        None => {}
    }
    e2e?;

    lambda_step(&emulator, &mut done)?;

    eprintln!(
        "[xtask test] fuzz: a short pass over every target ({FUZZ_SECONDS_PER_TARGET} s each)"
    );
    let started_fuzz = Instant::now();
    let fuzzed = fuzz::run_short_pass(FUZZ_SECONDS_PER_TARGET, &mut |line| {
        eprintln!("[fuzz] {line}")
    })
    .context("the fuzz step failed")?;
    let inputs: u64 = fuzzed.targets.iter().filter_map(|t| t.runs).sum();
    let seconds = started_fuzz.elapsed().as_secs();
    eprintln!(
        "[xtask test] fuzz: ok in {seconds}s ({} targets, {inputs} inputs, no failure)",
        fuzzed.targets.len()
    );
    done.push(("fuzz".to_owned(), seconds));

    if args.soak {
        step(
            &root,
            "soak",
            &[
                "test",
                "--package",
                "itests",
                "--features",
                "soak",
                "--test",
                "faults",
                "soak",
            ],
            &env,
            &mut done,
        )?;
    }

    let summary: Vec<String> = done
        .iter()
        .map(|(name, seconds)| format!("{name} {seconds}s"))
        .collect();
    eprintln!(
        "[xtask test] all checks passed in {}s ({})",
        started.elapsed().as_secs(),
        summary.join(", ")
    );
    Ok(())
}

/// The archive `cargo xtask build` makes for AWS on this machine's architecture, built with the
/// pinned cargo-lambda (installed into the cache on first use), its glibc checked, and run
/// once under the local function host ([`lambda_check::check`]). The other architecture is
/// not built, and a line says why.
fn lambda_step(emulator: &EmulatorBinary, done: &mut Vec<(String, u64)>) -> Result<()> {
    let host = if cfg!(target_arch = "aarch64") {
        Architecture::Arm64
    } else {
        Architecture::X86_64
    };
    eprintln!("[xtask test] lambda: the AWS archive for {host}, built with cargo-lambda and run once under the local host");
    let started = Instant::now();
    let cargo_lambda = ensure_cargo_lambda(&mut |line| eprintln!("[cargo-lambda] {line}"))
        .context("failed to provide cargo-lambda")?;
    for other in [Architecture::Arm64, Architecture::X86_64] {
        if other != host {
            eprintln!(
                "[xtask test] lambda: {}",
                lambda_check::skipped_architecture(other)
            );
        }
    }
    let report = lambda_check::check(&cargo_lambda, emulator, host, &mut |line| {
        eprintln!("[lambda] {line}")
    })
    .context("the lambda step failed")?;
    eprintln!("[xtask test] lambda: {}", report.summary());
    let seconds = started.elapsed().as_secs();
    eprintln!("[xtask test] lambda: ok in {seconds}s");
    done.push(("lambda".to_owned(), seconds));
    Ok(())
}

fn read_report(path: &Path) -> Option<EndToEndReport> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn step(
    root: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, OsString)],
    done: &mut Vec<(String, u64)>,
) -> Result<()> {
    eprintln!("[xtask test] {name}: cargo {}", args.join(" "));
    let started = Instant::now();
    let status = cargo_command()
        .args(args)
        .current_dir(root)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .status()
        .with_context(|| format!("failed to run cargo for the {name} step"))?;
    if !status.success() {
        bail!("the {name} step failed ({status}); its output is above");
    }
    let seconds = started.elapsed().as_secs();
    eprintln!("[xtask test] {name}: ok in {seconds}s");
    done.push((name.to_owned(), seconds));
    Ok(())
}
