//! What a replay run reports: each message's outcome and the whole run's counts, as the text
//! report and `--output json` show them.

use serde::Serialize;

use super::messages::BatchInfo;

/// How a message ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Every record applied (or superseded); the message was deleted.
    Replayed,
    /// Dry run: what would be applied; nothing changed.
    WouldReplay,
    /// Some records are no longer in the stream; the ones left were applied (not in a dry
    /// run) and the message kept.
    Expired { missing: u64 },
    /// As `Expired`, and the message deleted (`discard_expired`).
    ExpiredDiscarded { missing: u64 },
    /// Applying failed; the message was kept for a later run.
    Failed { reason: String },
    /// Not a stream batch's failure record; kept.
    Unreadable { reason: String },
}

impl Outcome {
    /// A short word for the text report.
    pub fn label(&self) -> String {
        match self {
            Outcome::Replayed => "replayed, message deleted".to_owned(),
            Outcome::WouldReplay => "would be replayed (dry run)".to_owned(),
            Outcome::Expired { missing } => format!(
                "{missing} record(s) no longer in the stream; message kept (pass --discard-expired to delete it)"
            ),
            Outcome::ExpiredDiscarded { missing } => {
                format!("{missing} record(s) no longer in the stream; message deleted (--discard-expired)")
            }
            Outcome::Failed { reason } => format!("failed, message kept: {reason}"),
            Outcome::Unreadable { reason } => format!("not replayable, message kept: {reason}"),
        }
    }
}

/// One message's replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub message_id: String,
    pub batch: Option<BatchInfo>,
    /// The batch's records found in the stream.
    pub records: usize,
    /// Records applied to the bucket (in a dry run: that would be).
    pub applied: usize,
    /// Records skipped because their user has a later record in the stream.
    pub superseded: usize,
    pub outcome: Outcome,
    pub deleted: bool,
}

/// The whole run, as `--output json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub stack_name: String,
    pub queue_url: String,
    pub bucket: String,
    pub dry_run: bool,
    pub messages: Vec<MessageReport>,
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

    pub fn records_applied(&self) -> usize {
        self.messages.iter().map(|m| m.applied).sum()
    }

    /// One line for the end of the text report.
    pub fn summary(&self) -> String {
        if self.messages.is_empty() {
            return format!(
                "the failure queue of stack {} is empty: nothing to replay",
                self.stack_name
            );
        }
        if self.dry_run {
            let would_replay = self
                .messages
                .iter()
                .filter(|m| m.outcome == Outcome::WouldReplay)
                .count();
            return format!(
                "{} message(s): {would_replay} would be replayed and deleted, {} kept; {} record(s) would be applied to {} (dry run: nothing changed)",
                self.messages.len(),
                self.messages.len() - would_replay,
                self.records_applied(),
                self.bucket
            );
        }
        format!(
            "{} message(s): {} replayed and deleted, {} kept; {} record(s) applied to {}",
            self.messages.len(),
            self.deleted(),
            self.kept(),
            self.records_applied(),
            self.bucket
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_counts_what_happened() {
        let message = |deleted, outcome, applied| MessageReport {
            message_id: "m".into(),
            batch: None,
            records: 3,
            applied,
            superseded: 0,
            outcome,
            deleted,
        };
        let report = ReplayReport {
            stack_name: "s".into(),
            queue_url: "q".into(),
            bucket: "b".into(),
            dry_run: false,
            messages: vec![
                message(true, Outcome::Replayed, 3),
                message(false, Outcome::Expired { missing: 1 }, 2),
            ],
        };
        assert_eq!(report.deleted(), 1);
        assert_eq!(report.kept(), 1);
        assert_eq!(report.kept_with_problems(), 1);
        assert_eq!(
            report.summary(),
            "2 message(s): 1 replayed and deleted, 1 kept; 5 record(s) applied to b"
        );
        assert!(Outcome::Expired { missing: 1 }
            .label()
            .contains("--discard-expired"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["messages"][1]["outcome"],
            json!({"kind": "expired", "missing": 1})
        );
    }
}
