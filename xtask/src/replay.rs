//! `cargo xtask replay-failures`: apply the records of the batches in the stack's failure
//! queue, read back from the stream, and delete the messages that were replayed.

use anyhow::{bail, Context, Result};
use deployer::console::Console;
use deployer::replay::{self, ReplayOptions};

use crate::args::{print_json, TargetArgs};
use crate::console::TerminalConsole;
use deployer::stack;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Show what would be replayed; apply nothing and delete no message
    #[arg(long)]
    dry_run: bool,
    /// Delete messages whose records are no longer in the stream (the ones still there are
    /// applied first); without it such messages are kept and reported
    #[arg(long)]
    discard_expired: bool,
}

pub async fn run(args: ReplayArgs, target_args: &TargetArgs) -> Result<()> {
    let settings = target_args.settings()?;
    let stack_name = settings.stack_name.clone();
    let mut console = TerminalConsole::new(target_args.yes);
    let target = target_args.connect().await?;
    if !args.dry_run {
        stack::confirm_on_aws(
            &target,
            &mut console,
            &format!("replay the failure queue of stack {stack_name} into its bucket"),
        )
        .await?;
    }
    let options = ReplayOptions {
        dry_run: args.dry_run,
        discard_expired: args.discard_expired,
    };
    let report = replay::replay_failures(&target, &stack_name, options, &mut |line| {
        console.line(line)
    })
    .await
    .with_context(|| format!("failed to replay the failure queue of stack {stack_name}"))?;
    console.finish();

    if target_args.json() {
        print_json(&report)?;
    } else {
        for message in &report.messages {
            let range = message.batch.as_ref().map_or_else(
                || "-".to_owned(),
                |b| {
                    format!(
                        "{} {}..{}",
                        b.shard_id, b.start_sequence_number, b.end_sequence_number
                    )
                },
            );
            println!(
                "message {} {range}: {} record(s), {} applied, {} superseded: {}",
                message.message_id,
                message.records,
                message.applied,
                message.superseded,
                message.outcome.label()
            );
        }
        println!("{}", report.summary());
    }
    // A dry run only looks; the real run fails on what it could not replay.
    let problems = report.kept_with_problems();
    if problems > 0 && !args.dry_run {
        bail!(
            "{problems} message(s) could not be replayed and were kept in the failure queue {} (see above)",
            report.queue_url
        );
    }
    Ok(())
}
