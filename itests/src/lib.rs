//! Shared harness of usersync's end-to-end and integration tests.

pub mod backend;
pub mod emulator;
pub mod external;
pub mod faults;
pub mod harness;
pub mod scenarios;
pub mod test_stack;
