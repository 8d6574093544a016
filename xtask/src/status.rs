//! `cargo xtask status`: what the stack looks like now, and how it is doing (its alarms and
//! the function's metrics over the last hour).

use anyhow::{bail, Context, Result};
use deployer::stack::{self, AlarmReport, HealthReport, MetricsReport, ALARM_NOT_FOUND};
use deployer::target::TargetKind;
use deployer::template::logical_id;

use crate::args::{print_json, TargetArgs};

pub async fn run(target_args: &TargetArgs) -> Result<()> {
    let settings = target_args.settings()?;
    let target = target_args.connect().await?;
    let stack_name = &settings.stack_name;
    let report = stack::status(&target, stack_name)
        .await
        .with_context(|| format!("failed to read the status of stack {stack_name}"))?;
    let Some(report) = report else {
        if target_args.json() {
            print_json(&serde_json::json!({ "stack_name": stack_name, "status": "NOT_FOUND" }))?;
        }
        bail!(
            "stack {stack_name} does not exist on {}; deploy it with `cargo xtask deploy`",
            target.describe()
        );
    };
    if target_args.json() {
        print_json(&report)?;
        return incomplete(&report.stack_name, &report.health);
    }
    println!(
        "stack {} on {}: {}",
        report.stack_name,
        target.describe(),
        report.status
    );
    if let Some(reason) = &report.status_reason {
        println!("  reason: {reason}");
    }
    println!("outputs");
    for (name, value) in &report.outputs {
        println!("  {name:<22} {value}");
    }
    println!("resources");
    for resource in &report.resources {
        println!(
            "  {:<22} {:<34} {:<20} {}",
            resource.logical_id,
            resource.resource_type,
            resource.status_text(),
            resource.physical_id.as_deref().unwrap_or("-")
        );
    }
    // Not resources of the stack: the existing table and bucket it mirrors.
    let adopted = [
        (
            logical_id::USERS_TABLE,
            "AWS::DynamoDB::Table",
            &report.adopted.table,
        ),
        (
            logical_id::DATA_BUCKET,
            "AWS::S3::Bucket",
            &report.adopted.bucket,
        ),
    ];
    for (id, resource_type, name) in adopted {
        if let Some(name) = name {
            println!("  {id:<22} {resource_type:<34} {:<20} {name}", "adopted");
        }
    }
    println!("event source mapping");
    for mapping in &report.event_source_mappings {
        println!(
            "  {} {} (last processing result: {}, batch size {}, parallelization factor {})",
            mapping.uuid,
            mapping.state,
            mapping
                .last_processing_result
                .as_deref()
                .unwrap_or("none yet"),
            mapping
                .batch_size
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            mapping
                .parallelization_factor
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        );
    }
    if let Some(depth) = report.failure_queue_depth {
        println!("failure queue: {depth} message(s)");
    }
    if let Some(count) = report.bucket_objects {
        println!("bucket: {count} object(s)");
    }
    for line in health_lines(&report.health, &target.kind) {
        println!("{line}");
    }
    incomplete(&report.stack_name, &report.health)
}

/// A status with a part that could not be read is printed whole, and then fails, as a status
/// that cannot read the stack's resources, mappings, queue or bucket does: the exit code says
/// that the report is not complete, the report what was read.
fn incomplete(stack_name: &str, health: &HealthReport) -> Result<()> {
    if health.read_errors.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = health
        .read_errors
        .iter()
        .map(|(part, err)| format!("{part}: {err}"))
        .collect();
    bail!(
        "the status of stack {stack_name} is incomplete (the rest is printed above): {}",
        parts.join("; ")
    )
}

