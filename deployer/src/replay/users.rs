//! The users a batch's records name, as the function names them (its own planning, record by
//! record), and for each user removed in the batch, when its latest REMOVE was written.

use serde_json::Value;
use usersync_function::plan::plan_records;
use usersync_function::Config;

use crate::streams::record::StreamEventRecord;

/// One user of a batch.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BatchUser {
    pub name: String,
    /// The batch holds a REMOVE of the user.
    pub removed: bool,
    /// The latest of those REMOVEs' `ApproximateCreationDateTime`, in epoch seconds; `None`
    /// when none of them carries one.
    pub removed_at_epoch_s: Option<f64>,
}

/// What a batch's records name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct BatchUsers {
    /// In the order of each user's first record.
    pub users: Vec<BatchUser>,
    /// Records that name no user the function mirrors, with the reason (it skips them too).
    pub skipped: Vec<String>,
}

/// Names the users of `records` under the function's settings.
pub(super) fn name_users(records: &[StreamEventRecord], config: &Config) -> BatchUsers {
    let mut named = BatchUsers::default();
    for record in records {
        // The function's planning, one record at a time: the name it keys the user by, or the
        // reason it passes the record over.
        let Ok(raw) = serde_json::value::to_raw_value(&record.event) else {
            named
                .skipped
                .push(format!("record {} is not JSON", record.sequence_number));
            continue;
        };
        let plan = plan_records(&[raw], config);
        if let Some(skipped) = plan.skipped.first() {
            named.skipped.push(format!(
                "record {}: {}",
                record.sequence_number, skipped.reason
            ));
        }
        let Some(planned) = plan.users.into_iter().next() else {
            continue;
        };
        let index = match named.users.iter().position(|u| u.name == planned.name) {
            Some(index) => index,
            None => {
                named.users.push(BatchUser {
                    name: planned.name,
                    removed: false,
                    removed_at_epoch_s: None,
                });
                named.users.len() - 1
            }
        };
        if record.event.get("eventName").and_then(Value::as_str) == Some("REMOVE") {
            let user = &mut named.users[index];
            user.removed = true;
            if let Some(at) = record.created_at_epoch_s {
                user.removed_at_epoch_s = Some(user.removed_at_epoch_s.map_or(at, |t| t.max(at)));
            }
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use usersync_function::testing::{config, stream_record, RecordBuilder};
    use usersync_function::DeleteScope;

    use super::*;

    fn event(event: Value, at: Option<f64>) -> StreamEventRecord {
        StreamEventRecord {
            sequence_number: event["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            event,
            created_at_epoch_s: at,
            payload_bytes: 0,
        }
    }

    #[test]
    fn names_each_user_once_with_its_latest_remove() {
        let records = [
            event(
                stream_record("INSERT", "ann", 1, Some(json!({}))),
                Some(10.0),
            ),
            event(stream_record("REMOVE", "bob", 2, None), Some(11.0)),
            event(stream_record("REMOVE", "ann", 3, None), Some(12.5)),
            event(
                stream_record("INSERT", "ann", 4, Some(json!({}))),
                Some(13.0),
            ),
            event(stream_record("REMOVE", "ann", 5, None), Some(12.0)),
            event(stream_record("REMOVE", "cy", 6, None), None),
        ];
        let named = name_users(&records, &config("b", DeleteScope::Prefix));
        assert_eq!(
            named.users,
            [
                BatchUser {
                    name: "ann".into(),
                    removed: true,
                    removed_at_epoch_s: Some(12.5),
                },
                BatchUser {
                    name: "bob".into(),
                    removed: true,
                    removed_at_epoch_s: Some(11.0),
                },
                BatchUser {
                    name: "cy".into(),
                    removed: true,
                    removed_at_epoch_s: None,
                },
            ]
        );
        assert!(named.skipped.is_empty());
    }

    #[test]
    fn records_the_function_skips_name_nobody() {
        let no_key = RecordBuilder::new("INSERT", 7)
            .key("id", json!({"S": "x"}))
            .build();
        let named = name_users(
            &[event(no_key, Some(1.0))],
            &config("b", DeleteScope::Prefix),
        );
        assert!(named.users.is_empty());
        assert_eq!(named.skipped.len(), 1);
        assert!(
            named.skipped[0].contains("key attribute \"name\" is missing"),
            "{:?}",
            named.skipped
        );
    }
}
