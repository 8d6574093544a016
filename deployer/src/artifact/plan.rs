//! Deciding how to build: what the caller asks for ([`BuildOptions`]: purpose and
//! architecture), what this machine offers ([`Toolchain`]) and the builder chosen from them
//! ([`plan`]), kept pure so every case is testable without the tools. The probes that fill a
//! [`Toolchain`] ([`Toolchain::detect`], [`CargoLambda::detect`]) run commands, so they live
//! with the other command lines, in `cargo`.

use std::fmt;
use std::path::PathBuf;

use super::{Architecture, BuildError};

/// The variable that names the `cargo-lambda` executable to build with, such as the one a
/// `pip install cargo-lambda` put in a virtual environment's `bin/`.
pub const CARGO_LAMBDA_VARIABLE: &str = "CARGO_LAMBDA";

/// How to install cargo-lambda, for messages.
pub(super) const INSTALL_CARGO_LAMBDA: &str = "`pip install cargo-lambda` into a virtual environment, whose wheel brings zig, and set CARGO_LAMBDA to its bin/cargo-lambda, or `cargo install --locked cargo-lambda` with zig on PATH";

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

/// A cargo-lambda that runs: how to start it and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CargoLambda {
    /// The `cargo-lambda` executable, run as `<program> lambda ...` with its directory first on
    /// the child's `PATH` (so that the `python3 -m ziglang` of the same virtual environment
    /// provides zig); `None` runs `cargo lambda ...`, which finds `cargo-lambda` on `PATH`.
    pub program: Option<PathBuf>,
    /// The version it reports, such as `1.9.2`.
    pub version: String,
}

impl fmt::Display for CargoLambda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cargo-lambda {}", self.version)?;
        if let Some(program) = &self.program {
            write!(f, " ({})", program.display())?;
        }
        Ok(())
    }
}

/// What the build environment offers; [`Toolchain::detect`] probes it, tests build it by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// cargo-lambda, when one runs.
    pub cargo_lambda: Option<CargoLambda>,
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

/// Decides how to build for `options` with what `toolchain` offers; pure, so every case is
/// testable without the tools.
///
/// In order of preference: cargo-lambda (it builds for either architecture, against a glibc
/// Lambda has); a musl target of the requested architecture (static, runs anywhere); the host
/// itself when its architecture matches (for real AWS only a Linux host, and [`build`](super::build) then
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
                fix: format!("request an architecture (arm64 or x86_64) and install cargo-lambda: {INSTALL_CARGO_LAMBDA}"),
            })
        }
    };
    if toolchain.cargo_lambda.is_some() {
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
            fix: format!("install cargo-lambda ({INSTALL_CARGO_LAMBDA}) or the musl target (`rustup target add {musl}`)"),
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

/// The glibc target triple for `architecture`, such as `aarch64-unknown-linux-gnu`: what
/// cargo-lambda builds for.
pub fn gnu_target(architecture: Architecture) -> String {
    format!("{}-unknown-linux-gnu", triple_arch(architecture))
}

/// Everything a build for `architecture` on another host needs, either way: cargo-lambda
/// with zig and the target's standard library, or the musl target with a C compiler and
/// linker for it (aws-lc-sys compiles C).
pub(super) fn cross_toolchain_hint(architecture: Architecture) -> String {
    format!(
        "build with cargo-lambda, which cross-compiles with zig (install it with {INSTALL_CARGO_LAMBDA}) and needs the target's standard library (`rustup target add {}`, which cargo-lambda runs itself where rustup can download it); or build with cargo for the musl target (`rustup target add {}`) with {}",
        gnu_target(architecture),
        musl_target(architecture),
        musl_cross_compiler(architecture),
    )
}

/// The C compiler and linker a plain `cargo build --target <musl target>` needs on another
/// host: aws-lc-sys compiles C with `CC_<target>`, and rustc links with the target's linker.
pub(super) fn musl_cross_compiler(architecture: Architecture) -> String {
    let arch = triple_arch(architecture);
    let gcc = format!("{arch}-linux-gnu-gcc");
    // Debian's package names spell x86_64 with a hyphen.
    let package = format!("gcc-{}-linux-gnu", arch.replace('_', "-"));
    let target = musl_target(architecture).replace('-', "_");
    format!(
        "a cross C compiler and linker for aws-lc-sys and the link (on Debian or Ubuntu `apt-get install {package}`, then CC_{target}={gcc} and CARGO_TARGET_{}_LINKER={gcc})",
        target.to_ascii_uppercase()
    )
}

fn triple_arch(architecture: Architecture) -> &'static str {
    match architecture {
        Architecture::Arm64 => "aarch64",
        Architecture::X86_64 => "x86_64",
    }
}

pub(super) fn triple_architecture(triple: &str) -> Option<Architecture> {
    match triple.split('-').next()? {
        "aarch64" => Some(Architecture::Arm64),
        "x86_64" => Some(Architecture::X86_64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
