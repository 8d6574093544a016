//! Which existing table and bucket a deploy adopts: the names a deployed stack's outputs say it
//! adopted ([`adopted_names`]), and the choice between those and the settings'
//! `existing_table` and `existing_bucket` ([`adoption_names`]).

use std::collections::BTreeMap;

use super::{Adoptable, AdoptionError};
use crate::console::Console;
use crate::settings::StackSettings;
use crate::template::{output, Adoption};

/// The names of the existing table and bucket a stack adopted (or a deploy adopts): serialised
/// as `adopted_table` and `adopted_bucket`, `null` when not adopted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdoptedNames {
    #[serde(rename = "adopted_table")]
    pub table: Option<String>,
    #[serde(rename = "adopted_bucket")]
    pub bucket: Option<String>,
}

impl AdoptedNames {
    /// Whether nothing was adopted.
    pub fn is_empty(&self) -> bool {
        self.table.is_none() && self.bucket.is_none()
    }

    /// What a teardown leaves because it was adopted, as one line: `left: table X (its items),
    /// bucket Y (its objects)`; `None` when nothing was adopted.
    pub fn left(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(table) = &self.table {
            parts.push(format!("table {table} (its items)"));
        }
        if let Some(bucket) = &self.bucket {
            parts.push(format!("bucket {bucket} (its objects)"));
        }
        (!parts.is_empty()).then(|| format!("left: {}", parts.join(", ")))
    }
}

impl From<&Adoption> for AdoptedNames {
    fn from(adoption: &Adoption) -> Self {
        Self {
            table: adoption.table.as_ref().map(|t| t.name.clone()),
            bucket: adoption.bucket.as_ref().map(|b| b.name.clone()),
        }
    }
}

/// What a deployed stack adopted, from its outputs (`AdoptedTable`, `AdoptedBucket`).
pub fn adopted_names(outputs: &BTreeMap<String, String>) -> AdoptedNames {
    AdoptedNames {
        table: outputs.get(output::ADOPTED_TABLE).cloned(),
        bucket: outputs.get(output::ADOPTED_BUCKET).cloned(),
    }
}

/// Which existing table and bucket a deploy of `settings` adopts, given the outputs of the
/// stack as deployed (empty when there is none). Per kind: a stack keeps what it adopted when
/// the settings name nothing (said through `console`); the settings may not name another one
/// than the stack adopted, nor one instead of the stack's own (whose removal from the template
/// would delete it).
pub fn adoption_names(
    settings: &StackSettings,
    deployed: &BTreeMap<String, String>,
    console: &mut dyn Console,
) -> Result<AdoptedNames, AdoptionError> {
    let adopted = adopted_names(deployed);
    let stack = settings.stack_name.as_str();
    let table = choose(
        stack,
        Adoptable::Table,
        settings.existing_table.as_deref(),
        adopted.table.as_deref(),
        deployed.get(output::TABLE_NAME).map(String::as_str),
        console,
    )?;
    let bucket = choose(
        stack,
        Adoptable::Bucket,
        settings.existing_bucket.as_deref(),
        adopted.bucket.as_deref(),
        deployed.get(output::BUCKET_NAME).map(String::as_str),
        console,
    )?;
    Ok(AdoptedNames { table, bucket })
}

