//! 9. A stack that adopts an existing table of 500 users and an existing bucket: the reconcile
//!    finds the 500 users the stream never carried and repairs them, the stream then drives the
//!    function as on a stack's own table, and the teardown leaves the table and the bucket with
//!    their contents.

use anyhow::{ensure, Result};
use deployer::reconcile::report::{EXIT_DRIFT, EXIT_IN_STEP};
use deployer::settings::StackSettings;
use deployer::stack::{self, TeardownOutcome};
use deployer::target::Target;

use super::{body, free_users, reconcile_options, reconcile_stack};
use crate::emulator::REGION;
use crate::external::External;
use crate::harness::Backend;
use crate::test_stack::{n, s, unique_stack_name};

const USERS: usize = 500;

pub(super) async fn adopt_existing_table(backend: &Backend) -> Result<()> {
    let stack_name = unique_stack_name("adopt");
    let external = External::new(
        Target::for_endpoint(backend.endpoint_url(), REGION),
        format!("{stack_name}-users"),
        format!("{stack_name}-bucket"),
    );
    external.create_table().await?;
    external.create_bucket().await?;
    let (names, items) = free_users("adopted", USERS, 3);
    external.batch_put(items).await?;
    external.enable_stream().await?;

    let stack = backend
        .deploy(StackSettings {
            stack_name: stack_name.clone(),
            existing_table: Some(external.table.clone()),
            existing_bucket: Some(external.bucket.clone()),
            ..StackSettings::default()
        })
        .await?;
    ensure!(
        stack.table() == external.table && stack.bucket() == external.bucket,
        "the stack mirrors table {} into bucket {}, not the adopted ones",
        stack.table(),
        stack.bucket()
    );

    // Drift found without repair is exit code 3 (the issue's own precision over its "exits 1").
    let found = reconcile_stack(&stack, reconcile_options(false)).await?;
    ensure!(
        (
            found.table_items,
            found.objects,
            found.missing,
            found.stale,
            found.orphaned
        ) == (USERS as u64, 0, USERS as u64, 0, 0)
            && found.foreign == 0
            && found.exit_code() == EXIT_DRIFT,
        "expected {USERS} users missing and exit code {EXIT_DRIFT}, got exit code {}: {}",
        found.exit_code(),
        found.summary()
    );
    let repaired = reconcile_stack(&stack, reconcile_options(true)).await?;
    ensure!(
        repaired.missing == USERS as u64
            && repaired.repaired == USERS as u64
            && repaired.failed == 0
            && repaired.exit_code() == EXIT_IN_STEP,
        "expected {USERS} users repaired, got exit code {}: {}",
        repaired.exit_code(),
        repaired.summary()
    );
    stack.wait_in_step("the repair").await?;

    // The stream drives the function from here on: 10 inserted, 10 updated, 10 deleted.
    for i in 0..10 {
        stack
            .put_user(
                &format!("joined-{i}"),
                &[("plan", s("free")), ("seats", n(1))],
            )
            .await?;
        stack
            .put_user(&names[i], &[("plan", s("pro")), ("seats", n(100 + i))])
            .await?;
        stack.delete_user(&names[USERS - 1 - i]).await?;
    }
    stack
        .wait_in_step("10 inserts, updates and deletes")
        .await?;
    let objects = stack.objects().await?;
    ensure!(
        objects.len() == USERS,
        "expected {USERS} objects, found {}",
        objects.len()
    );
    for i in 0..10 {
        let (joined, updated) = (format!("joined-{i}"), &names[i]);
        ensure!(
            objects.get(&format!("{joined}/userdata")) == Some(&body(&joined, "free", 1))
                && objects.get(&format!("{updated}/userdata"))
                    == Some(&body(updated, "pro", 100 + i as u32))
                && !objects.contains_key(&format!("{}/userdata", names[USERS - 1 - i])),
            "user {i} of the inserted, updated and deleted ones is not mirrored"
        );
    }

    let report = stack.teardown_report().await?;
    ensure!(
        report.adopted.table.as_deref() == Some(external.table.as_str())
            && report.adopted.bucket.as_deref() == Some(external.bucket.as_str()),
        "the teardown names {:?} as adopted",
        report.adopted
    );
    ensure!(
        matches!(
            report.outcome,
            TeardownOutcome::TornDown {
                emptied_objects: 0,
                ..
            }
        ),
        "the teardown said {:?}: an adopted bucket is never emptied",
        report.outcome
    );
    ensure!(
        stack::status(&external.target, &stack_name)
            .await?
            .is_none(),
        "stack {stack_name} still exists"
    );
    let (items, keys) = (external.count_items().await?, external.bucket_keys().await?);
    ensure!(
        items == USERS && keys.len() == USERS,
        "after the teardown table {} holds {items} items and bucket {} {} objects; expected \
         {USERS} each",
        external.table,
        external.bucket,
        keys.len()
    );
    external.remove().await
}
