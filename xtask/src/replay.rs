//! `cargo xtask replay-failures`: repair, from the table's current state, the users of the
//! batches in the stack's failure queue (their records, read back from the stream, name them),
//! and delete the messages replayed.

use anyhow::{bail, Context, Result};
use deployer::console::Console;
use deployer::replay::{self, MessageReport, ReplayOptions};

use crate::args::{print_json, TargetArgs};
use crate::console::TerminalConsole;
use deployer::stack;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Show which users each message names; repair nothing and delete no message
    #[arg(long)]
    dry_run: bool,
    /// For messages whose records are no longer in the stream (so their users cannot all be
    /// named): reconcile the whole table with repair, then delete those messages if nothing
    /// failed; without it such messages are kept and reported
    #[arg(long)]
    reconcile_expired: bool,
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
            &format!("repair the users of the failure queue of stack {stack_name} in its bucket"),
        )
        .await?;
    }
    let options = ReplayOptions {
        dry_run: args.dry_run,
        reconcile_expired: args.reconcile_expired,
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
            println!("{}", message_line(message));
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

/// One message of the text report.
fn message_line(message: &MessageReport) -> String {
    let range = message.batch.as_ref().map_or_else(
        || "-".to_owned(),
        |b| {
            format!(
                "{} {}..{}",
                b.shard_id, b.start_sequence_number, b.end_sequence_number
            )
        },
    );
    let mut counts = format!(
        "{} record(s), {} user(s) named, {} repaired",
        message.records,
        message.users.len(),
        message.repaired
    );
    if message.prefix_objects_deleted > 0 {
        counts.push_str(&format!(
            ", {} object(s) older than a REMOVE deleted",
            message.prefix_objects_deleted
        ));
    }
    if message.skipped > 0 {
        counts.push_str(&format!(", {} skipped", message.skipped));
    }
    format!(
        "message {} {range}: {counts}: {}",
        message.message_id,
        message.outcome.label()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deployer::replay::{BatchInfo, Outcome};

    #[test]
    fn a_message_line_names_its_batch_and_what_was_done() {
        let mut message = MessageReport {
            message_id: "m1".into(),
            batch: Some(BatchInfo {
                shard_id: "shard-1".into(),
                start_sequence_number: "100".into(),
                end_sequence_number: "105".into(),
                batch_size: Some(3),
                stream_arn: "arn".into(),
                condition: None,
            }),
            records: 3,
            users: vec!["ann".into(), "bob".into()],
            repaired: 2,
            prefix_objects_deleted: 0,
            skipped: 0,
            outcome: Outcome::Replayed,
            deleted: true,
        };
        assert_eq!(
            message_line(&message),
            "message m1 shard-1 100..105: 3 record(s), 2 user(s) named, 2 repaired: users repaired, message deleted"
        );
        message.prefix_objects_deleted = 4;
        message.skipped = 1;
        message.batch = None;
        assert_eq!(
            message_line(&message),
            "message m1 -: 3 record(s), 2 user(s) named, 2 repaired, 4 object(s) older than a REMOVE deleted, 1 skipped: users repaired, message deleted"
        );
    }
}
