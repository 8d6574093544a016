//! Building the function's `bootstrap` binary and packaging it as Lambda's `bootstrap.zip`.
//!
//! [`build`] picks a builder ([`plan`](fn@plan)), runs it with its output streamed to the user, checks
//! that the binary can run where it is going ([`check_glibc`] and the ELF machine), then
//! writes a reproducible zip ([`package`](fn@package)): the same binary always gives the same bytes, so
//! the zip's SHA-256 can name it in S3 ([`Artifact::content_key`]) and an unchanged function
//! is never uploaded twice.
//!
//! One module per step: `plan` (what to build and with which tool), `cargo` (the build and
//! probe command lines), `elf` (the checks of the built binary) and `package` (the zip).

mod cargo;
mod elf;
mod package;
mod plan;

use std::fs;
use std::path::{Path, PathBuf};

use cargo::run_build;
use elf::verify;

pub use crate::settings::Architecture;
pub use cargo::target_installed;
pub use elf::{check_glibc, required_glibc};
pub use package::package;
use plan::{cross_toolchain_hint, INSTALL_CARGO_LAMBDA};
pub use plan::{
    gnu_target, musl_target, plan, BuildOptions, Builder, CargoLambda, Plan, Purpose, Toolchain,
    CARGO_LAMBDA_VARIABLE,
};

/// The package holding the function.
pub const PACKAGE: &str = "usersync-function";
/// The function's binary; Lambda's `provided.al2023` runtime runs a file of this name.
pub const BINARY: &str = "bootstrap";
/// The cargo profile the artifact is built with (the workspace's `Cargo.toml` defines it:
/// release with LTO), so its binary lives in `target/lambda-artifact/`.
pub const PROFILE: &str = "lambda-artifact";
/// The newest glibc a binary may require to run on Lambda: Amazon Linux 2023 ships 2.34.
pub const MAX_AWS_GLIBC: (u32, u32) = (2, 34);
/// Unix mode of `bootstrap` inside the zip: Lambda must be able to execute it.
pub const ZIP_ENTRY_MODE: u32 = 0o755;

/// The packaged function, ready to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The zip: `<target dir>/lambda/function/bootstrap.zip`.
    pub zip_path: PathBuf,
    /// The binary that was packaged.
    pub binary_path: PathBuf,
    /// Lowercase hex SHA-256 of the zip's bytes.
    pub sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// The instruction set the binary was built for (and checked to be).
    pub architecture: Architecture,
    /// The tool that built it.
    pub builder: Builder,
}

impl Artifact {
    /// The S3 key the zip is uploaded under, named by its content:
    /// `usersync/bootstrap-<sha256>.zip`. An existing key therefore holds exactly these
    /// bytes, and the upload can be skipped.
    pub fn content_key(&self) -> String {
        format!("usersync/bootstrap-{}.zip", self.sha256)
    }
}

