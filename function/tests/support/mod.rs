//! Test helpers: configurations and fixtures; the in-memory bucket and the record builder
//! are the function's own (`usersync_function::testing`).

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use serde_json::Value;
pub use usersync_function::testing::{sequence_number, stream_record, MemoryStore};
use usersync_function::{Config, DeleteScope};

pub fn config(scope: DeleteScope) -> Config {
    let mut config =
        Config::from_lookup(|name| (name == "BUCKET_NAME").then(|| "users-data".to_owned()))
            .unwrap();
    config.delete_scope = scope;
    config
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
