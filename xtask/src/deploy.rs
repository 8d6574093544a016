//! `cargo xtask deploy`: build, upload, create or update the stack.

use anyhow::{Context, Result};
use deployer::settings::parse_delete_scope;
use deployer::workflow::{self, DeployResult};

use crate::args::{number_in, print_json, TargetArgs};
use crate::console::TerminalConsole;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Most stream records per invocation (1-10000) [default: from settings, else 100]
    #[arg(long, value_name = "N", value_parser = number_in(1u32, 10_000))]
    batch_size: Option<u32>,
    /// Retries of a failing batch before it goes to the failure queue (-1 = until it expires)
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = number_in(-1i32, 10_000))]
    max_retries: Option<i32>,
    /// Function memory in MB (128-10240)
    #[arg(long, value_name = "MB", value_parser = number_in(128u32, 10_240))]
    memory: Option<u32>,
    /// What a removed user deletes
    #[arg(long, value_parser = ["object", "prefix"])]
    delete_scope: Option<String>,
    /// Keep the users table and the data bucket when the stack is torn down
    #[arg(long)]
    retain_data: bool,
}

pub async fn run(args: DeployArgs, target_args: &TargetArgs) -> Result<()> {
    let mut settings = target_args.settings()?;
    if let Some(n) = args.batch_size {
        settings.batch_size = n;
    }
    if let Some(n) = args.max_retries {
        settings.maximum_retry_attempts = n;
    }
    if let Some(n) = args.memory {
        settings.memory_mb = n;
    }
    if let Some(scope) = args.delete_scope.as_deref() {
        settings.delete_scope = parse_delete_scope(scope)?;
    }
    settings.retain_data_on_teardown |= args.retain_data;
    settings.validate().context("invalid stack settings")?;

    let mut console = TerminalConsole::new(target_args.yes);
    let target = target_args.connect().await?;
    let report = workflow::deploy(
        &target,
        &settings,
        &workflow::DeployOptions::default(),
        &mut console,
    )
    .await
    .with_context(|| format!("failed to deploy stack {}", settings.stack_name))?;
    console.finish();

    if target_args.json() {
        return print_json(&report);
    }
    match report.result {
        DeployResult::UpToDate => println!(
            "stack {} is up to date on {}: nothing to do",
            report.stack_name, report.target
        ),
        result => println!("stack {} {result} on {}", report.stack_name, report.target),
    }
    for (name, value) in &report.outputs {
        println!("  {name:<22} {value}");
    }
    Ok(())
}
