//! Running the stack on this machine: the embedded AWS emulator, a Lambda Runtime API host
//! that runs the real `bootstrap`, and an event source mapping poller that feeds it.

pub mod batch;
pub mod emulator;
pub mod emulator_front;
pub mod function_host;
pub mod invoke;
pub mod mapping;
pub mod on_failure;
pub mod pipeline;
pub mod poller;
pub mod proxy;
pub mod runtime_api;
pub mod shard_reader;
pub mod stream_event;
