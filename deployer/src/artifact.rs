//! Building the function's `bootstrap` binary and packaging it as Lambda's `bootstrap.zip`.
//!
//! [`build`] picks a builder ([`plan`]), runs it with its output streamed to the user, checks
//! that the binary can run where it is going ([`check_glibc`] and the ELF machine), then
//! writes a reproducible zip ([`package`]): the same binary always gives the same bytes, so
//! the zip's SHA-256 can name it in S3 ([`Artifact::content_key`]) and an unchanged function
//! is never uploaded twice.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use object::read::elf::{FileHeader, SectionTable};
use object::{elf, Endianness, FileKind};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

pub use crate::settings::Architecture;

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

/// Where the function is going to run; it decides which builds are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Real AWS Lambda, or an emulator running Lambda's `provided.al2023` image (such as
    /// LocalStack): the binary must not need a glibc newer than Amazon Linux 2023's 2.34.
    Aws,
    /// The local function host, or an emulator that runs the function on this machine: any
    /// host build runs.
    Local,
}

/// What to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BuildOptions {
    /// The instruction set to build for; `None` means the host's.
    pub architecture: Option<Architecture>,
    /// Where the function will run.
    pub purpose: Purpose,
}

/// The tool that built the binary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Builder {
    /// `cargo lambda build`, which cross-compiles for Lambda with zig.
    CargoLambda,
    /// Plain `cargo build` for this target triple (a `*-linux-musl` target, or the host).
    Cargo {
        /// The target triple built for.
        target: String,
    },
}

impl fmt::Display for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CargoLambda => f.write_str("cargo-lambda"),
            Self::Cargo { target } => write!(f, "cargo (target {target})"),
        }
    }
}

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

/// What the build environment offers; [`Toolchain::detect`] probes it, tests build it by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `cargo lambda --version` succeeds.
    pub cargo_lambda: bool,
    /// The host's target triple, as `rustc -vV` reports it.
    pub host: String,
    /// The `*-unknown-linux-musl` targets whose standard library is installed.
    pub musl_targets: Vec<String>,
}

/// The chosen way to build: [`plan`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The instruction set to build for.
    pub architecture: Architecture,
    /// The tool to build with.
    pub builder: Builder,
    /// `--target` to pass to cargo; `None` builds for the host (into
    /// `target/lambda-artifact`).
    pub cargo_target: Option<String>,
}

