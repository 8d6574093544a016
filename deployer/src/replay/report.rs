//! What a replay run reports: each message's outcome and the whole run's counts, as the text
//! report and `--output json` show them.

use serde::Serialize;

use super::messages::BatchInfo;

/// How a message ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Every user the batch names was repaired from the table; the message was deleted.
    Replayed,
    /// Dry run: the batch's users were named; nothing changed.
    WouldReplay,
    /// Some of the batch's records are no longer in the stream, so its users cannot all be
    /// named. The users still named were repaired (not in a dry run); the message was kept.
    Expired { missing: u64 },
    /// As `Expired`, then a whole-table reconcile repaired every user and the message was
    /// deleted (`reconcile_expired`).
    ExpiredReconciled { missing: u64 },
    /// Reading the batch or repairing a user failed; the message was kept for a later run.
    Failed { reason: String },
    /// Not a stream batch's failure record; kept.
    Unreadable { reason: String },
}

impl Outcome {
    /// A short phrase for the text report.
    pub fn label(&self) -> String {
        match self {
            Outcome::Replayed => "users repaired, message deleted".to_owned(),
            Outcome::WouldReplay => "users would be repaired (dry run)".to_owned(),
            Outcome::Expired { missing } => format!(
                "{missing} record(s) no longer in the stream, so the batch's users cannot all be named; message kept (pass --reconcile-expired to reconcile the whole table and delete it)"
            ),
            Outcome::ExpiredReconciled { missing } => format!(
                "{missing} record(s) no longer in the stream; the whole table was reconciled, message deleted"
            ),
            Outcome::Failed { reason } => format!("failed, message kept: {reason}"),
            Outcome::Unreadable { reason } => format!("not replayable, message kept: {reason}"),
        }
    }

    pub fn is_expired(&self) -> bool {
        matches!(self, Outcome::Expired { .. })
    }
}

/// One message's replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub message_id: String,
    pub batch: Option<BatchInfo>,
    /// The batch's records found in the stream.
    pub records: usize,
    /// The users those records name, in the order of their first record.
    pub users: Vec<String>,
    /// Users repaired from the table's current state (none in a dry run).
    pub repaired: usize,
    /// Objects deleted under removed users' prefixes as older than the REMOVE
    /// (`DELETE_SCOPE=prefix`).
    pub prefix_objects_deleted: usize,
    /// Records that name no user the function mirrors (the function skips them too).
    pub skipped: usize,
    pub outcome: Outcome,
    pub deleted: bool,
}

/// The whole-table reconcile run for the expired messages (`reconcile_expired`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpiredReconcile {
    /// The reconcile's own summary.
    pub summary: String,
    /// What it could not repair, or why it stopped; `None` when it repaired everything (and
    /// only then were the expired messages deleted).
    pub problem: Option<String>,
}

/// The whole run, as `--output json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub stack_name: String,
    pub queue_url: String,
    pub bucket: String,
    pub dry_run: bool,
    pub messages: Vec<MessageReport>,
    /// Present when expired messages were kept for, and sent through, a whole-table reconcile.
    pub expired_reconcile: Option<ExpiredReconcile>,
}

impl ReplayReport {
    pub fn deleted(&self) -> usize {
        self.messages.iter().filter(|m| m.deleted).count()
    }

    pub fn kept(&self) -> usize {
        self.messages.len() - self.deleted()
    }

