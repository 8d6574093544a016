//! `cargo xtask synth`: the CloudFormation template, deterministically. With `existing_table` or
//! `existing_bucket` set, the template depends on those resources (the table's current stream
//! ARN, its hash key, their KMS keys), so synth reads them from the target as deploy does and
//! prints exactly what deploy would deploy.

use anyhow::{Context, Result};
use deployer::settings::ArtifactLocation;
use deployer::template;

use crate::args::TargetArgs;
use crate::console::TerminalConsole;

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

pub async fn run(args: SynthArgs, target: &TargetArgs) -> Result<()> {
    let settings = target.settings()?;
    let location = ArtifactLocation {
        bucket: args.code_bucket,
        key: args.code_key,
    };
    let synthesized = if settings.existing_table.is_some() || settings.existing_bucket.is_some() {
        let connected = target.connect().await?;
        let mut console = TerminalConsole::new(target.yes);
        let adoption = deployer::stack::check_adoption(&connected, &settings, &mut console)
            .await
            .context("failed to read the resources to adopt")?;
        console.finish();
        template::synthesize_adopting(&settings, &location, &adoption)
    } else {
        template::synthesize(&settings, &location)
    };
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
