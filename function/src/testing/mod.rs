//! What the function's tests, the end-to-end harness and the fuzz targets share: an in-memory
//! bucket and stream records in the shape Lambda delivers them.

pub mod memory_store;
pub mod records;

pub use memory_store::{InjectedFailures, MemoryStore};
pub use records::{
    number_value, sequence_number, stream_event, stream_record, string_value, RecordBuilder,
};
