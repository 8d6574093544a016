//! The command lines that build and probe: `cargo lambda build`, `cargo build` (reading
//! where the binary went from its JSON messages) and the `rustc` / `cargo lambda` probes of
//! [`Toolchain::detect`](super::Toolchain::detect).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use super::plan::{Builder, Plan};
use super::{Architecture, BuildError, BINARY, PACKAGE, PROFILE};

/// What both builders build: the function's binary, with the artifact's profile.
const BUILD_TARGET_ARGS: [&str; 6] = ["--profile", PROFILE, "--package", PACKAGE, "--bin", BINARY];

/// Runs the planned build and returns the path of the binary it produced.
pub(super) fn run_build(plan: &Plan) -> Result<PathBuf, BuildError> {
    match plan.builder {
        Builder::CargoLambda => run_cargo_lambda(plan.architecture),
        Builder::Cargo { .. } => run_cargo(plan.cargo_target.as_deref()),
    }
}

fn run_cargo_lambda(architecture: Architecture) -> Result<PathBuf, BuildError> {
    let arch_flag = match architecture {
        Architecture::Arm64 => "--arm64",
        Architecture::X86_64 => "--x86-64",
    };
    let mut command = cargo();
    command
        .args(["lambda", "build"])
        .args(BUILD_TARGET_ARGS)
        .arg(arch_flag)
        // Both streams to our standard error: standard output stays clean for callers that
        // print machine-readable results there.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    let shown = describe(&command);
    let status = command.status().map_err(|source| BuildError::Spawn {
        command: shown.clone(),
        source,
    })?;
    check_status(&shown, status, "fix the errors cargo-lambda printed above")?;
    let expected = crate::project::target_dir()
        .join("lambda")
        .join(BINARY)
        .join(BINARY);
    if !expected.is_file() {
        return Err(BuildError::MissingBinary {
            command: shown,
            expected,
        });
    }
    Ok(expected)
}

fn run_cargo(target: Option<&str>) -> Result<PathBuf, BuildError> {
    let mut command = cargo();
    command
        .arg("build")
        .args(BUILD_TARGET_ARGS)
        // JSON on standard output tells where the binary went, whatever the cargo
        // configuration says; diagnostics are still rendered for people on standard error.
        .arg("--message-format=json-render-diagnostics");
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let shown = describe(&command);
    let spawn_error = |source| BuildError::Spawn {
        command: shown.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let executable = match child.stdout.take() {
        Some(stdout) => find_executable(BufReader::new(stdout)),
        None => None,
    };
    let status = child.wait().map_err(spawn_error)?;
    check_status(&shown, status, &cargo_fix(target))?;
    let expected = executable.unwrap_or_else(|| default_binary_path(target));
    if !expected.is_file() {
        return Err(BuildError::MissingBinary {
            command: shown,
            expected,
        });
    }
    Ok(expected)
}

fn cargo_fix(target: Option<&str>) -> String {
    match target {
        Some(target) => format!(
            "fix the errors cargo printed above; building for {target} also needs a linker and C compiler for it (cargo-lambda, `cargo install --locked cargo-lambda`, brings them with zig)"
        ),
        None => "fix the errors cargo printed above".to_owned(),
    }
}

/// Reads cargo's JSON messages to the end (so cargo never blocks on a full pipe) and returns
/// the executable of the `bootstrap` target.
fn find_executable(messages: impl BufRead) -> Option<PathBuf> {
    let mut found = None;
    for line in messages.lines().map_while(Result::ok) {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == BINARY {
            if let Some(path) = message["executable"].as_str() {
                found = Some(PathBuf::from(path));
            }
        }
    }
    found
}

fn default_binary_path(target: Option<&str>) -> PathBuf {
    let dir = crate::project::target_dir();
    match target {
        Some(target) => dir.join(target).join(PROFILE).join(BINARY),
        None => dir.join(PROFILE).join(BINARY),
    }
}

fn check_status(command: &str, status: ExitStatus, fix: &str) -> Result<(), BuildError> {
    if status.success() {
        return Ok(());
    }
    Err(BuildError::CommandFailed {
        command: command.to_owned(),
        status: status.to_string(),
        fix: fix.to_owned(),
    })
}

/// `cargo`, or the one in `CARGO` (set when running under `cargo xtask`), in the workspace.
fn cargo() -> Command {
    let mut command = crate::project::cargo_command();
    command
        .current_dir(crate::project::project_root())
        .stdin(Stdio::null());
    command
}

/// `rustc`, or the one in `RUSTC`, in the workspace (so that its toolchain file applies).
fn rustc() -> Command {
    workspace_command("RUSTC", "rustc")
}

fn workspace_command(variable: &str, default: &str) -> Command {
    let mut command = Command::new(crate::project::toolchain_program(variable, default));
    command
        .current_dir(crate::project::project_root())
        .stdin(Stdio::null());
    command
}

pub(super) fn cargo_lambda_installed() -> bool {
    cargo()
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

pub(super) fn host_triple() -> Result<String, BuildError> {
    let mut command = rustc();
    command.arg("-vV");
    let output = captured(&mut command)?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .ok_or_else(|| BuildError::CommandFailed {
            command: describe(&command),
            status: "no `host:` line in its output".to_owned(),
            fix: "check that RUSTC (or `rustc` on PATH) is a Rust compiler".to_owned(),
        })
}

/// Whether the standard library for `target` is installed. `rustc --print target-libdir`
/// prints the directory even for a missing target, so the directory must also hold `libstd`;
/// unlike `rustup target list`, this also works for toolchains not managed by rustup.
pub(super) fn target_installed(target: &str) -> bool {
    let mut command = rustc();
    command.args(["--print", "target-libdir", "--target", target]);
    let Ok(dir) = captured(&mut command) else {
        return false;
    };
    fs::read_dir(dir.trim()).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| entry.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

/// Runs `command` and returns its standard output; a failure is an error with its stderr.
fn captured(command: &mut Command) -> Result<String, BuildError> {
    let shown = describe(command);
    let output = command.output().map_err(|source| BuildError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(BuildError::CommandFailed {
            command: shown,
            status: output.status.to_string(),
            fix: format!(
                "it printed: {}; check that the Rust toolchain works (set RUSTC to use another rustc)",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_json_messages_give_the_executable() {
        let messages = concat!(
            "not json\n",
            r#"{"reason":"compiler-artifact","target":{"name":"usersync_function"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"bootstrap"},"executable":"/t/release/bootstrap"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            find_executable(messages.as_bytes()),
            Some(PathBuf::from("/t/release/bootstrap"))
        );
        assert_eq!(find_executable(&b"{}\n"[..]), None);
    }
}
