//! Shared harness of usersync's end-to-end and integration tests.

pub mod emulator;
pub mod records;
