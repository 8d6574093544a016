//! 11. A whole-table reconcile with repair over 2,000 users while 200 of them are modified and
//!     100 deleted: the bucket ends up equal to the table. The writes are made deterministically
//!     through the reconcile's `RepairHook`, between a repair's read and its write (the moment a
//!     repair is most exposed to them), and the deployed mapping and function mirror them as
//!     they would any write.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use deployer::reconcile::report::EXIT_IN_STEP;
use deployer::reconcile::RepairHook;
use futures::future::BoxFuture;
use usersync_function::config::DEFAULT_KEY_ATTRIBUTE as KEY_ATTRIBUTE;

use super::{body, reconcile_stack, settings};
use crate::external::delete_keys;
use crate::harness::Backend;
use crate::test_stack::{n, s, user_item};

const USERS: usize = 2000;

/// Modified while the reconcile runs: every tenth user (200).
fn modified(i: usize) -> bool {
    i % 10 == 0
}

/// Deleted while the reconcile runs: every twentieth, offset from the modified ones (100).
fn deleted(i: usize) -> bool {
    i % 20 == 5
}

/// Writes the table between a selected user's repair read and its first write: the repair
/// then writes what it read, which is already old, and must notice and put it right.
struct ConcurrentWrites {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    /// User → the index of the user: modified or deleted as [`modified`] and [`deleted`] say.
    selected: std::collections::HashMap<String, usize>,
    /// Users written so far; each only once, before its repair's first write.
    written: Mutex<HashSet<String>>,
    errors: Mutex<Vec<String>>,
}

impl ConcurrentWrites {
    async fn write(&self, name: &str, i: usize) -> Result<()> {
        let key = AttributeValue::S(name.to_owned());
        if modified(i) {
            self.dynamodb
                .update_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, key)
                .update_expression("SET #plan = :plan, seats = :seats")
                .expression_attribute_names("#plan", "plan")
                .expression_attribute_values(":plan", s("pro"))
                .expression_attribute_values(":seats", n(i + 1))
                .send()
                .await?;
        } else {
            self.dynamodb
                .delete_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, key)
                .send()
                .await?;
        }
        Ok(())
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic elsewhere does not make the sets wrong: they are only ever inserted into.
        mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RepairHook for ConcurrentWrites {
    fn before_write<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(&i) = self.selected.get(name) else {
                return;
            };
            // Only before the first write: the repair's later rounds are its answer to it.
            if !Self::lock(&self.written).insert(name.to_owned()) {
                return;
            }
            if let Err(err) = self.write(name, i).await {
                Self::lock(&self.errors).push(format!("{name}: {err:#}"));
            }
        })
    }
}

pub(super) async fn reconcile_race(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("race")).await?;
    let names: Vec<String> = (0..USERS).map(|i| format!("race-{i:04}")).collect();
    let items = names
        .iter()
        .enumerate()
        .map(|(i, name)| user_item(name, &[("plan", s("free")), ("seats", n(i))]))
        .collect();
    stack.batch_put(items).await?;
    stack.wait_in_step("writing 2,000 users").await?;
    // The drift the reconcile starts from: every object gone, behind the function's back.
    let keys = stack.all_keys().await?;
    delete_keys(&stack.target.s3(), stack.bucket(), &keys).await?;

    let hook = Arc::new(ConcurrentWrites {
        dynamodb: stack.target.dynamodb(),
        table: stack.table().to_owned(),
        selected: names
            .iter()
            .enumerate()
            .filter(|(i, _)| modified(*i) || deleted(*i))
            .map(|(i, name)| (name.clone(), i))
            .collect(),
        written: Mutex::default(),
        errors: Mutex::default(),
    });
    let report = reconcile_stack(&stack, true, Some(Arc::clone(&hook) as _)).await?;
    let errors = ConcurrentWrites::lock(&hook.errors).clone();
    ensure!(errors.is_empty(), "the concurrent writes failed: {errors:?}");
    let written = ConcurrentWrites::lock(&hook.written).len();
    ensure!(
        written == 300,
        "expected 300 users written during their repair, {written} were"
    );
    ensure!(
        report.missing == USERS as u64
            && report.repaired == USERS as u64
            && report.failed == 0
            && report.exit_code() == EXIT_IN_STEP,
        "expected {USERS} users missing and repaired, got exit code {}: {}",
        report.exit_code(),
        report.summary()
    );

    stack
        .wait_in_step("the reconcile and the 300 writes during it")
        .await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == USERS - 100,
        "expected {} objects, found {}",
        USERS - 100,
        objects.len()
    );
    for (i, name) in names.iter().enumerate() {
        let expected = if deleted(i) {
            None
        } else if modified(i) {
            Some(body(name, "pro", i as u32 + 1))
        } else {
            Some(body(name, "free", i as u32))
        };
        let key = format!("{name}/userdata");
        ensure!(
            objects.get(&key) == expected.as_ref(),
            "{key} is {:?}, expected {expected:?}",
            objects.get(&key)
        );
    }
    stack.teardown().await?;
    Ok(())
}
