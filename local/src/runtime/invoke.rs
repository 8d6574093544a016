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

/// One invocation: the request id it ran under and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Invoked {
    /// The invocation's own request id: the `Lambda-Runtime-Aws-Request-Id` the runtime was
    /// given, which the function's log lines carry. An on-failure record names it.
    pub request_id: String,
    pub outcome: InvokeOutcome,
}

/// Something that invokes the function synchronously with a payload.
pub trait Invoker: Send + Sync {
    /// Invokes the function with `payload`; reports the request id it used with the outcome.
    fn invoke_reporting_id(&self, payload: Value) -> impl Future<Output = Invoked> + Send;

    /// Invokes the function with `payload`, for callers that do not need the request id.
    fn invoke(&self, payload: Value) -> impl Future<Output = InvokeOutcome> + Send {
        let invoked = self.invoke_reporting_id(payload);
        async move { invoked.await.outcome }
    }
}
