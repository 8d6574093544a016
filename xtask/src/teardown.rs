//! `cargo xtask teardown`: empty the bucket, delete the stack, remove uploaded archives; an
//! adopted table or bucket is left as it is, and the command says so.

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
    let mut action = format!("tear down stack {stack_name} and delete its data");
    if target.is_aws() {
        // The question names what stays: an adopted table or bucket is not the stack's data.
        let deployed = stack::describe_stack(&target, &stack_name)
            .await
            .with_context(|| format!("failed to tear down stack {stack_name}"))?;
        let adopted = deployed
            .map(|found| stack::adopted_names(&stack::outputs_of(&found)))
            .unwrap_or_default();
        if let Some(left) = adopted.left() {
            // "left: table X (its items), ..." as "(leaving the adopted table X (its items), ...)"
            let leaving = left.replacen("left: ", "leaving the adopted ", 1);
            action.push_str(&format!(" ({leaving})"));
        }
    }
    stack::confirm_on_aws(&target, &mut console, &action).await?;
    let report = stack::teardown_report(
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
            "teardown": report,
            "emulator_stopped": stopped.is_some(),
        }));
    }
    let adopted_bucket = report.adopted.bucket.is_some();
    match report.outcome {
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
            if adopted_bucket {
                println!("  the adopted bucket was not emptied");
            } else if data_retained {
                println!("  data retained: the users table and the bucket were kept");
            } else {
                println!("  {emptied_objects} object version(s) removed from the data bucket");
            }
            println!("  {removed_artifacts} uploaded archive(s) removed");
        }
    }
    if let Some(left) = report.adopted.left() {
        println!("  {left}");
    }
    if let Some(state) = stopped {
        console.line(&format!(
            "stopped the embedded emulator (pid {})",
            state.pid
        ));
    }
    Ok(())
}