/// A failure to build, check or package the function; every message names the command or
/// file involved and how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command could not be started at all.
    #[error("failed to run `{command}` (check that cargo and rustc are installed and on PATH, or set CARGO / RUSTC)")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}); {fix}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What to do about it.
        fix: String,
    },
    /// The host's triple is not one Lambda or this tool knows.
    #[error("cannot build the function on host {host}: {reason}; {fix}")]
    UnsupportedHost {
        /// The host triple.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
        /// What to do about it.
        fix: String,
    },
    /// Nothing installed can build for the requested architecture.
    #[error("cannot build the function for {requested} on this {host} host without a cross toolchain; {}; or build for the host's architecture", cross_toolchain_hint(*requested))]
    ArchitectureUnavailable {
        /// The requested architecture.
        requested: Architecture,
        /// The host triple.
        host: String,
        /// The musl target that would do.
        musl_target: String,
    },
    /// The binary needs a glibc newer than Lambda's.
    #[error("{} requires GLIBC_{}.{} but Lambda's Amazon Linux 2023 has glibc {}.{}, so it would not start there; build with cargo-lambda ({INSTALL_CARGO_LAMBDA}) or install the musl target (`rustup target add {musl_target}`), then build again", binary.display(), required.0, required.1, MAX_AWS_GLIBC.0, MAX_AWS_GLIBC.1)]
    GlibcTooNew {
        /// The binary.
        binary: PathBuf,
        /// The newest glibc version it requires.
        required: (u32, u32),
        /// The musl target that would avoid glibc.
        musl_target: String,
    },
    /// The cargo-lambda named by `CARGO_LAMBDA` (or given by the caller) does not run.
    #[error("{} does not run as cargo-lambda ({reason}); point CARGO_LAMBDA at the bin/cargo-lambda of a virtual environment with `pip install cargo-lambda` in it, or unset CARGO_LAMBDA", program.display())]
    CargoLambdaUnusable {
        /// The program.
        program: PathBuf,
        /// What happened when it was run with `lambda --version`.
        reason: String,
    },
    /// The binary is for another instruction set than requested.
    #[error("{} is built for {found}, not the requested {expected}; check the `build.target` of your cargo configuration and any CARGO_BUILD_TARGET, or request {found}", binary.display())]
    WrongArchitecture {
        /// The binary.
        binary: PathBuf,
        /// The requested architecture.
        expected: Architecture,
        /// What the ELF header says.
        found: String,
    },
    /// A file is not an ELF executable that can be inspected.
    #[error("{} is not a valid ELF executable ({reason}); point at a Linux binary such as target/lambda-artifact/bootstrap, or rebuild it with `cargo xtask build`", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        reason: String,
    },
    /// The build succeeded but its binary is not where expected.
    #[error("`{command}` succeeded but did not produce {}; run it by hand to see where its output went, and check `build.target-dir` in your cargo configuration", expected.display())]
    MissingBinary {
        /// The command line.
        command: String,
        /// Where the binary was looked for.
        expected: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {} (check that the path exists and is writable, and that the disk is not full)", path.display())]
    Io {
        /// What was being done, such as `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the zip failed.
    #[error("cannot write the zip {} (check free disk space, and remove the file to retry)", path.display())]
    Zip {
        /// The zip being written.
        path: PathBuf,
        /// The zip library's error.
        #[source]
        source: zip::result::ZipError,
    },
}

/// Builds `bootstrap` with the [`PROFILE`] profile (release, whole-program optimised) for `options` and packages it into
/// `<target dir>/lambda/function/bootstrap.zip`.
///
/// Uses `cargo lambda build` when cargo-lambda is installed (or named by `CARGO_LAMBDA`), else
/// plain `cargo build` for an installed `*-linux-musl` target of the requested architecture,
/// else for the host (see [`plan`](fn@plan)). Cargo's output goes to this process's standard
/// error as it happens; `progress` receives one line per step.
pub fn build(
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Artifact, BuildError> {
    build_with(options, &Toolchain::detect()?, progress)
}

/// [`build`] with what `toolchain` offers instead of what [`Toolchain::detect`] finds: to
/// build with a particular cargo-lambda ([`Toolchain::detect_with`]).
pub fn build_with(
    options: &BuildOptions,
    toolchain: &Toolchain,
    progress: &mut dyn FnMut(&str),
) -> Result<Artifact, BuildError> {
    let plan = plan(options, toolchain)?;
    let builder = match (&plan.builder, &toolchain.cargo_lambda) {
        (Builder::CargoLambda, Some(cargo_lambda)) => cargo_lambda.to_string(),
        (builder, _) => builder.to_string(),
    };
    progress(&format!(
        "building {BINARY} ({PACKAGE}, profile {PROFILE}) for {} with {builder}",
        plan.architecture
    ));
    let binary = run_build(&plan, toolchain.cargo_lambda.as_ref())?;
    verify(&binary, &plan, options.purpose)?;

    let zip_path = zip_path();
    progress(&format!(
        "packaging {} into {}",
        binary.display(),
        zip_path.display()
    ));
    let (sha256, size) = package(&binary, &zip_path)?;
    Ok(Artifact {
        zip_path,
        binary_path: binary,
        sha256,
        size,
        architecture: plan.architecture,
        builder: plan.builder,
    })
}

/// Where [`build`] writes the zip: `<target dir>/lambda/function/bootstrap.zip`.
pub fn zip_path() -> PathBuf {
    crate::project::target_dir()
        .join("lambda")
        .join("function")
        .join("bootstrap.zip")
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    fs::read(path).map_err(|source| BuildError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}
