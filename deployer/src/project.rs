//! Where things are in the workspace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the directory holding the top-level `Cargo.toml`.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the deployer crate sits one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                project_root().join(dir)
            }
        }
        _ => project_root().join("target"),
    }
}

/// Where usersync keeps its own run-time state (emulator state file, logs, benchmark output).
pub fn state_dir() -> PathBuf {
    target_dir().join("usersync")
}

/// usersync's cache of tools: `USERSYNC_CACHE_DIR`, else `$XDG_CACHE_HOME/usersync`, else
/// `~/.cache/usersync`. Shared by every checkout on the machine.
pub fn cache_dir() -> PathBuf {
    let non_empty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = non_empty("USERSYNC_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return dir.join("usersync");
    }
    let home = non_empty("HOME").unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("usersync")
}

/// The toolchain program named by the environment variable `variable` (`CARGO`, `RUSTC`: set
/// when running under cargo, so the same toolchain is used), else `default` from `PATH`.
pub fn toolchain_program(variable: &str, default: &str) -> OsString {
    std::env::var_os(variable)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// Variables cargo sets for the crate it runs (`cargo run`, `cargo test`), which a nested cargo
/// would inherit. Some build scripts watch them (ring's watches `CARGO_MANIFEST_DIR`), so a
/// nested build started from another crate's tests would recompile those dependencies and
/// everything above them each time it is started from a different crate.
const PER_CRATE_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// A `cargo` command (the toolchain's, see [`toolchain_program`]) with what the calling crate's
/// cargo set for it removed from its environment, so builds it starts are the same builds,
/// and find the same compiled dependencies, wherever they are started from.
pub fn cargo_command() -> Command {
    let mut command = Command::new(toolchain_program("CARGO", "cargo"));
    clear_calling_crate_env(&mut command);
    command
}

/// Removes `PER_CRATE_VARIABLES` and `CARGO_PKG_*` from `command`'s environment: for any
/// program that runs cargo itself (cargo-fuzz, cargo-lambda).
pub fn clear_calling_crate_env(command: &mut Command) -> &mut Command {
    for variable in PER_CRATE_VARIABLES {
        command.env_remove(variable);
    }
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("CARGO_PKG_"))
        {
            command.env_remove(name);
        }
    }
    command
}
