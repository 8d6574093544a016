//! Reconciling the bucket with the table: the table is the truth, and every repair writes from
//! its current state, read consistently, never from old stream records.
//!
//! - `deployed`: what a repair needs from the deployed stack (table, bucket, the function's
//!   settings), read as the function reads them.
//! - `user`: one user's repair, which never undoes a write made while it runs. Whole-table
//!   reconcile, `replay-failures` and `dev` all repair through it.
//!
//! The whole-table reconcile (`cargo xtask reconcile`, [`reconcile`]):
//!
//! - `options`, `share`: what to do, and which part of the table and bucket a `--share` takes.
//! - `scan`, `bucket`, `listing`: reading the table (a parallel, consistent Scan) and the
//!   bucket (ListObjectsV2, object bodies, its default encryption).
//! - `index`: the on-disk index and checkpoint both are read into (redb), so memory stays
//!   bounded and an interrupted run continues.
//! - `etag`, `judge`: comparing bodies by ETag, and judging each user by walking the index.
//! - `run`, `progress`, `report`: the run itself, what it tells while running, and its report
//!   (merged across shares).

pub mod bucket;
pub mod deployed;
pub mod etag;
pub mod index;
pub mod judge;
pub mod listing;
pub mod options;
pub mod progress;
pub mod report;
pub mod run;
pub mod scan;
pub mod share;
pub mod user;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use deployed::{DeployedMirror, DeployedMirrorError};
pub use index::StateError;
pub use options::ReconcileOptions;
pub use progress::{Phase, ReconcileProgress};
pub use report::{Examples, MergeError, ReconcileReport};
pub use run::{default_state_dir, reconcile, reconcile_mirror, ReconcileError};
pub use share::Share;
pub use user::{
    expected_body, DynamoTable, Item, ItemReader, RepairHook, RepairedUser, UserRepairError,
    UserRepairer, UserState,
};
