//! The end-to-end scenarios: each deploys its own stack on the selected backend, writes users
//! through DynamoDB and asserts on the bucket, waiting on the real pipeline with bounded,
//! polled waits.
//!
//! Scenarios 1 to 8 are here (8's alarm checks in `alarms`); 9 to 12, on adopting,
//! reconciling and replaying, each in a module of their own.

mod adopt;
mod alarms;
mod drift;
mod race;
mod replay;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use deployer::reconcile::{self, ReconcileOptions, ReconcileReport};
use deployer::settings::{DeleteScope, StackSettings};
use deployer::stack::{self, TeardownOutcome};
use serde_json::{json, Value};

use crate::harness::Backend;
use crate::test_stack::{n, s, user_item, TestStack};

/// A scenario's body, running against a backend.
pub type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A scenario: a name and its body.
pub struct Scenario {
    pub name: &'static str,
    pub run: for<'a> fn(&'a Backend) -> ScenarioFuture<'a>,
}

/// Every scenario, in the order of the suite's specification.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "e2e_01_insert_25_users",
            run: |b| Box::pin(insert_users(b)),
        },
        Scenario {
            name: "e2e_02_delete_10_of_25",
            run: |b| Box::pin(delete_some_users(b)),
        },
        Scenario {
            name: "e2e_03_modify_a_user",
            run: |b| Box::pin(modify_a_user(b)),
        },
        Scenario {
            name: "e2e_04_insert_delete_insert_50_users",
            run: |b| Box::pin(insert_delete_insert(b)),
        },
        Scenario {
            name: "e2e_05_names_that_stress_the_key_rule",
            run: |b| Box::pin(stressful_names(b)),
        },
        Scenario {
            name: "e2e_06_batch_write_2000_users",
            run: |b| Box::pin(batch_write_2000(b)),
        },
        Scenario {
            name: "e2e_07_prefix_delete_scope",
            run: |b| Box::pin(prefix_delete(b)),
        },
        Scenario {
            name: "e2e_08_alarms_in_status_then_teardown_leaves_nothing",
            run: |b| Box::pin(teardown_leaves_nothing(b)),
        },
        Scenario {
            name: "e2e_09_adopt_existing_table",
            run: |b| Box::pin(adopt::adopt_existing_table(b)),
        },
        Scenario {
            name: "e2e_10_drift",
            run: |b| Box::pin(drift::drift(b)),
        },
        Scenario {
            name: "e2e_11_reconcile_race",
            run: |b| Box::pin(race::reconcile_race(b)),
        },
        Scenario {
            name: "e2e_12_replay_prefix_scope",
            run: |b| Box::pin(replay::replay_prefix_scope(b)),
        },
    ]
}

fn settings(label: &str) -> StackSettings {
    StackSettings {
        stack_name: crate::test_stack::unique_stack_name(label),
        ..StackSettings::default()
    }
}

/// The JSON body the function writes for user `name` with a plan and a number.
/// `count` users `<prefix>-<i>` (`i` zero-padded to `width` digits) on the free plan with `i`
/// seats: their names, and their items.
fn free_users(
    prefix: &str,
    count: usize,
    width: usize,
) -> (
    Vec<String>,
    Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) {
    let names: Vec<String> = (0..count)
        .map(|i| format!("{prefix}-{i:0width$}"))
        .collect();
    let items = names
        .iter()
        .enumerate()
        .map(|(i, name)| user_item(name, &[("plan", s("free")), ("seats", n(i))]))
        .collect();
    (names, items)
}

fn body(name: &str, plan: &str, seats: u32) -> Value {
    json!({"name": name, "plan": plan, "seats": seats})
}

/// A reconcile that only compares (`repair: false`) or also repairs.
fn reconcile_options(repair: bool) -> ReconcileOptions {
    ReconcileOptions {
        repair,
        ..ReconcileOptions::default()
    }
}

/// Where the reconciles of stack `stack_name` keep their checkpoint:
/// `target/usersync/itests/reconcile/<stack>`, next to the function logs.
fn reconcile_dir(stack_name: &str) -> PathBuf {
    deployer::project::state_dir()
        .join("itests")
        .join("reconcile")
        .join(stack_name)
}