    /// Messages kept because something went wrong (not merely a dry run).
    pub fn kept_with_problems(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| !m.deleted && m.outcome != Outcome::WouldReplay)
            .count()
    }

    /// Messages kept because their records left the stream.
    pub fn expired_kept(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.outcome.is_expired())
            .count()
    }

    pub fn users_repaired(&self) -> usize {
        self.messages.iter().map(|m| m.repaired).sum()
    }

    /// Users named by the messages' batches (a user in several counts in each).
    pub fn users_named(&self) -> usize {
        self.messages.iter().map(|m| m.users.len()).sum()
    }

    /// The end of the text report: one line, then what to do about expired messages.
    pub fn summary(&self) -> String {
        if self.messages.is_empty() {
            return format!(
                "the failure queue of stack {} is empty: nothing to replay",
                self.stack_name
            );
        }
        let mut text = if self.dry_run {
            let would_replay = self
                .messages
                .iter()
                .filter(|m| m.outcome == Outcome::WouldReplay)
                .count();
            format!(
                "{} message(s): {would_replay} would be replayed and deleted, {} kept; {} user(s) would be repaired in {} from the table (dry run: nothing changed)",
                self.messages.len(),
                self.messages.len() - would_replay,
                self.users_named(),
                self.bucket
            )
        } else {
            format!(
                "{} message(s): {} deleted, {} kept; {} user(s) repaired in {} from the table",
                self.messages.len(),
                self.deleted(),
                self.kept(),
                self.users_repaired(),
                self.bucket
            )
        };
        if let Some(reconcile) = &self.expired_reconcile {
            match &reconcile.problem {
                None => text.push_str(&format!(
                    ". Expired messages deleted after a whole-table reconcile: {}",
                    reconcile.summary
                )),
                Some(problem) => text.push_str(&format!(
                    ". The whole-table reconcile did not repair everything ({problem}), so the expired messages were kept: run `cargo xtask replay-failures --reconcile-expired` again"
                )),
            }
        } else if self.expired_kept() > 0 {
            text.push_str(&format!(
                ". {} message(s) have records no longer in the stream and cannot name their users: run `cargo xtask replay-failures --reconcile-expired` to reconcile the whole table and delete them",
                self.expired_kept()
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(deleted: bool, outcome: Outcome, users: &[&str], repaired: usize) -> MessageReport {
        MessageReport {
            message_id: "m".into(),
            batch: None,
            records: 3,
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            repaired,
            prefix_objects_deleted: 0,
            skipped: 0,
            outcome,
            deleted,
        }
    }

    fn report(messages: Vec<MessageReport>) -> ReplayReport {
        ReplayReport {
            stack_name: "s".into(),
            queue_url: "q".into(),
            bucket: "b".into(),
            dry_run: false,
            messages,
            expired_reconcile: None,
        }
    }

    #[test]
    fn the_summary_counts_what_happened_and_says_what_to_do_about_expired_messages() {
        let mut report = report(vec![
            message(true, Outcome::Replayed, &["a", "b"], 2),
            message(false, Outcome::Expired { missing: 1 }, &["c"], 1),
        ]);
        assert_eq!(report.deleted(), 1);
        assert_eq!(report.kept(), 1);
        assert_eq!(report.kept_with_problems(), 1);
        assert_eq!(
            report.summary(),
            "2 message(s): 1 deleted, 1 kept; 3 user(s) repaired in b from the table. 1 message(s) have records no longer in the stream and cannot name their users: run `cargo xtask replay-failures --reconcile-expired` to reconcile the whole table and delete them"
        );
        assert!(Outcome::Expired { missing: 1 }
            .label()
            .contains("--reconcile-expired"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["messages"][1]["outcome"],
            json!({"kind": "expired", "missing": 1})
        );
        assert_eq!(json["messages"][0]["users"], json!(["a", "b"]));

        report.messages[1].outcome = Outcome::ExpiredReconciled { missing: 1 };
        report.messages[1].deleted = true;
        report.expired_reconcile = Some(ExpiredReconcile {
            summary: "10 users checked, 1 repaired".into(),
            problem: None,
        });
        assert!(report.summary().ends_with(
            "Expired messages deleted after a whole-table reconcile: 10 users checked, 1 repaired"
        ));
        assert_eq!(report.kept_with_problems(), 0);
    }

    #[test]
    fn a_dry_run_counts_the_users_it_would_repair() {
        let mut report = report(vec![message(false, Outcome::WouldReplay, &["a", "b"], 0)]);
        report.dry_run = true;
        assert_eq!(report.kept_with_problems(), 0);
        assert_eq!(
            report.summary(),
            "1 message(s): 1 would be replayed and deleted, 0 kept; 2 user(s) would be repaired in b from the table (dry run: nothing changed)"
        );
    }
}
