//! Scenario 8's alarm checks: a deployed stack's four alarms exist in CloudWatch
//! (`DescribeAlarms`), `status` lists them with what the backend evaluates and publishes, and
//! none is left after the teardown.

use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use deployer::stack::{self, MetricsReport};
use deployer::target::{Target, TargetKind};

use crate::backend::BackendKind;
use crate::harness::Backend;
use crate::test_stack::TestStack;

/// The template's alarms: logical id, and the name's suffix after `<stack>-`.
const ALARMS: [(&str, &str); 4] = [
    ("ErrorsAlarm", "errors"),
    ("FailureQueueAlarm", "failure-queue"),
    ("IteratorAgeAlarm", "iterator-age"),
    ("LagAlarm", "lag"),
];

/// The names of `stack_name`'s alarms, sorted.
fn alarm_names(stack_name: &str) -> Vec<String> {
    let mut names: Vec<String> = ALARMS
        .iter()
        .map(|(_, suffix)| format!("{stack_name}-{suffix}"))
        .collect();
    names.sort();
    names
}

/// The alarms of `names` that CloudWatch has, by name, with their state.
async fn described(target: &Target, names: &[String]) -> Result<Vec<(String, String)>> {
    let output = target
        .cloudwatch()
        .describe_alarms()
        .set_alarm_names(Some(names.to_vec()))
        .send()
        .await
        .context("DescribeAlarms failed")?;
    let mut found: Vec<(String, String)> = output
        .metric_alarms()
        .iter()
        .map(|a| {
            (
                a.alarm_name().unwrap_or_default().to_owned(),
                a.state_value()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The target `cargo xtask status` would use for this backend: the local backend's emulator as
/// `--local` names it (the suite reaches it as a plain endpoint), so that `status` says what the
/// embedded emulator does not evaluate.
fn status_target(backend: &Backend, stack: &TestStack) -> Result<Target> {
    if backend.kind() != BackendKind::Local {
        return Ok(stack.target.clone());
    }
    let url = backend.endpoint_url();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("the emulator's URL {url} is no http://address:port"))?;
    Ok(Target {
        kind: TargetKind::Local(addr),
        ..stack.target.clone()
    })
}

/// The four alarms exist in CloudWatch, and `status` lists them, each with its state; on the
/// local backend and LocalStack, with what the backend does not evaluate and the function's
/// metrics as not published there.
pub(super) async fn alarms_in_cloudwatch_and_status(
    backend: &Backend,
    stack: &TestStack,
) -> Result<()> {
    let stack_name = &stack.settings.stack_name;
    let names = alarm_names(stack_name);
    let found = described(&stack.target, &names).await?;
    let found_names: Vec<&String> = found.iter().map(|(name, _)| name).collect();
    ensure!(
        found_names == names.iter().collect::<Vec<_>>(),
        "DescribeAlarms found {found:?}, expected {names:?}"
    );
    ensure!(
        found
            .iter()
            .all(|(_, state)| ["OK", "ALARM", "INSUFFICIENT_DATA"].contains(&state.as_str())),
        "every alarm has a state: {found:?}"
    );

    let target = status_target(backend, stack)?;
    let report = stack::status(&target, stack_name)
        .await
        .context("status failed")?
        .with_context(|| format!("status does not find stack {stack_name}"))?;
    let health = &report.health;
    ensure!(
        health.read_errors.is_empty(),
        "status could not read: {:?}",
        health.read_errors
    );
    let alarms = health
        .alarms
        .as_ref()
        .context("status has no alarms and no read error")?;
    let listed: Vec<(&str, &str)> = alarms
        .iter()
        .map(|a| (a.logical_id.as_str(), a.name.as_str()))
        .collect();
    let expected: Vec<(&str, String)> = ALARMS
        .iter()
        .map(|(id, suffix)| (*id, format!("{stack_name}-{suffix}")))
        .collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(id, n)| (*id, n.as_str())).collect();
    ensure!(
        listed == expected,
        "status lists {listed:?}, expected {expected:?}"
    );
    ensure!(
        alarms
            .iter()
            .all(|a| ["OK", "ALARM", "INSUFFICIENT_DATA"].contains(&a.state.as_str())),
        "status gives every alarm its CloudWatch state: {alarms:#?}"
    );

    let evaluated: Vec<(&str, bool)> = alarms
        .iter()
        .map(|a| (a.logical_id.as_str(), a.evaluated))
        .collect();
    match backend.kind() {
        BackendKind::Local => {
            ensure!(
                evaluated.iter().all(|(_, evaluated)| !evaluated),
                "the embedded emulator evaluates no alarm on data: {alarms:#?}"
            );
            ensure!(
                matches!(health.metrics, Some(MetricsReport::NotPublished { .. })),
                "nothing publishes the function's metrics on the embedded emulator: {:?}",
                health.metrics
            );
        }
        BackendKind::LocalStack => {
            ensure!(
                evaluated
                    == [
                        ("ErrorsAlarm", true),
                        ("FailureQueueAlarm", true),
                        ("IteratorAgeAlarm", false),
                        ("LagAlarm", false),
                    ],
                "LocalStack publishes Errors and the queue's depth only: {alarms:#?}"
            );
            ensure!(
                matches!(health.metrics, Some(MetricsReport::NotPublished { .. })),
                "LocalStack extracts no EMF metrics: {:?}",
                health.metrics
            );
        }
        // Whatever emulator it is, status has said what it makes of it.
        BackendKind::Endpoint => ensure!(health.metrics.is_some(), "no metrics part"),
    }
    Ok(())
}

/// No alarm of the stack is left in CloudWatch.
pub(super) async fn no_alarm_left(target: &Target, stack_name: &str) -> Result<()> {
    let left = described(target, &alarm_names(stack_name)).await?;
    ensure!(left.is_empty(), "alarms left after the teardown: {left:?}");
    Ok(())
}