/// One kind's part of [`adoption_names`]: `named` by the settings, `adopted` by the stack before,
/// the stack's `current` one (its own when it adopted none).
fn choose(
    stack: &str,
    kind: Adoptable,
    named: Option<&str>,
    adopted: Option<&str>,
    current: Option<&str>,
    console: &mut dyn Console,
) -> Result<Option<String>, AdoptionError> {
    match (named, adopted, current) {
        (None, None, _) => Ok(None),
        (None, Some(adopted), _) => {
            console.line(&format!(
                "stack {stack} adopted {kind} {adopted}: keeping it ({} is not set)",
                kind.setting()
            ));
            Ok(Some(adopted.to_owned()))
        }
        (Some(named), Some(adopted), _) if named == adopted => Ok(Some(named.to_owned())),
        (Some(named), Some(adopted), _) => Err(AdoptionError::AdoptedAnother {
            stack: stack.to_owned(),
            kind,
            adopted: adopted.to_owned(),
            named: named.to_owned(),
        }),
        // The stack's own: its output names it (a stack whose create failed has no outputs,
        // and nothing left to delete).
        (Some(named), None, Some(own)) => Err(AdoptionError::OwnsItsOwn {
            stack: stack.to_owned(),
            kind,
            own: own.to_owned(),
            named: named.to_owned(),
        }),
        (Some(named), None, None) => Ok(Some(named.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::RecordingConsole;
    use crate::stack::adopt::test_support::{BUCKET, TABLE};

    fn settings(table: Option<&str>, bucket: Option<&str>) -> StackSettings {
        StackSettings {
            stack_name: "users".to_owned(),
            existing_table: table.map(str::to_owned),
            existing_bucket: bucket.map(str::to_owned),
            ..StackSettings::default()
        }
    }

    fn outputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_new_stack_adopts_what_the_settings_name() {
        let mut console = RecordingConsole::default();
        let names =
            adoption_names(&settings(Some(TABLE), None), &BTreeMap::new(), &mut console).unwrap();
        assert_eq!(
            names,
            AdoptedNames {
                table: Some(TABLE.to_owned()),
                bucket: None
            }
        );
        assert!(console.lines.is_empty());
        let names = adoption_names(&settings(None, None), &BTreeMap::new(), &mut console).unwrap();
        assert!(names.is_empty());
    }

    #[test]
    fn a_stack_keeps_what_it_adopted_when_the_settings_say_nothing() {
        let deployed = outputs(&[
            (output::TABLE_NAME, TABLE),
            (output::ADOPTED_TABLE, TABLE),
            (output::BUCKET_NAME, BUCKET),
            (output::ADOPTED_BUCKET, BUCKET),
        ]);
        let mut console = RecordingConsole::default();
        let names = adoption_names(&settings(None, None), &deployed, &mut console).unwrap();
        assert_eq!(
            names,
            AdoptedNames {
                table: Some(TABLE.to_owned()),
                bucket: Some(BUCKET.to_owned())
            }
        );
        assert_eq!(
            console.lines,
            [
                "stack users adopted table people: keeping it (existing_table is not set)",
                "stack users adopted bucket people-mirror: keeping it (existing_bucket is not set)",
            ]
        );
        // Naming the same ones again is the same.
        let mut console = RecordingConsole::default();
        let again = adoption_names(
            &settings(Some(TABLE), Some(BUCKET)),
            &deployed,
            &mut console,
        )
        .unwrap();
        assert_eq!(again, names);
        assert!(console.lines.is_empty());
    }

    #[test]
    fn naming_another_than_the_stack_adopted_is_refused_naming_both() {
        let deployed = outputs(&[(output::ADOPTED_TABLE, TABLE), (output::BUCKET_NAME, "own")]);
        let message = adoption_names(
            &settings(Some("others"), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "stack users adopted table people, but existing_table names table others: a stack \
             keeps the table it adopted; name people (or nothing) in existing_table, or tear the \
             stack down first (`cargo xtask teardown` leaves people as it is) and deploy again \
             to adopt others"
        );
    }

    #[test]
    fn adopting_instead_of_the_stack_s_own_is_refused_with_the_fix() {
        let deployed = outputs(&[
            (output::TABLE_NAME, "users-userstable-1"),
            (output::BUCKET_NAME, "users-databucket-1"),
        ]);
        let message = adoption_names(
            &settings(Some(TABLE), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "stack users created its own table users-userstable-1, and existing_table names the \
             existing table people: adopting it would remove users-userstable-1 from the stack, \
             and CloudFormation would delete it with its items; tear the stack down first \
             (`cargo xtask teardown`), then deploy with existing_table; to keep \
             users-userstable-1 and its items through the teardown, first deploy once with \
             retain_data_on_teardown = true and without existing_table"
        );
        let message = adoption_names(
            &settings(None, Some(BUCKET)),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with(
                "stack users created its own bucket users-databucket-1, and existing_bucket names \
                 the existing bucket people-mirror"
            ),
            "{message}"
        );
        // The stack's own, named as if it were an existing one, is its own all the same.
        assert!(adoption_names(
            &settings(Some("users-userstable-1"), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .is_err());
    }

    #[test]
    fn adopted_names_are_read_from_the_outputs_and_listed_as_left() {
        let names = adopted_names(&outputs(&[
            (output::ADOPTED_TABLE, TABLE),
            (output::ADOPTED_BUCKET, BUCKET),
            (output::TABLE_NAME, TABLE),
        ]));
        assert_eq!(
            names.left().as_deref(),
            Some("left: table people (its items), bucket people-mirror (its objects)")
        );
        assert_eq!(
            serde_json::to_value(&names).unwrap(),
            serde_json::json!({ "adopted_table": TABLE, "adopted_bucket": BUCKET })
        );
        let none = adopted_names(&outputs(&[(output::TABLE_NAME, TABLE)]));
        assert!(none.is_empty());
        assert_eq!(none.left(), None);
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({ "adopted_table": null, "adopted_bucket": null })
        );
    }
}