/// Runs the whole-table reconcile of `stack` as `options` say, afresh, as `cargo xtask
/// reconcile` would; prints its summary.
async fn reconcile_stack(stack: &TestStack, options: ReconcileOptions) -> Result<ReconcileReport> {
    let stack_name = &stack.settings.stack_name;
    let options = ReconcileOptions {
        // Every run judges the bucket as it is now, never an earlier run's checkpoint.
        restart: true,
        state_dir: Some(reconcile_dir(stack_name)),
        ..options
    };
    let report = reconcile::reconcile(&stack.target, stack_name, &options, &mut |_| {})
        .await
        .with_context(|| format!("the reconcile of stack {stack_name} failed"))?;
    eprintln!("{stack_name}: reconcile: {}", report.summary());
    let _ = std::fs::remove_dir_all(reconcile_dir(stack_name));
    Ok(report)
}

async fn insert_25(stack: &TestStack) -> Result<Vec<String>> {
    let names: Vec<String> = (0..25).map(|i| format!("user-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        stack
            .put_user(name, &[("plan", s("free")), ("seats", n(i))])
            .await?;
    }
    Ok(names)
}

/// 1. Insert 25 users → 25 objects at `<name>/userdata` whose bodies equal the items.
async fn insert_users(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("insert")).await?;
    let names = insert_25(&stack).await?;
    stack.wait_in_step("inserting 25 users").await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == 25,
        "expected 25 objects, found {}",
        objects.len()
    );
    for (i, name) in names.iter().enumerate() {
        let key = format!("{name}/userdata");
        ensure!(
            objects.get(&key) == Some(&body(name, "free", i as u32)),
            "object {key} is {:?}",
            objects.get(&key)
        );
    }
    stack.teardown().await?;
    Ok(())
}

/// 2. Delete 10 of them → exactly those objects gone, the other 15 untouched.
async fn delete_some_users(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("delete")).await?;
    let names = insert_25(&stack).await?;
    stack.wait_in_step("inserting 25 users").await?;
    let before = stack.objects().await?;
    let (deleted, kept) = names.split_at(10);
    for name in deleted {
        stack.delete_user(name).await?;
    }
    stack.wait_in_step("deleting 10 users").await?;
    let after = stack.objects().await?;
    ensure!(
        after.len() == 15,
        "expected 15 objects, found {}",
        after.len()
    );
    for name in deleted {
        ensure!(
            !after.contains_key(&format!("{name}/userdata")),
            "{name} was not deleted"
        );
    }
    for name in kept {
        let key = format!("{name}/userdata");
        ensure!(after.get(&key) == before.get(&key), "{key} changed");
    }
    stack.teardown().await?;
    Ok(())
}

/// 3. Modify a user → the object's body follows.
async fn modify_a_user(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("modify")).await?;
    stack
        .put_user("alice", &[("plan", s("free")), ("seats", n(1))])
        .await?;
    stack.wait_in_step("inserting alice").await?;
    stack
        .put_user("alice", &[("plan", s("pro")), ("seats", n(10))])
        .await?;
    stack.wait_in_step("upgrading alice").await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.get("alice/userdata") == Some(&body("alice", "pro", 10)),
        "alice's object is {:?}",
        objects.get("alice/userdata")
    );
    stack.teardown().await?;
    Ok(())
}

/// 4. The same user inserted, deleted and inserted again in quick succession, for 50 users
///    at once → every final state correct (the Node.js function left orphans and holes here).
async fn insert_delete_insert(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("churn")).await?;
    let names: Vec<String> = (0..50).map(|i| format!("churn-{i:02}")).collect();
    let writes = names.iter().map(|name| {
        let stack = &stack;
        async move {
            stack
                .put_user(name, &[("plan", s("free")), ("seats", n(1))])
                .await?;
            stack.delete_user(name).await?;
            stack
                .put_user(name, &[("plan", s("pro")), ("seats", n(2))])
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result?;
    }
    // Half of them are then removed for good, so both end states are exercised.
    for name in &names[..25] {
        stack.delete_user(name).await?;
    }
    stack.wait_in_step("churning 50 users").await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == 25,
        "expected 25 objects, found {}",
        objects.len()
    );
    for name in &names[25..] {
        let key = format!("{name}/userdata");
        ensure!(
            objects.get(&key) == Some(&body(name, "pro", 2)),
            "{key} is {:?}",
            objects.get(&key)
        );
    }
    stack.teardown().await?;
    Ok(())
}

