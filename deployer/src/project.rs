//! Where things are in the workspace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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

/// The toolchain program named by the environment variable `variable` (`CARGO`, `RUSTC`: set
/// when running under cargo, so the same toolchain is used), else `default` from `PATH`.
pub fn toolchain_program(variable: &str, default: &str) -> OsString {
    std::env::var_os(variable)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}
