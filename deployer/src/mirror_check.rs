//! Does the bucket mirror the table? Reads both and compares them under the function's own
//! rules (its key rule, its item-to-JSON conversion) and its deployed settings (the key
//! attribute, the key prefix and the object name: a [`KeyLayout`]), so the answer means what a
//! user means by "in step".

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use serde_json::Value;
use usersync_function::image::item_to_json;
use usersync_function::key::user_keys;
use usersync_function::Config;

use crate::stack::StackError;
use crate::target::Target;

/// Objects read at once when comparing.
const READ_CONCURRENCY: usize = 32;

/// Which attribute names a user and where the function puts each user's object: the deployed
/// function's settings (an adopted table may name its users by another attribute than the
/// default `name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// The table's hash key, which names the user (the function's `KEY_ATTRIBUTE`).
    pub key_attribute: String,
    pub key_prefix: String,
    pub object_name: String,
}

impl From<&Config> for KeyLayout {
    /// The layout of a function configured so (as `reconcile::deployed::function_config` reads
    /// the deployed one).
    fn from(config: &Config) -> Self {
        Self {
            key_attribute: config.key_attribute.clone(),
            key_prefix: config.key_prefix.clone(),
            object_name: config.object_name.clone(),
        }
    }
}

impl KeyLayout {
    /// The key of `name`'s object; `None` for a name whose key would be over S3's limit (the
    /// function skips those).
    pub fn object_key(&self, name: &str) -> Option<String> {
        user_keys(&self.key_prefix, name, &self.object_name)
            .ok()
            .map(|keys| keys.object)
    }
}

/// The table's users as the bucket should hold them: object key → JSON body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpectedObjects(pub BTreeMap<String, Value>);

/// How the bucket differs from the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MirrorDiff {
    pub users: usize,
    pub objects: usize,
    /// Users with no object.
    pub missing: Vec<String>,
    /// User objects (`…/<object name>`) with no user: orphans.
    pub orphaned: Vec<String>,
    /// Objects whose body is not the user's item.
    pub stale: Vec<String>,
}

impl MirrorDiff {
    pub fn in_step(&self) -> bool {
        self.missing.is_empty() && self.orphaned.is_empty() && self.stale.is_empty()
    }
}

impl std::fmt::Display for MirrorDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} users, {} objects", self.users, self.objects)?;
        let sample = |keys: &[String]| {
            let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
            let more = keys.len().saturating_sub(shown.len());
            if more > 0 {
                format!("{shown:?} and {more} more")
            } else {
                format!("{shown:?}")
            }
        };
        for (label, keys) in [
            ("missing", &self.missing),
            ("orphaned", &self.orphaned),
            ("stale", &self.stale),
        ] {
            if !keys.is_empty() {
                write!(f, "; {} {label}: {}", keys.len(), sample(keys))?;
            }
        }
        Ok(())
    }
}

/// Reads every item of `table` (a paginated Scan, strongly consistent).
pub async fn scan_users(
    target: &Target,
    table: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, StackError> {
    let client = target.dynamodb();
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|err| crate::stack::aws_error(format!("scan table {table}"), err))?;
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    Ok(items)
}

/// The objects the function should have written for `items`.
pub fn expected_objects(
    items: &[HashMap<String, AttributeValue>],
    layout: &KeyLayout,
) -> ExpectedObjects {
    let mut objects = BTreeMap::new();
    for item in items {
        let Some(AttributeValue::S(name)) = item.get(&layout.key_attribute) else {
            continue;
        };
        let Some(key) = layout.object_key(name) else {
            continue;
        };
        let image: HashMap<String, serde_dynamo::AttributeValue> = item
            .iter()
            .map(|(k, v)| (k.clone(), serde_dynamo::AttributeValue::from(v.clone())))
            .collect();
        objects.insert(key, item_to_json(&image));
    }
    ExpectedObjects(objects)
}

