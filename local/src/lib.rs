//! The usersync stack on this machine, above the deploy core: the embedded AWS emulator (run as
//! a process, never linked), a Lambda Runtime API host that runs the real `bootstrap`, an event
//! source mapping poller that feeds it from the table's stream, and `cargo xtask dev`. It owns
//! `--local`: the core's `Target` only holds an address.

pub mod dev;
pub mod emulator;
pub mod lambda_check;
pub mod mapping;
pub mod runtime;
pub mod target;
