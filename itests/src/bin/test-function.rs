//! A tiny Lambda function for testing the local Runtime API host, built on `lambda_runtime`
//! like the real `bootstrap`.
//!
//! What it does is chosen by the event, so a test can ask for each outcome:
//! - the behaviours are the top-level `"behaviour"` string of a direct invocation, then the
//!   `dynamodb.NewImage.behaviour.S` of every stream record, applied in order;
//! - `"echo"` (or none): answer normally;
//! - `"sleep:<ms>"`: sleep that long, then carry on;
//! - `"fail"`: return an error of type `TestFunctionFailure`;
//! - `"crash"`: write a line to stderr and exit with status 3 mid-invocation.
//!
//! The answer echoes what the function was given: the payload, the invocation context from the
//! Runtime API headers, its environment, its process id, and when it started and finished.
//!
//! `TEST_FUNCTION_INIT=fail` makes it fail during initialisation (it returns an error from
//! `main` before calling `lambda_runtime::run`, so it exits with status 1 without asking for an
//! event); `TEST_FUNCTION_INIT=sleep:<ms>` delays initialisation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    println!("test-function: initialising");
    match std::env::var("TEST_FUNCTION_INIT").as_deref() {
        Ok("fail") => {
            return Err("TEST_FUNCTION_INIT=fail: failing initialisation on purpose".into())
        }
        Ok(other) => {
            if let Some(ms) = sleep_millis(other) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        Err(_) => {}
    }
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let started_ms = now_ms();
    let (payload, context) = event.into_parts();
    println!("test-function: handling {}", context.request_id);

    for behaviour in behaviours(&payload) {
        match behaviour.as_str() {
            "fail" => {
                return Err(Diagnostic {
                    error_type: "TestFunctionFailure".to_owned(),
                    error_message: "the event asked to fail".to_owned(),
                })
            }
            "crash" => {
                eprintln!("test-function: crashing on purpose");
                std::process::exit(3);
            }
            other => {
                if let Some(ms) = sleep_millis(other) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        }
    }

    let environment: BTreeMap<String, String> = std::env::vars().collect();
    Ok(json!({
        "payload": payload,
        "request_id": context.request_id,
        "deadline_ms": context.deadline,
        "invoked_function_arn": context.invoked_function_arn,
        "xray_trace_id": context.xray_trace_id,
        "environment": environment,
        "pid": std::process::id(),
        "started_ms": started_ms,
        "finished_ms": now_ms(),
    }))
}

/// The behaviours the event asks for, in order.
fn behaviours(payload: &Value) -> Vec<String> {
    let direct = payload.get("behaviour").and_then(Value::as_str);
    let records = payload
        .get("Records")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|record| record.pointer("/dynamodb/NewImage/behaviour/S"))
        .filter_map(Value::as_str);
    direct
        .into_iter()
        .chain(records)
        .map(str::to_owned)
        .collect()
}

/// `Some(ms)` for `"sleep:<ms>"`.
fn sleep_millis(behaviour: &str) -> Option<u64> {
    behaviour.strip_prefix("sleep:")?.parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
