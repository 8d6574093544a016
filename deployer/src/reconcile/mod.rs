//! Reconciling the bucket with the table: the table is the truth, and every repair writes from
//! its current state, read consistently, never from old stream records.
//!
//! - `deployed`: what a repair needs from the deployed stack (table, bucket, the function's
//!   settings), read as the function reads them.
//! - `user`: one user's repair, which never undoes a write made while it runs. Whole-table
//!   reconcile, `replay-failures` and `dev` all repair through it.

pub mod deployed;
pub mod user;

pub use deployed::{DeployedMirror, DeployedMirrorError};
pub use user::{
    expected_body, DynamoTable, Item, ItemReader, RepairHook, RepairedUser, UserRepairError,
    UserRepairer, UserState,
};