/// 5. Names that stress the key rule, and one whose key would be over S3's 1,024 bytes: that
///    record is skipped and the records after it are still applied.
async fn stressful_names(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("names")).await?;
    let thousand = "ü".repeat(500); // 1,000 bytes
    let cases: Vec<(String, String)> = vec![
        ("a/b".into(), "a%2Fb/userdata".into()),
        ("..".into(), "%2E%2E/userdata".into()),
        (".".into(), "%2E/userdata".into()),
        ("../escape".into(), "..%2Fescape/userdata".into()),
        ("with spaces".into(), "with spaces/userdata".into()),
        ("100%".into(), "100%25/userdata".into()),
        ("🦀 crab".into(), "🦀 crab/userdata".into()),
        (thousand.clone(), format!("{thousand}/userdata")),
    ];
    let too_long = "x".repeat(1100);
    stack.put_user(&too_long, &[("plan", s("free"))]).await?;
    for (name, _) in &cases {
        stack.put_user(name, &[("plan", s("pro"))]).await?;
    }
    stack.wait_in_step("writing stressful names").await?;
    let objects = stack.objects().await?;
    let expected: BTreeMap<String, Value> = cases
        .iter()
        .map(|(name, key)| (key.clone(), json!({"name": name, "plan": "pro"})))
        .collect();
    ensure!(
        objects == expected,
        "objects {:?}, expected {:?}",
        objects.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let keys = stack.all_keys().await?;
    ensure!(
        !keys.iter().any(|k| k.starts_with("xxxx")),
        "the over-long name got an object"
    );
    stack.teardown().await?;
    Ok(())
}

/// 6. 2,000 users written with BatchWriteItem → all objects present; reports the time from
///    the last write to the last object.
async fn batch_write_2000(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("bulk")).await?;
    let items = (0..2000)
        .map(|i| {
            user_item(
                &format!("bulk-{i:04}"),
                &[("plan", s("free")), ("seats", n(i))],
            )
        })
        .collect();
    stack.batch_put(items).await?;
    let written = Instant::now();
    stack.wait_in_step("writing 2,000 users").await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == 2000,
        "expected 2000 objects, found {}",
        objects.len()
    );
    eprintln!(
        "e2e_06: last of 2,000 objects visible {} ms after the last write (on the {} backend)",
        written.elapsed().as_millis(),
        backend.kind()
    );
    stack.teardown().await?;
    Ok(())
}

/// 7. `DELETE_SCOPE=prefix`: extra objects under a user's prefix go when the user goes.
async fn prefix_delete(backend: &Backend) -> Result<()> {
    let mut settings = settings("prefix");
    settings.delete_scope = DeleteScope::Prefix;
    let stack = backend.deploy(settings).await?;
    stack.put_user("alice", &[("plan", s("pro"))]).await?;
    stack.put_user("alicia", &[("plan", s("pro"))]).await?;
    stack.wait_in_step("inserting alice and alicia").await?;
    for extra in ["alice/avatar.png", "alice/exports/2026.csv"] {
        stack.put_object(extra, "extra").await?;
    }
    stack.delete_user("alice").await?;
    stack
        .wait_for("alice's prefix emptied", || async {
            Ok(!stack
                .all_keys()
                .await?
                .iter()
                .any(|k| k.starts_with("alice/")))
        })
        .await?;
    let keys = stack.all_keys().await?;
    ensure!(
        keys == ["alicia/userdata"],
        "only alicia's object should be left (a prefix delete must not reach a longer name): {keys:?}"
    );
    stack.teardown().await?;
    Ok(())
}

/// 8. The stack's alarms are in CloudWatch and in `status`; then the teardown leaves no stack,
///    no bucket, no table, no alarm.
async fn teardown_leaves_nothing(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("teardown")).await?;
    stack.put_user("alice", &[("plan", s("pro"))]).await?;
    stack.wait_in_step("inserting alice").await?;
    alarms::alarms_in_cloudwatch_and_status(backend, &stack).await?;
    let target = stack.target.clone();
    let (name, table, bucket) = (
        stack.settings.stack_name.clone(),
        stack.table().to_owned(),
        stack.bucket().to_owned(),
    );
    let outcome = stack.teardown().await?;
    ensure!(
        matches!(
            outcome,
            TeardownOutcome::TornDown {
                data_retained: false,
                ..
            }
        ),
        "teardown said {outcome:?}"
    );
    ensure!(
        stack::status(&target, &name).await?.is_none(),
        "stack {name} still exists"
    );
    let table_gone = target
        .dynamodb()
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .err()
        .and_then(|e| {
            e.into_service_error()
                .is_resource_not_found_exception()
                .then_some(())
        })
        .is_some();
    ensure!(table_gone, "table {table} still exists");
    let bucket_gone = target
        .s3()
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .err()
        .map(|e| e.into_service_error().is_not_found())
        .unwrap_or(false);
    ensure!(bucket_gone, "bucket {bucket} still exists");
    alarms::no_alarm_left(&target, &name).await?;
    Ok(())
}
