//! `cargo xtask deploy`: build, upload, create or update the stack.

use anyhow::{Context, Result};
use deployer::settings::{check_existing_bucket, check_existing_table, parse_delete_scope};
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
    /// Mirror this existing DynamoDB table instead of creating one (it needs a single string
    /// hash key and a stream with new images) [default: existing_table from settings, else the
    /// table the stack adopted before]
    #[arg(long, value_name = "NAME", value_parser = existing_table)]
    existing_table: Option<String>,
    /// Mirror into this existing S3 bucket, of the stack's region and account, instead of
    /// creating one [default: existing_bucket from settings, else the bucket the stack adopted
    /// before]
    #[arg(long, value_name = "NAME", value_parser = existing_bucket)]
    existing_bucket: Option<String>,
}

/// `--existing-table`: refused while parsing (exit code 2) when it is no table name.
fn existing_table(text: &str) -> Result<String, String> {
    check_existing_table(text)
        .map(|()| text.to_owned())
        .map_err(|err| err.to_string())
}

/// `--existing-bucket`: refused while parsing (exit code 2) when it is no bucket name.
fn existing_bucket(text: &str) -> Result<String, String> {
    check_existing_bucket(text)
        .map(|()| text.to_owned())
        .map_err(|err| err.to_string())
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
    if let Some(table) = args.existing_table {
        settings.existing_table = Some(table);
    }
    if let Some(bucket) = args.existing_bucket {
        settings.existing_bucket = Some(bucket);
    }
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
