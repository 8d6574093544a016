//! What the function's and the deployer's tests, the end-to-end harness and the fuzz targets
//! share: an in-memory bucket, stream records in the shape Lambda delivers them, and a
//! configuration with the function's defaults.

pub mod config;
pub mod memory_store;
pub mod records;

pub use config::config;
pub use memory_store::{InjectedFailures, MemoryStore};
pub use records::{
    number_value, sequence_number, stream_event, stream_record, string_value, RecordBuilder,
};