/// A failure to build, check or package the function; every message names the command or
/// file involved and how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command could not be started at all.
    #[error("failed to run `{command}`: {source}; check that the Rust toolchain (cargo, rustc) is installed and on PATH, or set CARGO / RUSTC")]
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
    #[error("cannot build the function for {requested} on this {host} host without a cross toolchain; install cargo-lambda (`cargo install --locked cargo-lambda`) or the musl target (`rustup target add {musl_target}`), or build for the host's architecture")]
    ArchitectureUnavailable {
        /// The requested architecture.
        requested: Architecture,
        /// The host triple.
        host: String,
        /// The musl target that would do.
        musl_target: String,
    },
    /// The binary needs a glibc newer than Lambda's.
    #[error("{} requires GLIBC_{}.{} but Lambda's Amazon Linux 2023 has glibc {}.{}, so it would not start there; build with cargo-lambda (`cargo install --locked cargo-lambda`) or install the musl target (`rustup target add {musl_target}`), then build again", binary.display(), required.0, required.1, MAX_AWS_GLIBC.0, MAX_AWS_GLIBC.1)]
    GlibcTooNew {
        /// The binary.
        binary: PathBuf,
        /// The newest glibc version it requires.
        required: (u32, u32),
        /// The musl target that would avoid glibc.
        musl_target: String,
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
    #[error("cannot {action} {}: {source}; check that the path exists and is writable, and that the disk is not full", path.display())]
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
    #[error("cannot write the zip {}: {source}; check free disk space and remove the file to retry", path.display())]
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
/// Uses `cargo lambda build` when cargo-lambda is installed, else plain `cargo build` for an
/// installed `*-linux-musl` target of the requested architecture, else for the host (see
/// [`plan`]). Cargo's output goes to this process's standard error as it happens;
/// `progress` receives one line per step.
pub fn build(
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Artifact, BuildError> {
    let toolchain = Toolchain::detect()?;
    let plan = plan(options, &toolchain)?;
    progress(&format!(
        "building {BINARY} ({PACKAGE}, profile {PROFILE}) for {} with {}",
        plan.architecture, plan.builder
    ));
    let binary = run_build(&plan)?;
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

impl Toolchain {
    /// Probes this machine: whether `cargo lambda` runs, the host triple, and which musl
    /// targets are installed.
    pub fn detect() -> Result<Self, BuildError> {
        let host = host_triple()?;
        let musl_targets = [Architecture::Arm64, Architecture::X86_64]
            .into_iter()
            .map(musl_target)
            .filter(|target| target_installed(target))
            .collect();
        Ok(Self {
            cargo_lambda: cargo_lambda_installed(),
            host,
            musl_targets,
        })
    }
}

/// Decides how to build for `options` with what `toolchain` offers; pure, so every case is
/// testable without the tools.
///
/// In order of preference: cargo-lambda (it builds for either architecture, against a glibc
/// Lambda has); a musl target of the requested architecture (static, runs anywhere); the host
/// itself when its architecture matches (for real AWS only a Linux host, and [`build`] then
/// checks its glibc). Anything else is refused with the fix.
pub fn plan(options: &BuildOptions, toolchain: &Toolchain) -> Result<Plan, BuildError> {
    let host = toolchain.host.as_str();
    let host_arch = triple_architecture(host);
    let architecture = match (options.architecture, host_arch) {
        (Some(requested), _) => requested,
        (None, Some(arch)) => arch,
        (None, None) => {
            return Err(BuildError::UnsupportedHost {
                host: host.to_owned(),
                reason: "its architecture is neither x86_64 nor aarch64",
                fix: "request an architecture (arm64 or x86_64) and install cargo-lambda (`cargo install --locked cargo-lambda`)".to_owned(),
            })
        }
    };
    if toolchain.cargo_lambda {
        return Ok(Plan {
            architecture,
            builder: Builder::CargoLambda,
            cargo_target: None,
        });
    }
    let musl = musl_target(architecture);
    if toolchain.musl_targets.contains(&musl) {
        return Ok(cargo_plan(architecture, musl, host));
    }
    if host_arch != Some(architecture) {
        return Err(BuildError::ArchitectureUnavailable {
            requested: architecture,
            host: host.to_owned(),
            musl_target: musl,
        });
    }
    // Lambda runs Linux binaries; a local host runs whatever this machine runs.
    if options.purpose == Purpose::Aws && !host.contains("-linux-") {
        return Err(BuildError::UnsupportedHost {
            host: host.to_owned(),
            reason: "it does not build Linux binaries, which Lambda runs",
            fix: format!("install cargo-lambda (`cargo install --locked cargo-lambda`) or the musl target (`rustup target add {musl}`)"),
        });
    }
    Ok(cargo_plan(architecture, host.to_owned(), host))
}

fn cargo_plan(architecture: Architecture, target: String, host: &str) -> Plan {
    // Building for the host needs no `--target`.
    let cargo_target = (target != host).then(|| target.clone());
    Plan {
        architecture,
        builder: Builder::Cargo { target },
        cargo_target,
    }
}

/// The musl target triple for `architecture`, such as `aarch64-unknown-linux-musl`.
pub fn musl_target(architecture: Architecture) -> String {
    format!("{}-unknown-linux-musl", triple_arch(architecture))
}

fn triple_arch(architecture: Architecture) -> &'static str {
    match architecture {
        Architecture::Arm64 => "aarch64",
        Architecture::X86_64 => "x86_64",
    }
}

fn triple_architecture(triple: &str) -> Option<Architecture> {
    match triple.split('-').next()? {
        "aarch64" => Some(Architecture::Arm64),
        "x86_64" => Some(Architecture::X86_64),
        _ => None,
    }
}

/// Decides whether a binary needing glibc `required` (`None`: no glibc, such as a musl or
/// static binary) may go to real AWS: only up to [`MAX_AWS_GLIBC`]. `architecture` picks the
/// musl target the error suggests.
pub fn check_glibc(
    binary: &Path,
    architecture: Architecture,
    required: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    match required {
        Some(version) if version > MAX_AWS_GLIBC => Err(BuildError::GlibcTooNew {
            binary: binary.to_owned(),
            required: version,
            musl_target: musl_target(architecture),
        }),
        _ => Ok(()),
    }
}

/// The newest `GLIBC_x.y` symbol version `binary` requires (from its `.gnu.version_r`
/// section), or `None` when it requires none (static or musl binaries).
///
/// Patch levels are dropped: `GLIBC_2.2.5` is `(2, 2)`. A file that is not ELF is an error.
pub fn required_glibc(binary: &Path) -> Result<Option<(u32, u32)>, BuildError> {
    let data = read(binary)?;
    inspect_elf(&data)
        .map(|info| info.glibc)
        .map_err(|reason| BuildError::NotElf {
            path: binary.to_owned(),
            reason,
        })
}

/// Packages `binary` as the single entry `bootstrap` (mode 0755, timestamp 1980-01-01
/// 00:00:00, deflated, no extra fields) of a zip written atomically to `zip_path`, and returns
/// the zip's hex SHA-256 and size. The same binary always gives the same bytes.
pub fn package(binary: &Path, zip_path: &Path) -> Result<(String, u64), BuildError> {
    let contents = read(binary)?;
    let bytes = zip_bytes(&contents).map_err(|source| BuildError::Zip {
        path: zip_path.to_owned(),
        source,
    })?;
    write_atomically(zip_path, &bytes)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok((sha256, bytes.len() as u64))
}

fn zip_bytes(contents: &[u8]) -> zip::result::ZipResult<Vec<u8>> {
    // Every field that would otherwise come from the clock, the host system or the zip
    // crate's enabled features is fixed here, so that the output depends on `contents` only.
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(DateTime::default())
        .system(System::Unix)
        .unix_permissions(ZIP_ENTRY_MODE)
        .large_file(false);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file(BINARY, options)?;
    writer.write_all(contents)?;
    Ok(writer.finish()?.into_inner())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    // A temporary file in the same directory, renamed over the target: readers (such as a
    // concurrent upload) see the old zip or the new one, never half of one.
    let name = path.file_name().map_or_else(
        || "bootstrap.zip".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = write_and_sync(&temp, bytes)
        .map_err(io("write", &temp))
        .and_then(|()| fs::rename(&temp, path).map_err(io("replace", path)));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_and_sync(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    fs::read(path).map_err(|source| BuildError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// What the ELF headers say about a binary.
struct ElfInfo {
    /// The instruction set, when it is one Lambda runs.
    architecture: Option<Architecture>,
    /// The `e_machine` name, for messages.
    machine: String,
    /// The newest glibc version required, if any.
    glibc: Option<(u32, u32)>,
}

fn inspect_elf(data: &[u8]) -> Result<ElfInfo, String> {
    match FileKind::parse(data).map_err(|e| e.to_string())? {
        FileKind::Elf64 => inspect_elf_as::<elf::FileHeader64<Endianness>>(data),
        FileKind::Elf32 => inspect_elf_as::<elf::FileHeader32<Endianness>>(data),
        other => Err(format!("it is a {other:?} file, not ELF")),
    }
}

fn inspect_elf_as<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfInfo, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let machine = header.e_machine(endian);
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;
    Ok(ElfInfo {
        architecture: match machine {
            elf::EM_X86_64 => Some(Architecture::X86_64),
            elf::EM_AARCH64 => Some(Architecture::Arm64),
            _ => None,
        },
        machine: machine.to_string(),
        glibc: newest_glibc(&sections, endian, data).map_err(|e| e.to_string())?,
    })
}

fn newest_glibc<Elf: FileHeader<Endian = Endianness>>(
    sections: &SectionTable<'_, Elf>,
    endian: Endianness,
    data: &[u8],
) -> object::Result<Option<(u32, u32)>> {
    let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? else {
        return Ok(None);
    };
    let strings = sections.strings(endian, data, link)?;
    let mut newest = None;
    while let Some((_, mut auxes)) = needs.next()? {
        while let Some(aux) = auxes.next()? {
            let version = glibc_version(aux.name(endian, strings)?);
            newest = newest.max(version);
        }
    }
    Ok(newest)
}

/// Parses a symbol version name such as `GLIBC_2.34` or `GLIBC_2.2.5` into (major, minor).
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let name = std::str::from_utf8(name).ok()?;
    let version = name.strip_prefix("GLIBC_")?;
    // Linking with `-z pack-relative-relocs` adds this marker instead of a numbered version;
    // only glibc 2.36 and later understand it.
    if version == "ABI_DT_RELR" {
        return Some((2, 36));
    }
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Checks the built binary against the plan: the requested instruction set and, for AWS, a
/// Linux ELF whose glibc Lambda has.
fn verify(binary: &Path, plan: &Plan, purpose: Purpose) -> Result<(), BuildError> {
    let data = read(binary)?;
    let info = match inspect_elf(&data) {
        Ok(info) => info,
        // A local host may run a native non-ELF build (such as Mach-O on macOS).
        Err(_) if purpose == Purpose::Local => return Ok(()),
        Err(reason) => {
            return Err(BuildError::NotElf {
                path: binary.to_owned(),
                reason,
            })
        }
    };
    if info.architecture != Some(plan.architecture) {
        return Err(BuildError::WrongArchitecture {
            binary: binary.to_owned(),
            expected: plan.architecture,
            found: info.machine,
        });
    }
    if purpose == Purpose::Aws {
        check_glibc(binary, plan.architecture, info.glibc)?;
    }
    Ok(())
}

/// Runs the planned build and returns the path of the binary it produced.
fn run_build(plan: &Plan) -> Result<PathBuf, BuildError> {
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
        .args([
            "lambda",
            "build",
            "--profile",
            PROFILE,
            "--package",
            PACKAGE,
            "--bin",
            BINARY,
        ])
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
    command.args([
        "build",
        "--profile",
        PROFILE,
        "--package",
        PACKAGE,
        "--bin",
        BINARY,
        // JSON on standard output tells where the binary went, whatever the cargo
        // configuration says; diagnostics are still rendered for people on standard error.
        "--message-format=json-render-diagnostics",
    ]);
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

fn cargo_lambda_installed() -> bool {
    cargo()
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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
fn target_installed(target: &str) -> bool {
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
    fn glibc_version_names_parse() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_ABI_DT_RELR"), Some((2, 36)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version(b"GCC_3.0"), None);
        assert_eq!(glibc_version(b"GLIBC_2"), None);
    }

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
    fn triples_map_to_architectures() {
        assert_eq!(
            triple_architecture("aarch64-apple-darwin"),
            Some(Architecture::Arm64)
        );
        assert_eq!(
            triple_architecture("x86_64-unknown-linux-gnu"),
            Some(Architecture::X86_64)
        );
        assert_eq!(triple_architecture("riscv64gc-unknown-linux-gnu"), None);
    }
}
