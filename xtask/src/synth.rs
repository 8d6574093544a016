//! `cargo xtask synth`: the CloudFormation template, deterministically.

use anyhow::{Context, Result};
use deployer::settings::ArtifactLocation;
use deployer::template;

use crate::args::TargetArgs;

#[derive(clap::Args)]
pub struct SynthArgs {
    /// Print YAML instead of JSON
    #[arg(long)]
    yaml: bool,
    /// The code location to write into the template (deploy fills in the real one)
    #[arg(long, default_value = "usersync-assets-account-region")]
    code_bucket: String,
    #[arg(long, default_value = "usersync/bootstrap-sha256.zip")]
    code_key: String,
}

pub fn run(args: SynthArgs, target: &TargetArgs) -> Result<()> {
    let settings = target.settings()?;
    let location = ArtifactLocation {
        bucket: args.code_bucket,
        key: args.code_key,
    };
    let synthesized = template::synthesize(&settings, &location);
    let text = if args.yaml {
        template::to_yaml_string(&synthesized).context("failed to print the template")?
    } else {
        template::to_json_string(&synthesized)
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
