//! `cargo xtask build`: the function archive for Lambda.

use anyhow::{Context, Result};
use deployer::artifact::{self, BuildOptions, Purpose};
use deployer::settings::Architecture;

use crate::args::{print_json, TargetArgs};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Build for arm64 (Graviton)
    #[arg(long, conflicts_with = "x86_64")]
    arm64: bool,
    /// Build for x86_64
    #[arg(long = "x86-64")]
    x86_64: bool,
    /// Build for the local host or an emulator only: skips the Amazon Linux 2023 glibc check
    #[arg(long = "for-local")]
    for_local: bool,
}

#[derive(serde::Serialize)]
struct BuildReport {
    zip: String,
    size: u64,
    sha256: String,
    architecture: String,
    builder: String,
}

pub fn run(args: BuildArgs, target: &TargetArgs) -> Result<()> {
    let architecture = match (args.arm64, args.x86_64) {
        (true, _) => Some(Architecture::Arm64),
        (_, true) => Some(Architecture::X86_64),
        _ => None,
    };
    let local = args.for_local || target.local || target.endpoint_url.is_some();
    let options = BuildOptions {
        architecture,
        purpose: if local { Purpose::Local } else { Purpose::Aws },
    };
    let built = artifact::build(&options, &mut |line| eprintln!("{line}"))
        .context("failed to build the function")?;
    let report = BuildReport {
        zip: built.zip_path.display().to_string(),
        size: built.size,
        sha256: built.sha256.clone(),
        architecture: built.architecture.to_string(),
        builder: built.builder.to_string(),
    };
    if target.json() {
        return print_json(&report);
    }
    println!("{}", report.zip);
    println!("  size      {} bytes", report.size);
    println!("  sha256    {}", report.sha256);
    println!("  arch      {}", report.architecture);
    println!("  built by  {}", report.builder);
    Ok(())
}
