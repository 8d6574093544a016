//! The command lines that build and probe: `cargo lambda build`, `cargo build` (reading
//! where the binary went from its JSON messages) and the `rustc` / `cargo lambda` probes of
//! [`Toolchain::detect`] and [`CargoLambda::detect`], whose types `plan` defines.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::plan::{
    musl_cross_compiler, musl_target, triple_architecture, Builder, CargoLambda, Plan, Toolchain,
    CARGO_LAMBDA_VARIABLE,
};
use super::{Architecture, BuildError, BINARY, PACKAGE, PROFILE};

/// What both builders build: the function's binary, with the artifact's profile.
const BUILD_TARGET_ARGS: [&str; 6] = ["--profile", PROFILE, "--package", PACKAGE, "--bin", BINARY];

/// Runs the planned build and returns the path of the binary it produced.
pub(super) fn run_build(
    plan: &Plan,
    cargo_lambda: Option<&CargoLambda>,
) -> Result<PathBuf, BuildError> {
    match plan.builder {
        Builder::CargoLambda => run_cargo_lambda(
            plan.architecture,
            cargo_lambda.and_then(|found| found.program.as_deref()),
        ),
        Builder::Cargo { .. } => run_cargo(plan.cargo_target.as_deref()),
    }
}

/// Builds with cargo-lambda, which passes `--target <arch>-unknown-linux-gnu` to cargo (with
/// zig as C compiler and linker, against an old glibc). Its output therefore goes to
/// `<target dir>/<arch>-unknown-linux-gnu/lambda-artifact/`, and cargo cannot share those
/// compiled dependencies with host builds (`<target dir>/lambda-artifact/`, no `--target`):
/// the two differ in target directory, C compiler and linker. Repeated cargo-lambda builds in
/// the same target directory and profile do share them.
fn run_cargo_lambda(
    architecture: Architecture,
    program: Option<&Path>,
) -> Result<PathBuf, BuildError> {
    let arch_flag = match architecture {
        Architecture::Arm64 => "--arm64",
        Architecture::X86_64 => "--x86-64",
    };
    let mut command = cargo_lambda(program);
    command
        .arg("build")
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
    match target.map(|target| (target, triple_architecture(target))) {
        Some((target, Some(architecture))) => format!(
            "fix the errors cargo printed above; building for {target} also needs {} (or build with cargo-lambda, which brings both with zig: `pip install cargo-lambda` and set CARGO_LAMBDA to its bin/cargo-lambda)",
            musl_cross_compiler(architecture)
        ),
        Some((target, None)) => format!(
            "fix the errors cargo printed above; building for {target} also needs a C compiler and linker for it"
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

/// `cargo lambda`, or `<program> lambda` for a `cargo-lambda` executable named by path, in
/// the workspace. The program's directory goes first on the child's `PATH`: a virtual
/// environment's `bin/` from `pip install cargo-lambda` also holds the `python3` whose
/// `-m ziglang` is the zig cargo-lambda looks for.
fn cargo_lambda(program: Option<&Path>) -> Command {
    let Some(program) = program else {
        let mut command = cargo();
        command.arg("lambda");
        return command;
    };
    let mut command = Command::new(program);
    crate::project::clear_calling_crate_env(&mut command);
    if let Some(dir) = program.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        command.env("PATH", path_with_first(dir));
    }
    command
        .arg("lambda")
        .current_dir(crate::project::project_root())
        .stdin(Stdio::null());
    command
}

/// `PATH` with `dir` in front.
fn path_with_first(dir: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest));
    std::env::join_paths(dirs).unwrap_or(rest)
}

impl Toolchain {
    /// Probes this machine: cargo-lambda ([`CargoLambda::detect`]: `CARGO_LAMBDA`, else
    /// `cargo lambda`), the host triple, and which musl targets are installed.
    pub fn detect() -> Result<Self, BuildError> {
        Self::detect_with(CargoLambda::detect()?)
    }

    /// Probes this machine as [`Toolchain::detect`] does, but with the given cargo-lambda (or
    /// none) instead of looking for one.
    pub fn detect_with(cargo_lambda: Option<CargoLambda>) -> Result<Self, BuildError> {
        let host = host_triple()?;
        let musl_targets = [Architecture::Arm64, Architecture::X86_64]
            .into_iter()
            .map(musl_target)
            .filter(|target| target_installed(target))
            .collect();
        Ok(Self {
            cargo_lambda,
            host,
            musl_targets,
        })
    }
}

impl CargoLambda {
    /// The cargo-lambda to build with: the one [`CARGO_LAMBDA_VARIABLE`] names, which must
    /// run, else `cargo lambda` when it runs, else none.
    pub fn detect() -> Result<Option<Self>, BuildError> {
        match std::env::var_os(CARGO_LAMBDA_VARIABLE).filter(|v| !v.is_empty()) {
            Some(program) => Self::at(Path::new(&program)).map(Some),
            None => Ok(probe_cargo_lambda(None).ok().map(|version| Self {
                program: None,
                version,
            })),
        }
    }

    /// The cargo-lambda executable at `program`, checked to run.
    pub fn at(program: &Path) -> Result<Self, BuildError> {
        let version = probe_cargo_lambda(Some(program)).map_err(|reason| {
            BuildError::CargoLambdaUnusable {
                program: program.to_owned(),
                reason,
            }
        })?;
        Ok(Self {
            program: Some(program.to_owned()),
            version,
        })
    }
}

/// Runs `cargo lambda --version` (or `<program> lambda --version`) and returns the version it
/// reports, such as `1.9.2`; the error says why it did not run.
fn probe_cargo_lambda(program: Option<&Path>) -> Result<String, String> {
    let mut command = cargo_lambda(program);
    command.arg("--version");
    let output = command.output().map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            describe(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    cargo_lambda_version(&stdout).ok_or_else(|| {
        format!(
            "`{}` printed {:?}, not `cargo-lambda <version>`",
            describe(&command),
            stdout.trim()
        )
    })
}

/// The version in cargo-lambda's `--version` line: `cargo-lambda 1.9.2 (67129fc 2026-08-21Z)`.
fn cargo_lambda_version(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    if words.next()? != "cargo-lambda" {
        return None;
    }
    words.next().map(str::to_owned)
}

fn host_triple() -> Result<String, BuildError> {
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
pub fn target_installed(target: &str) -> bool {
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

    #[test]
    fn cargo_lambda_versions_are_read_from_its_version_line() {
        assert_eq!(
            cargo_lambda_version("cargo-lambda 1.9.2 (67129fc 2026-08-21Z)\n").as_deref(),
            Some("1.9.2")
        );
        assert_eq!(cargo_lambda_version("cargo 1.90.0"), None);
        assert_eq!(cargo_lambda_version(""), None);
    }

    #[test]
    fn a_named_cargo_lambda_puts_its_directory_first_on_path() {
        let command = cargo_lambda(Some(Path::new("/venv/bin/cargo-lambda")));
        assert_eq!(command.get_program(), "/venv/bin/cargo-lambda");
        assert_eq!(command.get_args().collect::<Vec<_>>(), ["lambda"]);
        let path = command
            .get_envs()
            .find(|(name, _)| *name == "PATH")
            .and_then(|(_, value)| value)
            .expect("PATH is set for the child");
        assert_eq!(
            std::env::split_paths(path).next(),
            Some(PathBuf::from("/venv/bin"))
        );
    }
}
