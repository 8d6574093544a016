//! Test helpers: configurations and fixtures; the in-memory bucket and the record builder
//! are the function's own (`usersync_function::testing`).

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use serde_json::Value;
use usersync_function::testing;
pub use usersync_function::testing::{sequence_number, stream_record, MemoryStore};
use usersync_function::{Config, DeleteScope};

/// The function's defaults for bucket `users-data` and `scope`.
pub fn config(scope: DeleteScope) -> Config {
    testing::config("users-data", scope)
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