/// Reads every user object in `bucket` (keys ending in `/<object name>` under the prefix)
/// with its body parsed as JSON (`Value::Null` when it is not JSON).
pub async fn user_objects(
    target: &Target,
    bucket: &str,
    layout: &KeyLayout,
) -> Result<BTreeMap<String, Value>, StackError> {
    let client = target.s3();
    let suffix = format!("/{}", layout.object_name);
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&layout.key_prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|err| crate::stack::aws_error(format!("list bucket {bucket}"), err))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| k.ends_with(&suffix))
                .map(str::to_owned),
        );
    }
    // Read with bounded concurrency: a bucket may hold thousands of users.
    let bodies: Vec<(String, Result<Option<Value>, StackError>)> =
        futures::stream::iter(keys.into_iter().map(|key| {
            let client = client.clone();
            async move {
                let body = read_object(&client, bucket, &key).await;
                (key, body)
            }
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut objects = BTreeMap::new();
    for (key, body) in bodies {
        // `None`: deleted between the listing and the read, so it is not there any more.
        if let Some(body) = body? {
            objects.insert(key, body);
        }
    }
    Ok(objects)
}

/// Compares what the bucket holds with what it should hold.
/// Reads one object's body as JSON (`Null` when it is not JSON); `None` when it does not exist.
async fn read_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Value>, StackError> {
    let object = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(err) => return Err(crate::stack::aws_error(format!("read object {key}"), err)),
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|err| StackError::Aws {
            action: format!("read object {key}"),
            message: err.to_string(),
        })?
        .into_bytes();
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

pub fn diff(expected: &ExpectedObjects, actual: &BTreeMap<String, Value>) -> MirrorDiff {
    let mut report = MirrorDiff {
        users: expected.0.len(),
        objects: actual.len(),
        ..MirrorDiff::default()
    };
    for (key, body) in &expected.0 {
        match actual.get(key) {
            None => report.missing.push(key.clone()),
            Some(found) if found != body => report.stale.push(key.clone()),
            Some(_) => {}
        }
    }
    report.orphaned = actual
        .keys()
        .filter(|key| !expected.0.contains_key(*key))
        .cloned()
        .collect();
    report
}

/// Reads the table and the bucket once and compares them.
pub async fn check(
    target: &Target,
    table: &str,
    bucket: &str,
    layout: &KeyLayout,
) -> Result<MirrorDiff, StackError> {
    let items = scan_users(target, table).await?;
    let expected = expected_objects(&items, layout);
    let actual = user_objects(target, bucket, layout).await?;
    Ok(diff(&expected, &actual))
}

/// Compares until the bucket is in step or `timeout` passes, polling every `interval`;
/// returns the last comparison and whether it was in step.
pub async fn wait_until_in_step(
    target: &Target,
    table: &str,
    bucket: &str,
    layout: &KeyLayout,
    timeout: Duration,
    interval: Duration,
) -> Result<(MirrorDiff, bool), StackError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = check(target, table, bucket, layout).await?;
        if report.in_step() {
            return Ok((report, true));
        }
        if Instant::now() >= deadline {
            return Ok((report, false));
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout() -> KeyLayout {
        KeyLayout {
            key_attribute: "name".into(),
            key_prefix: String::new(),
            object_name: "userdata".into(),
        }
    }

    fn user(name: &str, plan: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("name".to_owned(), AttributeValue::S(name.into())),
            ("plan".to_owned(), AttributeValue::S(plan.into())),
            ("seats".to_owned(), AttributeValue::N("3".into())),
        ])
    }

    #[test]
    fn expects_the_functions_keys_and_bodies() {
        let expected = expected_objects(&[user("alice", "pro"), user("a/b", "free")], &layout());
        assert_eq!(
            expected.0,
            BTreeMap::from([
                (
                    "a%2Fb/userdata".to_owned(),
                    json!({"name": "a/b", "plan": "free", "seats": 3})
                ),
                (
                    "alice/userdata".to_owned(),
                    json!({"name": "alice", "plan": "pro", "seats": 3})
                ),
            ])
        );
    }

    #[test]
    fn users_are_named_by_the_deployed_key_attribute() {
        let config = Config::from_lookup(|name| match name {
            "BUCKET_NAME" => Some("mirror".to_owned()),
            "KEY_ATTRIBUTE" => Some("id".to_owned()),
            "KEY_PREFIX" => Some("users/".to_owned()),
            _ => None,
        })
        .unwrap();
        let layout = KeyLayout::from(&config);
        assert_eq!(layout.key_attribute, "id");
        let by_id = HashMap::from([
            ("id".to_owned(), AttributeValue::S("u-1".into())),
            ("name".to_owned(), AttributeValue::S("alice".into())),
        ]);
        // Named only by `name`: not a user of this table's layout.
        let expected = expected_objects(&[by_id, user("bob", "pro")], &layout);
        assert_eq!(
            expected.0,
            BTreeMap::from([(
                "users/u-1/userdata".to_owned(),
                json!({"id": "u-1", "name": "alice"})
            )])
        );
    }

    #[test]
    fn a_name_too_long_for_a_key_expects_no_object() {
        let long = "x".repeat(1100);
        assert!(expected_objects(&[user(&long, "pro")], &layout())
            .0
            .is_empty());
    }

    #[test]
    fn reports_missing_orphaned_and_stale_objects() {
        let expected = expected_objects(&[user("alice", "pro"), user("bob", "pro")], &layout());
        let actual = BTreeMap::from([
            (
                "alice/userdata".to_owned(),
                json!({"name": "alice", "plan": "free", "seats": 3}),
            ),
            ("carol/userdata".to_owned(), json!({"name": "carol"})),
        ]);
        let report = diff(&expected, &actual);
        assert!(!report.in_step());
        assert_eq!(report.missing, ["bob/userdata"]);
        assert_eq!(report.orphaned, ["carol/userdata"]);
        assert_eq!(report.stale, ["alice/userdata"]);
        assert_eq!(
            report.to_string(),
            "2 users, 2 objects; 1 missing: [\"bob/userdata\"]; 1 orphaned: [\"carol/userdata\"]; 1 stale: [\"alice/userdata\"]"
        );
        let in_step = diff(&expected, &expected.0.clone());
        assert!(in_step.in_step(), "{in_step}");
    }
}
