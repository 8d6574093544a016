//! `cargo xtask teardown`: empty the bucket, delete the stack, remove uploaded archives.

use anyhow::{Context, Result};
use deployer::console::Console;
use deployer::stack::{self, TeardownOutcome};
use usersync_local::emulator;

use crate::args::{print_json, TargetArgs};
use crate::console::TerminalConsole;

#[derive(clap::Args)]
pub struct TeardownArgs {
    /// Keep the function archives uploaded to the assets bucket
    #[arg(long)]
    keep_assets: bool,
}

pub async fn run(args: TeardownArgs, target_args: &TargetArgs) -> Result<()> {
    let settings = target_args.settings()?;
    let stack_name = settings.stack_name.clone();
    let mut console = TerminalConsole::new(target_args.yes);
    let target = target_args.connect().await?;
    stack::confirm_on_aws(
        &target,
        &mut console,
        &format!("tear down stack {stack_name} and delete its data"),
    )
    .await?;
    let outcome = stack::teardown(
        &target,
        &stack_name,
        settings.retain_data_on_teardown,
        args.keep_assets,
        &mut console,
    )
    .await
    .with_context(|| format!("failed to tear down stack {stack_name}"))?;

    // `--local`: the emulator was only there for this stack.
    let stopped = if target_args.local {
        emulator::stop_detached(&emulator::state_file())
            .await
            .context("failed to stop the embedded emulator")?
    } else {
        None
    };
    console.finish();

    if target_args.json() {
        return print_json(&serde_json::json!({
            "stack_name": stack_name,
            "teardown": outcome,
            "emulator_stopped": stopped.is_some(),
        }));
    }
    match outcome {
        TeardownOutcome::NothingToTearDown { .. } => {
            println!(
                "stack {stack_name} does not exist on {}: nothing to tear down",
                target.describe()
            )
        }
        TeardownOutcome::TornDown {
            emptied_objects,
            removed_artifacts,
            data_retained,
        } => {
            println!("stack {stack_name} torn down on {}", target.describe());
            if data_retained {
                println!("  data retained: the users table and the bucket were kept");
            } else {
                println!("  {emptied_objects} object version(s) removed from the data bucket");
            }
            println!("  {removed_artifacts} uploaded archive(s) removed");
        }
    }
    if let Some(state) = stopped {
        console.line(&format!(
            "stopped the embedded emulator (pid {})",
            state.pid
        ));
    }
    Ok(())
}
