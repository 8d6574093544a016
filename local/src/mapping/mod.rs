//! An event source mapping on this machine: its settings read from the deployed mapping, the
//! poller that reads the stream, the judging of each batch (partial failures, bisection,
//! retries, record age), the on-failure destination, and the pipeline that wires them to the
//! function host.

pub mod batch;
pub mod destination;
pub mod pipeline;
pub mod poller;
pub mod settings;
