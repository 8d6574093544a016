//! External tools the checks need, installed on first use into usersync's cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::local::emulator::cache_dir;

/// The cfn-lint release the template is checked with.
pub const CFN_LINT_VERSION: &str = "1.51.0";

/// Failures of providing a tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("failed to run {program}: {source}; install Python 3 with the venv module (Debian: apt-get install python3-venv)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
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
    if let Some(path) = std::env::var_os("CFN_LINT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let venv = cache_dir().join(format!("cfn-lint-{CFN_LINT_VERSION}"));
    let binary = venv.join("bin").join("cfn-lint");
    if binary.is_file() {
        return Ok(binary);
    }
    progress(&format!(
        "installing cfn-lint {CFN_LINT_VERSION} into {}",
        venv.display()
    ));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("cfn-lint=={CFN_LINT_VERSION}")))?;
    Ok(binary)
}

fn run(command: &mut Command) -> Result<(), ToolError> {
    let shown = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
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

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| Path::new(part).display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
