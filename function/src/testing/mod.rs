//! What the function's and the deployer's tests, the end-to-end harness and the fuzz targets
//! share: an in-memory bucket, stream records in the shape Lambda delivers them, a
//! configuration with the function's defaults, and the batches' metrics records captured and
//! checked against their specification.

pub mod config;
pub mod memory_store;
pub mod metrics;
pub mod records;

pub use config::config;
pub use memory_store::{InjectedFailures, MemoryStore};
pub use metrics::{check_emf_line, CapturedMetrics};
pub use records::{
    number_value, sequence_number, stream_event, stream_record, string_value, RecordBuilder,
};
