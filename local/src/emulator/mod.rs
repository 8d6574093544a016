//! The embedded AWS emulator: fakecloud, run as a separate process on 127.0.0.1.
//!
//! fakecloud is AGPL-licensed, so it is never linked: it is installed with `cargo install`
//! into a cache outside the build tree (once; it takes a while) and started as a child process.
//! A `fakecloud` named by `FAKECLOUD_BIN`, or found on `PATH`, is used instead when present.
//!
//! `install` finds or installs the binary, `process` runs one emulator, `shared` keeps the
//! detached one `--local` commands use; `front` and `proxy` sit between clients and it, `proxy`
//! with TLS from `tls` when clients must pay for HTTPS as they do on AWS.

use std::net::SocketAddr;
use std::path::PathBuf;

pub mod faults;
pub mod front;
mod install;
mod process;
pub mod proxy;
mod shared;
pub mod tls;

pub use install::{
    ensure_binary, find_binary, install, install_root, BinarySource, EmulatorBinary,
};
pub use process::{is_healthy, Emulator, EmulatorState};
pub use shared::{running_detached, start_or_reuse, state_file, stop_detached};

use process::READY_TIMEOUT;

/// The fakecloud release usersync is tested against.
pub const FAKECLOUD_VERSION: &str = "0.51.0";

/// Failures of finding, installing, starting or stopping the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "FAKECLOUD_BIN points at {0}, which does not exist: fix the path or unset FAKECLOUD_BIN"
    )]
    BinaryMissing(PathBuf),
    #[error(
        "failed to run `cargo install fakecloud --version {FAKECLOUD_VERSION}` (is cargo on PATH?)"
    )]
    InstallSpawn(#[source] std::io::Error),
    #[error(
        "`cargo install fakecloud --version {FAKECLOUD_VERSION}` failed ({status}); its last lines:\n{tail}\n\
         fix the cause (disk space, registry access) and run again: the build resumes where it stopped"
    )]
    InstallFailed { status: String, tail: String },
    #[error("failed to use the emulator cache at {path} (set USERSYNC_CACHE_DIR to a writable directory)")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find a free port on 127.0.0.1")]
    NoPort(#[source] std::io::Error),
    #[error("failed to start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the emulator exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    ExitedEarly {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the emulator at {addr} did not become healthy within {READY_TIMEOUT:?}; see its log {log}"
    )]
    NotReady { addr: SocketAddr, log: PathBuf },
    #[error("failed to read or write the emulator state file {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
