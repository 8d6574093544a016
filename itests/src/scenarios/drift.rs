//! 10. Drift made behind the function's back (direct S3 calls): the reconcile tells each kind
//!     apart, the repair fixes what is the mirror's and leaves the keys that are no user's, and
//!     a second run finds nothing to do.

use anyhow::{ensure, Result};
use deployer::reconcile::report::{EXIT_DRIFT, EXIT_IN_STEP};
use serde_json::json;

use super::{free_users, reconcile_options, reconcile_stack, settings};
use crate::external::delete_keys;
use crate::harness::Backend;

const USERS: usize = 60;

/// Keys that are no user's under the key rule with `DELETE_SCOPE=object` (see
/// `deployer::reconcile::judge`): no `/` after the (empty) key prefix, twice, and a key under a
/// user's prefix other than `<user>/userdata`. (A segment that does not decode would be foreign
/// to the reconcile too, but the suite's mirror check counts every `*/userdata` as a user's.)
const FOREIGN: [&str; 3] = ["README.txt", "no-slash-key", "drift-59/other.txt"];

pub(super) async fn drift(backend: &Backend) -> Result<()> {
    let stack = backend.deploy(settings("drift")).await?;
    let (names, items) = free_users("drift", USERS, 2);
    stack.batch_put(items).await?;
    stack.wait_in_step("writing 60 users").await?;

    let key = |name: &str| format!("{name}/userdata");
    let deleted: Vec<String> = names[..10].iter().map(|name| key(name)).collect();
    delete_keys(&stack.target.s3(), stack.bucket(), &deleted).await?;
    for name in &names[10..15] {
        let tampered = json!({"name": name, "plan": "tampered"});
        stack.put_object(&key(name), &tampered.to_string()).await?;
    }
    for i in 0..7 {
        let ghost = format!("ghost-{i}");
        let orphan = json!({"name": ghost, "plan": "free"});
        stack.put_object(&key(&ghost), &orphan.to_string()).await?;
    }
    for foreign in FOREIGN {
        stack.put_object(foreign, "not a user's").await?;
    }

    let found = reconcile_stack(&stack, reconcile_options(false)).await?;
    ensure!(
        (
            found.table_items,
            found.missing,
            found.stale,
            found.orphaned,
            found.foreign
        ) == (USERS as u64, 10, 5, 7, 3)
            && found.drifted_users == 22
            && found.exit_code() == EXIT_DRIFT,
        "expected 10 missing, 5 stale, 7 orphaned and 3 foreign, exit code {EXIT_DRIFT}; got \
         exit code {}: {}",
        found.exit_code(),
        found.summary()
    );

    let repaired = reconcile_stack(&stack, reconcile_options(true)).await?;
    ensure!(
        repaired.repaired == 22 && repaired.failed == 0 && repaired.exit_code() == EXIT_IN_STEP,
        "expected 22 users repaired, got exit code {}: {}",
        repaired.exit_code(),
        repaired.summary()
    );
    let keys = stack.all_keys().await?;
    for foreign in FOREIGN {
        ensure!(
            keys.iter().any(|k| k == foreign),
            "the repair removed the foreign key {foreign}"
        );
    }
    // Immediately in step: the function had nothing to do with any of it.
    stack.wait_in_step("the repair").await?;
    ensure!(
        keys.len() == USERS + FOREIGN.len(),
        "expected {USERS} user objects and {} foreign keys, found {} keys",
        FOREIGN.len(),
        keys.len()
    );

    let again = reconcile_stack(&stack, reconcile_options(false)).await?;
    ensure!(
        (
            again.missing,
            again.stale,
            again.orphaned,
            again.drifted_users,
            again.repaired
        ) == (0, 0, 0, 0, 0)
            && again.foreign == 3
            && again.exit_code() == EXIT_IN_STEP,
        "a second run should find nothing to do (only the 3 foreign keys, never touched); got \
         exit code {}: {}",
        again.exit_code(),
        again.summary()
    );
    stack.teardown().await?;
    Ok(())
}
