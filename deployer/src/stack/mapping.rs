//! Quieting the stack's event source mapping before teardown empties the data bucket: a mapping
//! that keeps invoking the function keeps writing objects into the bucket being emptied.

use std::time::{Duration, Instant};

use aws_sdk_lambda::error::ProvideErrorMetadata;

use super::{aws_error, poll_interval, StackError};
use crate::console::Console;
use crate::target::Target;

/// How long a mapping may take to reach `Disabled` before teardown goes on without waiting: the
/// bucket's deletion is retried on `BucketNotEmpty` anyway.
const DISABLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What became of the mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quieted {
    /// It was disabled by this call and reached `Disabled`.
    Disabled,
    /// It was disabled already, or is gone.
    AlreadyQuiet,
    /// The target does not serve the Lambda event source mapping API; nothing was done.
    NotServed,
    /// Disabled, but still not `Disabled` after [`DISABLE_TIMEOUT`].
    StillDisabling,
}

/// Disables the event source mapping `uuid` (`UpdateEventSourceMapping Enabled=false`) and waits
/// until Lambda reports it `Disabled`.
///
/// "When false, Lambda pauses polling and invocation"; the mapping goes through `Disabling` to
/// `Disabled` (https://docs.aws.amazon.com/lambda/latest/dg/API_UpdateEventSourceMapping.html,
/// states: https://docs.aws.amazon.com/lambda/latest/dg/API_EventSourceMappingConfiguration.html).
/// AWS does not say that a `Disabled` mapping has no invocation still running, so the caller
/// still expects a late write (teardown retries the bucket's deletion on `BucketNotEmpty`).
pub async fn disable_mapping(
    target: &Target,
    uuid: &str,
    console: &mut dyn Console,
) -> Result<Quieted, StackError> {
    let lambda = target.lambda();
    let action = || format!("disable the event source mapping {uuid}");
    let started = Instant::now();
    let mut asked = false;
    loop {
        let state = match lambda.get_event_source_mapping().uuid(uuid).send().await {
            Ok(mapping) => mapping.state().unwrap_or_default().to_owned(),
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                return match refusal(err.code(), status, target.is_aws()) {
                    Refusal::Gone => Ok(if asked {
                        Quieted::Disabled
                    } else {
                        Quieted::AlreadyQuiet
                    }),
                    Refusal::NotServed => Ok(Quieted::NotServed),
                    Refusal::Busy | Refusal::Other => Err(aws_error(action(), err)),
                };
            }
        };
        match state.as_str() {
            "Disabled" if asked => return Ok(Quieted::Disabled),
            "Disabled" => return Ok(Quieted::AlreadyQuiet),
            // On its way to Disabled; nothing to ask.
            "Disabling" => {}
            _ => {
                if !asked {
                    console.line(&format!(
                        "disabling event source mapping {uuid}: no invocation may write to the \
                         bucket once it is emptied"
                    ));
                }
                let updated = lambda
                    .update_event_source_mapping()
                    .uuid(uuid)
                    .enabled(false)
                    .send()
                    .await;
                match updated {
                    Ok(_) => asked = true,
                    Err(err) => {
                        let status = err.raw_response().map(|r| r.status().as_u16());
                        match refusal(err.code(), status, target.is_aws()) {
                            Refusal::Gone => return Ok(Quieted::AlreadyQuiet),
                            Refusal::NotServed => return Ok(Quieted::NotServed),
                            // Creating or Updating: Lambda takes no change until it settles
                            // (ResourceInUseException); asked again at the next poll.
                            Refusal::Busy => {}
                            Refusal::Other => return Err(aws_error(action(), err)),
                        }
                    }
                }
            }
        }
        if started.elapsed() > DISABLE_TIMEOUT {
            return Ok(Quieted::StillDisabling);
        }
        console.waiting(&format!("event source mapping {uuid} is {state}"));
        tokio::time::sleep(poll_interval(target)).await;
    }
}

/// How a Lambda request on the mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The mapping does not exist (any more): it invokes nothing.
    Gone,
    /// The mapping is being created or updated and takes no change now.
    Busy,
    /// An emulator without the event source mapping API.
    NotServed,
    Other,
}

/// Classifies a refusal by its error code and HTTP status. Lambda answers a missing mapping with
/// `ResourceNotFoundException` (404), and one that is `Creating` or `Updating` with
/// `ResourceInUseException` (https://docs.aws.amazon.com/lambda/latest/dg/API_UpdateEventSourceMapping.html#API_UpdateEventSourceMapping_Errors).
/// Only a target other than AWS may not serve the API at all.
fn refusal(code: Option<&str>, status: Option<u16>, on_aws: bool) -> Refusal {
    match code {
        Some("ResourceNotFoundException") => return Refusal::Gone,
        Some("ResourceInUseException") => return Refusal::Busy,
        _ => {}
    }
    let unknown_operation = matches!(
        code,
        Some(
            "UnknownOperationException"
                | "UnknownOperation"
                | "InvalidAction"
                | "NotImplemented"
                | "NotImplementedException"
                | "UnsupportedOperation"
        )
    );
    // A 404 that is not ResourceNotFoundException: no such route.
    let no_route = matches!(status, Some(404 | 405 | 501));
    if !on_aws && (unknown_operation || no_route) {
        Refusal::NotServed
    } else {
        Refusal::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_by_code_and_status() {
        assert_eq!(
            refusal(Some("ResourceNotFoundException"), Some(404), true),
            Refusal::Gone
        );
        assert_eq!(
            refusal(Some("ResourceInUseException"), Some(400), false),
            Refusal::Busy
        );
        assert_eq!(refusal(None, Some(404), false), Refusal::NotServed);
        assert_eq!(
            refusal(Some("UnknownOperationException"), Some(400), false),
            Refusal::NotServed
        );
        assert_eq!(refusal(None, Some(501), false), Refusal::NotServed);
        // Real AWS serves the API: anything else is an error to report.
        assert_eq!(refusal(None, Some(404), true), Refusal::Other);
        assert_eq!(
            refusal(Some("AccessDeniedException"), Some(403), false),
            Refusal::Other
        );
    }
}
