//! The function's fuzz targets (`fuzz/` at the workspace root), run with cargo-fuzz.
//!
//! | target | input | checks |
//! |--------|-------|--------|
//! | `key_rule` | names, segments, key prefixes | a name is one segment: no `/`, never `.` or `..`; `decode_name` reverses it; distinct names never share a key or a prefix |
//! | `parse_plan` | any bytes as the payload | refused with the documented message, or planned: every record planned or skipped, keys of the rule |
//! | `handler` | any bytes as the payload | end to end over an in-memory bucket: a batch leaves what its records one by one leave; failures name exactly the failed users |
//! | `batch_ops` | structured batches of stream records | the same, over records that collide, escape and fail |
//!
//! [`run_short_pass`] is the pass CI runs: the targets are built once (`--sanitizer none`, which
//! needs no nightly compiler: the function is safe Rust), then each runs for a few seconds from
//! the committed seeds (`fuzz/corpus/<target>`) plus what earlier passes found, kept in
//! `target/usersync/fuzz-corpus/<target>` so that the committed seeds stay as they are.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::tools::{describe, run, ToolError};
use deployer::project::cache_dir;
use deployer::project::{project_root, state_dir};

/// The cargo-fuzz release used.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target, cheapest first.
pub const TARGETS: [&str; 4] = ["key_rule", "parse_plan", "handler", "batch_ops"];

/// The targets whose input is a JSON payload, which get the dictionary of stream event tokens.
const JSON_TARGETS: [&str; 2] = ["parse_plan", "handler"];

/// How long one input may run before libFuzzer counts it as a hang, in seconds.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// Lines of a failed run's output kept in the error.
const TAIL_LINES: usize = 40;

/// A scratch corpus with more inputs than this is started afresh (libFuzzer only adds to it;
/// the committed seeds stay), so that loading it never eats much of a short pass.
const MAX_SCRATCH_INPUTS: usize = 20_000;

/// Failures of a fuzz pass.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("failed to provide cargo-fuzz")]
    Tool(#[from] ToolError),
    #[error("failed to prepare the fuzz corpus directory {path}")]
    Corpus {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to build the fuzz targets (`{command}`, {status}); a C++ compiler is needed for \
         libFuzzer; the end of the output:\n{tail}"
    )]
    Build {
        command: String,
        status: String,
        tail: String,
    },
    #[error(
        "fuzz target {target} failed ({status}){}; reproduce it with `{reproduce}`; the end of \
         the output:\n{tail}",
        artifact.as_ref().map(|path| format!(" on the input saved as {}", path.display())).unwrap_or_default()
    )]
    Finding {
        target: &'static str,
        status: String,
        /// The input that failed, as libFuzzer saved it (under `fuzz/artifacts/<target>/`).
        artifact: Option<PathBuf>,
        /// The command that runs the target on that input again.
        reproduce: String,
        tail: String,
    },
}

/// One target's run in a pass.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetRun {
    pub target: &'static str,
    /// Inputs executed, as libFuzzer reported them.
    pub runs: Option<u64>,
    pub seconds: u64,
}

/// What a pass did; every target ran without a failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FuzzReport {
    pub targets: Vec<TargetRun>,
}

/// The fuzz crate: `fuzz/` at the workspace root, its own workspace.
pub fn fuzz_dir() -> PathBuf {
    project_root().join("fuzz")
}

