//! Lambda's side of an invocation, on this machine: the Runtime API the real `bootstrap` talks
//! to, the host that runs it as a process, the seam callers invoke it through, and the ids
//! Lambda gives each invocation.

pub mod function_host;
pub mod invoke;
pub mod request_ids;
pub mod runtime_api;
