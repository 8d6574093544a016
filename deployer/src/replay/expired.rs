//! `--reconcile-expired`: a message whose records have left the stream cannot name its users,
//! so the whole table is reconciled with repair instead, and those messages are deleted only
//! when that reconcile reports that nothing failed.

use std::time::Duration;

use super::context::Context;
use super::messages::{self, Received};
use super::report::{ExpiredReconcile, MessageReport, Outcome};
use super::ReplayError;
use crate::errors::chain;
use crate::reconcile::{
    default_state_dir, reconcile, Phase, ReconcileOptions, ReconcileProgress, ReconcileReport,
};
use crate::target::Target;

/// How long the expired messages stay hidden while the whole table is reconciled: longer than
/// a large table takes, so no other reader takes them meanwhile, and within SQS's limit of 12
/// hours from their receipt.
const HIDDEN_WHILE_RECONCILING: Duration = Duration::from_secs(11 * 3600);

/// Reconciles the whole table with repair.
pub(super) trait WholeTableReconcile: Sync {
    // `Send`, so that the whole replay can be spawned.
    fn reconcile(
        &self,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> impl std::future::Future<Output = ExpiredReconcile> + Send;
}

/// The stack's whole table, through `reconcile::reconcile`.
pub(super) struct StackReconcile<'a> {
    pub(super) target: &'a Target,
    pub(super) stack_name: &'a str,
}

impl WholeTableReconcile for StackReconcile<'_> {
    async fn reconcile(&self, progress: &mut (dyn FnMut(&str) + Send)) -> ExpiredReconcile {
        let options = ReconcileOptions {
            repair: true,
            // Afresh, in a directory of its own: a checkpoint an earlier `reconcile` left
            // may predate the lost batches, and resuming it would skip the users it had
            // already judged.
            restart: true,
            state_dir: Some(default_state_dir(self.stack_name, None).join("replay-expired")),
            ..ReconcileOptions::default()
        };
        let mut phase = None;
        let result = reconcile(self.target, self.stack_name, &options, &mut |step| {
            if let Some(line) = progress_line(&mut phase, step) {
                progress(&line);
            }
        })
        .await;
        match result {
            Ok(report) => judged(&report),
            Err(err) => ExpiredReconcile {
                summary: "the whole-table reconcile stopped".to_owned(),
                problem: Some(chain(&err)),
            },
        }
    }
}

/// A line for the replay's progress when the reconcile enters a phase or has a note: it
/// reports after every step, far too often for lines.
fn progress_line(last: &mut Option<Phase>, step: &ReconcileProgress) -> Option<String> {
    if let Some(note) = &step.note {
        return Some(format!("reconcile: {note}"));
    }
    if *last == Some(step.phase) {
        return None;
    }
    *last = Some(step.phase);
    Some(match step.phase {
        Phase::Reading => "reconcile: scanning the table and listing the bucket".to_owned(),
        Phase::Comparing => format!(
            "reconcile: {} item(s) scanned, {} object(s) listed; comparing and repairing",
            step.items_scanned, step.objects_listed
        ),
        Phase::Done => format!(
            "reconcile: done, {} judged, {} repaired, {} failed",
            step.judged, step.repaired, step.failed
        ),
    })
}

/// What a finished reconcile says for the expired messages: they may go only if no repair
/// failed.
fn judged(report: &ReconcileReport) -> ExpiredReconcile {
    let problem = (report.failed > 0).then(|| match report.examples.failed.first() {
        Some(first) => format!(
            "{} user(s) could not be repaired, first {:?}: {}",
            report.failed, first.user, first.error
        ),
        None => format!("{} user(s) could not be repaired", report.failed),
    });
    ExpiredReconcile {
        summary: report.summary(),
        problem,
    }
}

/// Runs the whole-table reconcile for the `held` messages (each with the index of its report
/// in `reports`), then deletes them if it repaired everything, or releases them.
pub(super) async fn reconcile_held(
    context: &Context,
    reconciler: &impl WholeTableReconcile,
    held: Vec<(Received, usize)>,
    reports: &mut [MessageReport],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ExpiredReconcile, ReplayError> {
    for (message, _) in &held {
        messages::hide(
            &context.sqs,
            &context.queue_url,
            message,
            HIDDEN_WHILE_RECONCILING,
        )
        .await;
    }
    progress(&format!(
        "{} message(s) have records no longer in the stream: reconciling the whole table of stack {} with repair",
        held.len(),
        context.stack_name
    ));
    let outcome = reconciler.reconcile(progress).await;
    for (message, index) in held {
        let report = &mut reports[index];
        match (&outcome.problem, &report.outcome) {
            (None, Outcome::Expired { missing }) => {
                let missing = *missing;
                messages::delete(&context.sqs, &context.queue_url, &message).await?;
                report.outcome = Outcome::ExpiredReconciled { missing };
                report.deleted = true;
            }
            _ => messages::release(&context.sqs, &context.queue_url, &message).await,
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use usersync_function::DeleteScope;

    use super::*;
    use crate::reconcile::etag::BucketEncryption;
    use crate::reconcile::report::{Examples, FailedUser};

    fn report(failed: u64, examples: Vec<FailedUser>) -> ReconcileReport {
        ReconcileReport {
            stack_name: "usersync".into(),
            table: "users".into(),
            bucket: "mirror".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
            delete_scope: DeleteScope::Object,
            segments: 4,
            shares: Vec::new(),
            repair: true,
            resumed: false,
            bucket_encryption: BucketEncryption::SseS3,
            table_items: 10,
            objects: 9,
            missing: 1 + failed,
            stale: 0,
            orphaned: 0,
            foreign: 0,
            unmirrorable: 0,
            drifted_users: 1 + failed,
            repaired: 1,
            failed,
            body_reads: 0,
            presence_checks: 0,
            seconds: 2.0,
            examples: Examples {
                failed: examples,
                ..Examples::default()
            },
        }
    }

    #[test]
    fn expired_messages_may_go_only_when_no_repair_failed() {
        let clean = judged(&report(0, Vec::new()));
        assert_eq!(clean.problem, None);
        assert!(
            clean.summary.contains("1 of 1 users repaired"),
            "{}",
            clean.summary
        );

        let failed = judged(&report(
            2,
            vec![FailedUser {
                key: "ann/userdata".into(),
                user: "ann".into(),
                error: "access denied".into(),
            }],
        ));
        assert_eq!(
            failed.problem.as_deref(),
            Some("2 user(s) could not be repaired, first \"ann\": access denied")
        );
    }

    #[test]
    fn progress_is_a_line_per_phase_and_per_note() {
        let mut last = None;
        let step = |phase, note: Option<&str>| ReconcileProgress {
            phase,
            items_scanned: 5,
            objects_listed: 4,
            judged: 5,
            repaired: 1,
            note: note.map(str::to_owned),
            ..ReconcileProgress::default()
        };
        let lines: Vec<String> = [
            step(Phase::Reading, None),
            step(Phase::Reading, None),
            step(Phase::Reading, Some("resumed")),
            step(Phase::Comparing, None),
            step(Phase::Comparing, None),
            step(Phase::Done, None),
        ]
        .iter()
        .filter_map(|s| progress_line(&mut last, s))
        .collect();
        assert_eq!(
            lines,
            [
                "reconcile: scanning the table and listing the bucket",
                "reconcile: resumed",
                "reconcile: 5 item(s) scanned, 4 object(s) listed; comparing and repairing",
                "reconcile: done, 5 judged, 1 repaired, 0 failed",
            ]
        );
    }
}
