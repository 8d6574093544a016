//! The seam between the event source mapping poller and whatever runs the function.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// How one invocation ended, as Lambda would tell an event source mapping.
#[derive(Clone, Debug, PartialEq)]
pub enum InvokeOutcome {
    /// The function returned this response body.
    Response(Value),
    /// The function reported an error (`/invocation/{id}/error`), or failed to initialise.
    FunctionError { error_type: String, message: String },
    /// The function did not answer within its timeout; the process was killed and restarted.
    TimedOut { after: Duration },
    /// The process exited during the invocation; it was restarted.
    Crashed { message: String },
}

impl InvokeOutcome {
    /// Whether Lambda would count this invocation as a function error (and so retry the batch).
    pub fn is_error(&self) -> bool {
        !matches!(self, InvokeOutcome::Response(_))
    }
}

/// Something that invokes the function synchronously with a payload.
pub trait Invoker: Send + Sync {
    fn invoke(&self, payload: Value) -> impl Future<Output = InvokeOutcome> + Send;
}