/// Finds cargo-fuzz: `CARGO_FUZZ` when set, else the pinned version in
/// `<cache>/tools/bin`, installed there with `cargo install --locked` on first use (about a
/// minute).
pub fn ensure_cargo_fuzz(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ToolError> {
    if let Some(path) = std::env::var_os("CARGO_FUZZ").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let root = cache_dir().join("tools");
    let binary = root.join("bin").join("cargo-fuzz");
    if binary.is_file() && installed_version(&binary).as_deref() == Some(CARGO_FUZZ_VERSION) {
        return Ok(binary);
    }
    progress(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        root.display()
    ));
    run(
        deployer::project::cargo_command()
            .args(["install", "--locked", "--quiet", "cargo-fuzz", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(&root),
        "is cargo on PATH?",
    )?;
    Ok(binary)
}

/// `cargo-fuzz --version` prints `cargo-fuzz 0.13.2`.
fn installed_version(binary: &Path) -> Option<String> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Runs every fuzz target for `seconds_per_target` seconds (after one build of them all),
/// telling `progress` about each; the first target that finds a failing input ends the pass
/// with [`FuzzError::Finding`], naming the saved input and how to reproduce it.
pub fn run_short_pass(
    seconds_per_target: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<FuzzReport, FuzzError> {
    let cargo_fuzz = ensure_cargo_fuzz(progress)?;
    let root = project_root();
    let fuzz = fuzz_dir();

    progress("building the fuzz targets (cargo fuzz build --sanitizer none)");
    let mut build = cargo_fuzz_command(&cargo_fuzz, &root);
    build.args(["build", "--sanitizer", "none"]);
    let (status, output) = capture(&mut build)?;
    if !status.success() {
        return Err(FuzzError::Build {
            command: describe(&build),
            status: status.to_string(),
            tail: tail(&output),
        });
    }

    let mut report = FuzzReport::default();
    for target in TARGETS {
        let scratch = state_dir().join("fuzz-corpus").join(target);
        prepare_scratch(&scratch).map_err(|source| FuzzError::Corpus {
            path: scratch.clone(),
            source,
        })?;
        progress(&format!("fuzzing {target} for {seconds_per_target} s"));
        let started = Instant::now();
        let mut command = cargo_fuzz_command(&cargo_fuzz, &root);
        // New inputs go to the first corpus directory: the scratch one.
        command
            .args(["run", "--sanitizer", "none", target])
            .arg(&scratch)
            .arg(fuzz.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds_per_target}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"));
        if JSON_TARGETS.contains(&target) {
            command.arg(format!(
                "-dict={}",
                fuzz.join("dict").join("stream_event.dict").display()
            ));
        }
        let (status, output) = capture(&mut command)?;
        let seconds = started.elapsed().as_secs();
        if !status.success() {
            let artifact = saved_input(&output);
            let reproduce = match &artifact {
                Some(path) => format!(
                    "cargo fuzz run --sanitizer none {target} {}",
                    path.display()
                ),
                None => describe(&command),
            };
            return Err(FuzzError::Finding {
                target,
                status: status.to_string(),
                artifact,
                reproduce,
                tail: tail(&output),
            });
        }
        let runs = executed_runs(&output);
        progress(&format!(
            "{target}: {} inputs in {seconds} s, no failure",
            runs.map_or_else(|| "?".to_owned(), |n| n.to_string())
        ));
        report.targets.push(TargetRun {
            target,
            runs,
            seconds,
        });
    }
    Ok(report)
}

/// Creates the scratch corpus directory, emptied first when it has grown past
/// [`MAX_SCRATCH_INPUTS`].
fn prepare_scratch(scratch: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(scratch) {
        if entries.count() > MAX_SCRATCH_INPUTS {
            std::fs::remove_dir_all(scratch)?;
        }
    }
    std::fs::create_dir_all(scratch)
}

fn cargo_fuzz_command(cargo_fuzz: &Path, root: &Path) -> Command {
    let mut command = Command::new(cargo_fuzz);
    deployer::project::clear_calling_crate_env(&mut command);
    command.current_dir(root).stdin(Stdio::null());
    command
}

/// Runs `command`, its standard output and error captured together.
fn capture(command: &mut Command) -> Result<(std::process::ExitStatus, String), FuzzError> {
    let output = command.output().map_err(|source| FuzzError::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    Ok((output.status, text))
}

fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// libFuzzer's `Test unit written to <path>`: the input that failed.
fn saved_input(output: &str) -> Option<PathBuf> {
    output.lines().find_map(|line| {
        let (_, path) = line.split_once("Test unit written to ")?;
        Some(PathBuf::from(path.trim()))
    })
}

/// libFuzzer's closing `Done <n> runs in <s> second(s)`.
fn executed_runs(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|line| {
        let rest = line.strip_prefix("Done ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_gives_the_runs_and_the_saved_input() {
        let finished = "#2\tINITED cov: 10\nDone 1310937 runs in 21 second(s)\n";
        assert_eq!(executed_runs(finished), Some(1_310_937));
        assert_eq!(saved_input(finished), None);

        let failed = "thread '<unnamed>' panicked at fuzz_targets/key_rule.rs:33:5:\n\
            artifact_prefix='/w/fuzz/artifacts/key_rule/'; Test unit written to \
            /w/fuzz/artifacts/key_rule/crash-9a29\nBase64: AAA=\n";
        assert_eq!(
            saved_input(failed),
            Some(PathBuf::from("/w/fuzz/artifacts/key_rule/crash-9a29"))
        );
        assert_eq!(executed_runs(failed), None);
    }

    #[test]
    fn every_target_has_a_source_and_seeds() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("[workspace]"),
            "fuzz/ is its own workspace"
        );
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
            let source = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
            assert!(source.is_file(), "{}", source.display());
            let seeds = std::fs::read_dir(fuzz_dir().join("corpus").join(target))
                .map(|entries| entries.count())
                .unwrap_or(0);
            assert!(seeds > 0, "{target} has no seed corpus");
        }
        assert!(fuzz_dir().join("dict").join("stream_event.dict").is_file());
    }
}
