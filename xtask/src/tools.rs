//! External tools the checks need, installed on first use into usersync's cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use deployer::artifact::CARGO_LAMBDA_VARIABLE;
use deployer::project::cache_dir;

/// The cfn-lint release the template is checked with.
pub const CFN_LINT_VERSION: &str = "1.51.0";

/// The checkov release the template's security is checked with.
pub const CHECKOV_VERSION: &str = "3.3.30";

/// The cargo-lambda release the AWS archive is built with: PyPI's wheel ships its binary.
pub const CARGO_LAMBDA_VERSION: &str = "1.9.2";

/// The zig cargo-lambda compiles and links with: PyPI's `ziglang`, which cargo-lambda's wheel
/// requires (unpinned), pinned here with it.
pub const ZIGLANG_VERSION: &str = "0.17.1";

/// What to do when Python cannot be run.
const PYTHON_FIX: &str =
    "install Python 3 with the venv module; on Debian, `apt-get install python3-venv`";

/// Failures of providing a tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("failed to run {program} ({fix})")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
        /// How to make the program available.
        fix: &'static str,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// Finds cfn-lint: `CFN_LINT` when set, else the pinned version in the cache's virtual
/// environment, installed there from PyPI on first use.
pub fn ensure_cfn_lint(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ToolError> {
    ensure_python_tool("CFN_LINT", "cfn-lint", CFN_LINT_VERSION, progress)
}

/// Finds checkov: `CHECKOV` when set, else the pinned version in the cache's virtual
/// environment (`<cache>/checkov-<version>`), installed there from PyPI on first use (about
/// 300 MB and a minute or two).
pub fn ensure_checkov(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ToolError> {
    ensure_python_tool("CHECKOV", "checkov", CHECKOV_VERSION, progress)
}

/// Finds cargo-lambda: `CARGO_LAMBDA` when set, else the pinned version in the cache's virtual
/// environment (`<cache>/cargo-lambda-<version>`, with zig from PyPI's `ziglang` beside it),
/// installed there from PyPI on first use (about 470 MB unpacked, mostly zig; 10 to 15
/// seconds). The deployer's builder runs it with that `bin/` first on `PATH`, where
/// cargo-lambda finds zig as `python3 -m ziglang`.
pub fn ensure_cargo_lambda(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ToolError> {
    ensure_python_tool_with(
        CARGO_LAMBDA_VARIABLE,
        "cargo-lambda",
        CARGO_LAMBDA_VERSION,
        &[("ziglang", ZIGLANG_VERSION)],
        progress,
    )
}

/// `variable` when set, else `<cache>/<package>-<version>/bin/<package>`, installed with pip
/// into that virtual environment when missing.
fn ensure_python_tool(
    variable: &str,
    package: &str,
    version: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ToolError> {
    ensure_python_tool_with(variable, package, version, &[], progress)
}

/// [`ensure_python_tool`], with `also` (package, version) pinned in the same environment.
fn ensure_python_tool_with(
    variable: &str,
    package: &str,
    version: &str,
    also: &[(&str, &str)],
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ToolError> {
    if let Some(path) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let venv = cache_dir().join(format!("{package}-{version}"));
    let binary = venv.join("bin").join(package);
    if binary.is_file() {
        return Ok(binary);
    }
    let requirements: Vec<String> = std::iter::once((package, version))
        .chain(also.iter().copied())
        .map(|(package, version)| format!("{package}=={version}"))
        .collect();
    progress(&format!(
        "installing {} into {} (from PyPI)",
        requirements.join(" "),
        venv.display()
    ));
    let started = Instant::now();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        PYTHON_FIX,
    )?;
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&requirements),
        PYTHON_FIX,
    )?;
    progress(&format!(
        "installed {package} {version} in {}s",
        started.elapsed().as_secs()
    ));
    Ok(binary)
}

/// Runs `command` to completion, its output captured; `fix` says how to make the program
/// available when it cannot be started.
pub(crate) fn run(command: &mut Command, fix: &'static str) -> Result<(), ToolError> {
    let shown = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
            fix,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ToolError::Failed {
        command: shown,
        status: output.status.to_string(),
        output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned(),
    })
}

pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| Path::new(part).display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
