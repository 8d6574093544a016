//! Repairing one batch's users from the table's current state, never from the batch's old
//! records: under `DELETE_SCOPE=prefix`, a removed user's objects older than the REMOVE go
//! first (`prefix_cleanup`), then the user's repair (`reconcile::user`) writes what the table
//! holds now. Users are repaired concurrently, up to the function's `MAX_CONCURRENCY`.

use futures::stream::{self, StreamExt};
use usersync_function::DeleteScope;

use super::context::Context;
use super::prefix_cleanup::delete_written_before;
use super::users::BatchUser;
use crate::errors::chain;

/// What repairing a batch's users did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct UsersRepaired {
    pub(super) repaired: usize,
    pub(super) prefix_objects_deleted: usize,
    /// One line per user that could not be repaired.
    pub(super) failures: Vec<String>,
}

/// Repairs `users`.
pub(super) async fn repair_users(context: &Context, users: &[BatchUser]) -> UsersRepaired {
    // The futures are made first (none runs until polled): mapping inside the stream would
    // make a closure over `&BatchUser` that rustc cannot prove general enough for the whole
    // replay's future to be `Send` (rust-lang/rust#102211), and callers spawn it.
    let repairs: Vec<_> = users
        .iter()
        .map(|user| repair_user(context, user))
        .collect();
    let results: Vec<Result<usize, String>> = stream::iter(repairs)
        .buffered(context.config.max_concurrency.get())
        .collect()
        .await;
    let mut done = UsersRepaired::default();
    for result in results {
        match result {
            Ok(deleted) => {
                done.repaired += 1;
                done.prefix_objects_deleted += deleted;
            }
            Err(failure) => done.failures.push(failure),
        }
    }
    done
}

/// Repairs one user; returns how many objects older than its REMOVE were deleted.
async fn repair_user(context: &Context, user: &BatchUser) -> Result<usize, String> {
    let repairer = context.repairer();
    let failed = |err: &dyn std::error::Error| format!("user {:?}: {}", user.name, chain(err));
    let mut deleted = 0;
    if context.config.delete_scope == DeleteScope::Prefix && user.removed {
        let Some(removed_at) = user.removed_at_epoch_s else {
            return Err(format!(
                "user {:?}: its REMOVE has no ApproximateCreationDateTime, so the objects under its prefix from before it cannot be told from later ones",
                user.name
            ));
        };
        let keys = repairer.keys(&user.name).map_err(|err| failed(&err))?;
        // Before the repair: it then puts the user's current object back if the user exists.
        let cleaned = delete_written_before(
            &context.s3,
            &context.config.bucket,
            &keys.prefix,
            removed_at,
        )
        .await
        .map_err(|err| failed(&err))?;
        deleted = cleaned.deleted;
    }
    repairer
        .repair(&user.name)
        .await
        .map_err(|err| failed(&err))?;
    Ok(deleted)
}