/// The alarms and metrics sections of the text report, on a target of `kind`.
fn health_lines(health: &HealthReport, kind: &TargetKind) -> Vec<String> {
    let mut lines = Vec::new();
    match (&health.alarms, health.read_errors.get("alarms")) {
        (Some(alarms), _) if alarms.is_empty() => {
            lines.push("alarms: none in the stack".to_owned())
        }
        (Some(alarms), _) => {
            lines.push("alarms".to_owned());
            for alarm in alarms {
                lines.extend(alarm_lines(alarm, kind));
            }
            // Why the states of those not evaluated say nothing, each reason once.
            let mut reasons: Vec<&str> = Vec::new();
            for reason in alarms
                .iter()
                .filter(|a| !a.evaluated)
                .filter_map(|a| a.not_evaluated_reason.as_deref())
            {
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
            lines.extend(reasons.iter().map(|r| format!("  not evaluated: {r}")));
        }
        (None, Some(err)) => lines.push(format!("alarms: failed to read ({err})")),
        (None, None) => {}
    }
    match (&health.metrics, health.read_errors.get("metrics")) {
        (Some(MetricsReport::Published(totals)), _) => {
            let lag = totals.max_lag_ms.map_or_else(
                || "no lag reported (no batch)".to_owned(),
                |ms| format!("maximum lag {ms} ms"),
            );
            lines.push(format!(
                "metrics, last hour: {} record(s), {} failed user(s), {lag}",
                totals.records, totals.failed_users
            ));
        }
        (Some(MetricsReport::NotPublished { reason }), _) => {
            lines.push(format!(
                "metrics, last hour: nothing published here ({reason})"
            ));
        }
        (None, Some(err)) => lines.push(format!("metrics: failed to read ({err})")),
        (None, None) => {}
    }
    lines
}

/// An alarm's line, with CloudWatch's reason below it when the target evaluates it (the reason
/// of one it does not is missing data, and the footnote says so).
fn alarm_lines(alarm: &AlarmReport, kind: &TargetKind) -> Vec<String> {
    let state = if alarm.evaluated || alarm.state == ALARM_NOT_FOUND {
        alarm.state.clone()
    } else {
        let by = match kind {
            TargetKind::Local(_) => "by the embedded emulator",
            TargetKind::Endpoint(_) => "at this endpoint",
            TargetKind::Aws => "here",
        };
        format!("{} (not evaluated {by})", alarm.state)
    };
    let mut line = format!("  {:<28} {state}", alarm.name);
    if let Some(changed) = &alarm.state_changed {
        line.push_str(&format!(" since {changed}"));
    }
    if let Some(metric) = &alarm.metric {
        line.push_str(&format!(" [{metric}]"));
    }
    let mut lines = vec![line];
    if alarm.evaluated || alarm.not_evaluated_reason.is_none() {
        lines.extend(alarm.reason.as_ref().map(|reason| format!("    {reason}")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use deployer::stack::MetricTotals;

    use super::*;

    fn alarm(name: &str, state: &str, evaluated: bool) -> AlarmReport {
        AlarmReport {
            name: name.to_owned(),
            logical_id: "SomeAlarm".to_owned(),
            state: state.to_owned(),
            reason: Some(
                "Threshold Crossed: 1 datapoint [2.0] was greater than the threshold (0.0)."
                    .to_owned(),
            ),
            state_changed: Some("2026-05-01T09:30:00Z".to_owned()),
            metric: Some("AWS/Lambda Errors".to_owned()),
            evaluated,
            not_evaluated_reason: (!evaluated)
                .then(|| "nothing publishes the metric it watches there".to_owned()),
        }
    }

    fn local() -> TargetKind {
        TargetKind::Local(SocketAddr::from(([127, 0, 0, 1], 4566)))
    }

    #[test]
    fn alarms_and_metrics_read_as_measured_on_aws() {
        let missing = AlarmReport {
            state: ALARM_NOT_FOUND.to_owned(),
            reason: Some("the stack names this alarm, but CloudWatch has none".to_owned()),
            state_changed: None,
            metric: None,
            not_evaluated_reason: None,
            ..alarm("usersync-lag", ALARM_NOT_FOUND, false)
        };
        let health = HealthReport {
            alarms: Some(vec![alarm("usersync-errors", "ALARM", true), missing]),
            metrics: Some(MetricsReport::Published(MetricTotals {
                window_seconds: 3600,
                records: 1234,
                failed_users: 3,
                max_lag_ms: Some(1200),
            })),
            read_errors: BTreeMap::new(),
        };
        assert_eq!(
            health_lines(&health, &TargetKind::Aws),
            [
                "alarms",
                "  usersync-errors              ALARM since 2026-05-01T09:30:00Z [AWS/Lambda Errors]",
                "    Threshold Crossed: 1 datapoint [2.0] was greater than the threshold (0.0).",
                "  usersync-lag                 NOT_FOUND",
                "    the stack names this alarm, but CloudWatch has none",
                "metrics, last hour: 1234 record(s), 3 failed user(s), maximum lag 1200 ms",
            ]
        );
        assert!(incomplete("usersync", &health).is_ok());
    }

    #[test]
    fn an_idle_hour_shows_no_lag_rather_than_zero() {
        let health = HealthReport {
            alarms: Some(Vec::new()),
            metrics: Some(MetricsReport::Published(MetricTotals {
                window_seconds: 3600,
                records: 0,
                failed_users: 0,
                max_lag_ms: None,
            })),
            read_errors: BTreeMap::new(),
        };
        assert_eq!(
            health_lines(&health, &TargetKind::Aws),
            [
                "alarms: none in the stack",
                "metrics, last hour: 0 record(s), 0 failed user(s), no lag reported (no batch)",
            ]
        );
    }

    /// The embedded emulator's OK is shown as its state and never as health, the reason
    /// once; its metrics are "nothing published here", not zeros.
    #[test]
    fn the_embedded_emulator_says_what_it_does_not_evaluate_or_publish() {
        let health = HealthReport {
            alarms: Some(vec![
                alarm("usersync-errors", "OK", false),
                alarm("usersync-lag", "OK", false),
            ]),
            metrics: Some(MetricsReport::NotPublished {
                reason: "the function runs elsewhere".to_owned(),
            }),
            read_errors: BTreeMap::new(),
        };
        assert_eq!(
            health_lines(&health, &local()),
            [
                "alarms",
                "  usersync-errors              OK (not evaluated by the embedded emulator) since \
                 2026-05-01T09:30:00Z [AWS/Lambda Errors]",
                "  usersync-lag                 OK (not evaluated by the embedded emulator) since \
                 2026-05-01T09:30:00Z [AWS/Lambda Errors]",
                "  not evaluated: nothing publishes the metric it watches there",
                "metrics, last hour: nothing published here (the function runs elsewhere)",
            ]
        );
        let endpoint = TargetKind::Endpoint("http://localhost:4566".to_owned());
        assert!(health_lines(&health, &endpoint)[1].contains("OK (not evaluated at this endpoint)"));
    }

    /// A CloudWatch that refuses: the part says so, the rest stands, and the command fails
    /// after printing it.
    #[test]
    fn a_part_that_could_not_be_read_says_so_and_fails_the_command() {
        let health = HealthReport {
            alarms: None,
            metrics: Some(MetricsReport::Published(MetricTotals {
                window_seconds: 3600,
                records: 12,
                failed_users: 0,
                max_lag_ms: Some(300),
            })),
            read_errors: BTreeMap::from([(
                "alarms".to_owned(),
                "failed to call CloudWatch DescribeAlarms: AccessDenied: denied".to_owned(),
            )]),
        };
        assert_eq!(
            health_lines(&health, &TargetKind::Aws),
            [
                "alarms: failed to read (failed to call CloudWatch DescribeAlarms: AccessDenied: \
                 denied)",
                "metrics, last hour: 12 record(s), 0 failed user(s), maximum lag 300 ms",
            ]
        );
        assert_eq!(
            incomplete("usersync", &health).unwrap_err().to_string(),
            "the status of stack usersync is incomplete (the rest is printed above): alarms: \
             failed to call CloudWatch DescribeAlarms: AccessDenied: denied"
        );
    }
}
