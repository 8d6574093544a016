//! Running the stack on this machine: the embedded AWS emulator, a Lambda Runtime API host
//! that runs the real `bootstrap`, and an event source mapping poller that feeds it.

pub mod emulator;
pub mod function_host;
pub mod invoke;
pub mod runtime_api;
