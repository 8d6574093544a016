//! `health` over scripted CloudWatch answers: alarms and metrics as AWS, the embedded emulator
//! and an endpoint serve them, and a failing CloudWatch.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_cloudformation::types::ResourceStatus;
use aws_sdk_cloudwatch::error::ErrorMetadata;
use aws_sdk_cloudwatch::operation::describe_alarms::{DescribeAlarmsError, DescribeAlarmsOutput};
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::types::{MessageData, StateValue};
use aws_sdk_cloudwatch::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

use super::*;

const FUNCTION: &str = "usersync-function-Ab12";

/// 2026-05-01T10:00:00Z.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_777_629_600)
}

fn local() -> TargetKind {
    TargetKind::Local(SocketAddr::from(([127, 0, 0, 1], 4566)))
}

fn endpoint() -> TargetKind {
    TargetKind::Endpoint("http://localhost:4566".to_owned())
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, rules)
}

fn resource(logical_id: &str, resource_type: &str, physical_id: Option<&str>) -> ResourceReport {
    ResourceReport {
        logical_id: logical_id.to_owned(),
        resource_type: resource_type.to_owned(),
        physical_id: physical_id.map(str::to_owned),
        status: Some(ResourceStatus::CreateComplete),
    }
}

/// The four alarms of the template, a resource of another type, and an alarm CloudFormation
/// has not named yet.
fn resources() -> Vec<ResourceReport> {
    vec![
        resource("UsersTable", "AWS::DynamoDB::Table", Some("users")),
        resource(
            "IteratorAgeAlarm",
            ALARM_RESOURCE_TYPE,
            Some("usersync-iterator-age"),
        ),
        resource(
            "FailureQueueAlarm",
            ALARM_RESOURCE_TYPE,
            Some("usersync-failure-queue"),
        ),
        resource("ErrorsAlarm", ALARM_RESOURCE_TYPE, Some("usersync-errors")),
        resource("LagAlarm", ALARM_RESOURCE_TYPE, Some("usersync-lag")),
        resource("NewAlarm", ALARM_RESOURCE_TYPE, None),
    ]
}

/// An alarm on `namespace`'s `metric` in `state` since 09:30 UTC.
fn alarm(
    name: &str,
    namespace: &str,
    metric: &str,
    state: StateValue,
    reason: &str,
) -> MetricAlarm {
    MetricAlarm::builder()
        .alarm_name(name)
        .namespace(namespace)
        .metric_name(metric)
        .state_value(state)
        .state_reason(reason)
        .state_updated_timestamp(DateTime::from_secs(1_777_627_900))
        .state_transitioned_timestamp(DateTime::from_secs(1_777_627_800))
        .build()
}

/// DescribeAlarms answering with the four alarms of `resources()`, all OK but the failure
/// queue's, when asked for exactly their names.
fn four_alarms() -> Rule {
    mock!(Client::describe_alarms)
        .match_requests(|input| {
            let mut names = input.alarm_names().to_vec();
            names.sort();
            names
                == [
                    "usersync-errors",
                    "usersync-failure-queue",
                    "usersync-iterator-age",
                    "usersync-lag",
                ]
        })
        .then_output(|| {
            let missing = "Threshold Crossed: no datapoints were received for 3 periods and 3 \
                           missing datapoints were treated as [NonBreaching].";
            DescribeAlarmsOutput::builder()
                .metric_alarms(alarm(
                    "usersync-iterator-age",
                    "AWS/Lambda",
                    "IteratorAge",
                    StateValue::Ok,
                    missing,
                ))
                .metric_alarms(alarm(
                    "usersync-failure-queue",
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    StateValue::Alarm,
                    "Threshold Crossed: 1 datapoint [3.0 (01/05/26 09:29:00)] was greater than \
                     the threshold (0.0).",
                ))
                .metric_alarms(alarm(
                    "usersync-errors",
                    "AWS/Lambda",
                    "Errors",
                    StateValue::Ok,
                    missing,
                ))
                .metric_alarms(alarm(
                    "usersync-lag",
                    "usersync",
                    "LagMs",
                    StateValue::InsufficientData,
                    "Unchecked: Initial alarm creation",
                ))
                .build()
        })
}

fn by_name<'a>(alarms: &'a [AlarmReport], name: &str) -> &'a AlarmReport {
    alarms
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("{name} in {alarms:#?}"))
}

#[tokio::test]
async fn alarms_are_listed_by_name_with_their_state_reason_and_change() {
    let rule = four_alarms();
    let alarms = alarms(&client(&[&rule]), &TargetKind::Aws, &resources())
        .await
        .unwrap();

    assert_eq!(rule.num_calls(), 1);
    let names: Vec<&str> = alarms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "usersync-errors",
            "usersync-failure-queue",
            "usersync-iterator-age",
            "usersync-lag",
        ]
    );
    assert_eq!(
        by_name(&alarms, "usersync-failure-queue"),
        &AlarmReport {
            name: "usersync-failure-queue".to_owned(),
            logical_id: "FailureQueueAlarm".to_owned(),
            state: "ALARM".to_owned(),
            reason: Some(
                "Threshold Crossed: 1 datapoint [3.0 (01/05/26 09:29:00)] was greater than the \
                 threshold (0.0)."
                    .to_owned()
            ),
            // The transition, not the last update of the reason.
            state_changed: Some("2026-05-01T09:30:00Z".to_owned()),
            metric: Some("AWS/SQS ApproximateNumberOfMessagesVisible".to_owned()),
            evaluated: true,
            not_evaluated_reason: None,
        }
    );
    assert_eq!(by_name(&alarms, "usersync-lag").state, "INSUFFICIENT_DATA");
    assert_eq!(by_name(&alarms, "usersync-lag").logical_id, "LagAlarm");
    assert!(
        alarms.iter().all(|a| a.evaluated),
        "AWS evaluates every alarm"
    );
}

#[tokio::test]
async fn an_alarm_the_stack_names_but_cloudwatch_lacks_reads_as_not_found() {
    let rule = mock!(Client::describe_alarms).then_output(|| {
        DescribeAlarmsOutput::builder()
            .metric_alarms(alarm(
                "usersync-errors",
                "AWS/Lambda",
                "Errors",
                StateValue::Ok,
                "fine",
            ))
            .build()
    });
    let resources = [
        resource("ErrorsAlarm", ALARM_RESOURCE_TYPE, Some("usersync-errors")),
        resource("LagAlarm", ALARM_RESOURCE_TYPE, Some("usersync-lag")),
    ];
    let alarms = alarms(&client(&[&rule]), &TargetKind::Aws, &resources)
        .await
        .unwrap();
    let lag = by_name(&alarms, "usersync-lag");
    assert_eq!(lag.state, ALARM_NOT_FOUND);
    assert!(!lag.evaluated);
    assert_eq!(by_name(&alarms, "usersync-errors").state, "OK");
}

#[tokio::test]
async fn a_stack_without_alarms_asks_cloudwatch_nothing() {
    let rule = four_alarms();
    let resources = [resource(
        "UsersTable",
        "AWS::DynamoDB::Table",
        Some("users"),
    )];
    let alarms = alarms(&client(&[&rule]), &TargetKind::Aws, &resources)
        .await
        .unwrap();
    assert!(alarms.is_empty());
    assert_eq!(rule.num_calls(), 0);
}

/// GetMetricData answering that none of the three metrics has a datapoint in the hour.
fn no_datapoints() -> Rule {
    metric_data(vec![
        result("records", &[]),
        result("failed_users", &[]),
        result("max_lag_ms", &[]),
    ])
}

/// GetMetricData answering with `results`, when asked for the three metrics of `FUNCTION`
/// over the hour before `now()`.
fn metric_data(results: Vec<MetricDataResult>) -> Rule {
    mock!(Client::get_metric_data)
        .match_requests(|input| {
            let window = input.start_time() == Some(&DateTime::from_secs(1_777_626_000))
                && input.end_time() == Some(&DateTime::from_secs(1_777_629_600));
            let queries: Vec<(String, String, String, String, String, Option<i32>)> = input
                .metric_data_queries()
                .iter()
                .map(|q| {
                    let stat = q.metric_stat().expect("a metric query");
                    let metric = stat.metric().expect("a metric");
                    let dimension = &metric.dimensions()[0];
                    (
                        q.id().unwrap_or_default().to_owned(),
                        format!(
                            "{} {}",
                            metric.namespace().unwrap_or_default(),
                            metric.metric_name().unwrap_or_default()
                        ),
                        dimension.name().unwrap_or_default().to_owned(),
                        dimension.value().unwrap_or_default().to_owned(),
                        stat.stat().unwrap_or_default().to_owned(),
                        stat.period(),
                    )
                })
                .collect();
            let query = |id: &str, metric: &str, stat: &str| {
                (
                    id.to_owned(),
                    metric.to_owned(),
                    "FunctionName".to_owned(),
                    FUNCTION.to_owned(),
                    stat.to_owned(),
                    Some(3600),
                )
            };
            window
                && queries
                    == [
                        query("records", "usersync Records", "Sum"),
                        query("failed_users", "usersync FailedUsers", "Sum"),
                        query("max_lag_ms", "usersync LagMs", "Maximum"),
                    ]
        })
        .then_output(move || {
            GetMetricDataOutput::builder()
                .set_metric_data_results(Some(results.clone()))
                .build()
        })
}

fn result(id: &str, values: &[f64]) -> MetricDataResult {
    MetricDataResult::builder()
        .id(id)
        .set_values(Some(values.to_vec()))
        .status_code(StatusCode::Complete)
        .build()
}

#[tokio::test]
async fn metrics_are_summed_and_the_lag_maximised_over_the_last_hour() {
    // CloudWatch may split the hour into two periods when it is not aligned to one.
    let rule = metric_data(vec![
        result("records", &[1000.0, 234.0]),
        result("failed_users", &[2.0, 1.0]),
        result("max_lag_ms", &[850.0, 1200.0]),
    ]);
    let metrics = metrics(&client(&[&rule]), &TargetKind::Aws, FUNCTION, now())
        .await
        .unwrap();
    assert_eq!(rule.num_calls(), 1, "one GetMetricData request");
    assert_eq!(
        metrics,
        MetricsReport::Published(MetricTotals {
            window_seconds: 3600,
            records: 1234,
            failed_users: 3,
            max_lag_ms: Some(1200),
        })
    );
}

/// On AWS an hour without a batch is measured: no record, no failure, no lag to show.
#[tokio::test]
async fn an_idle_hour_on_aws_is_zero_records_and_no_lag() {
    let rule = no_datapoints();
    let metrics = metrics(&client(&[&rule]), &TargetKind::Aws, FUNCTION, now())
        .await
        .unwrap();
    assert_eq!(
        metrics,
        MetricsReport::Published(MetricTotals {
            window_seconds: 3600,
            records: 0,
            failed_users: 0,
            max_lag_ms: None,
        })
    );
}

#[tokio::test]
async fn forbidden_metric_data_is_a_read_error() {
    let rule = mock!(Client::get_metric_data).then_output(|| {
        GetMetricDataOutput::builder()
            .metric_data_results(
                MetricDataResult::builder()
                    .id("records")
                    .status_code(StatusCode::Forbidden)
                    .messages(
                        MessageData::builder()
                            .code("Forbidden")
                            .value("not authorized for namespace usersync")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let err = metrics(&client(&[&rule]), &TargetKind::Aws, FUNCTION, now())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to call CloudWatch GetMetricData: Forbidden for query records: not authorized \
         for namespace usersync"
    );
}

/// The embedded emulator's alarms are OK from missing data: shown, never as health; its
/// metrics are not asked for, and said to be not published rather than zero.
#[tokio::test]
async fn the_embedded_emulator_evaluates_no_alarm_and_publishes_no_metric() {
    let describe = four_alarms();
    let no_metrics = metric_data(Vec::new());
    let cloudwatch = client(&[&describe, &no_metrics]);

    let report = health(&cloudwatch, &local(), &resources(), Some(FUNCTION), now()).await;

    assert_eq!(no_metrics.num_calls(), 0, "nothing to ask for");
    assert_eq!(
        report.metrics,
        Some(MetricsReport::NotPublished {
            reason: LOCAL_NOT_PUBLISHED.to_owned()
        })
    );
    let alarms = report.alarms.expect("the alarms are read");
    assert_eq!(alarms.len(), 4);
    for alarm in &alarms {
        assert!(!alarm.evaluated, "{alarm:?}");
        let reason = alarm.not_evaluated_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("embedded emulator"), "{reason}");
    }
    // The state is still CloudWatch's own.
    assert_eq!(by_name(&alarms, "usersync-errors").state, "OK");
    assert!(report.read_errors.is_empty());
}

/// LocalStack publishes Lambda's errors and the queue's depth, not the iterator age nor the
/// function's EMF metrics.
#[tokio::test]
async fn at_an_endpoint_only_alarms_on_published_metrics_are_evaluated() {
    let describe = four_alarms();
    let alarms = alarms(&client(&[&describe]), &endpoint(), &resources())
        .await
        .unwrap();
    let evaluated: Vec<(&str, bool)> = alarms
        .iter()
        .map(|a| (a.name.as_str(), a.evaluated))
        .collect();
    assert_eq!(
        evaluated,
        [
            ("usersync-errors", true),
            ("usersync-failure-queue", true),
            ("usersync-iterator-age", false),
            ("usersync-lag", false),
        ]
    );
    let lag = by_name(&alarms, "usersync-lag");
    assert!(
        lag.not_evaluated_reason
            .as_deref()
            .is_some_and(|r| r.contains("Embedded Metric Format") && r.contains("usersync LagMs")),
        "{lag:?}"
    );
}

#[tokio::test]
async fn at_an_endpoint_no_datapoint_reads_as_nothing_published() {
    let rule = no_datapoints();
    let nothing = metrics(&client(&[&rule]), &endpoint(), FUNCTION, now())
        .await
        .unwrap();
    assert_eq!(
        nothing,
        MetricsReport::NotPublished {
            reason: ENDPOINT_NOT_PUBLISHED.to_owned()
        }
    );

    // An endpoint that does publish them is reported as AWS is.
    let rule = metric_data(vec![
        result("records", &[5.0]),
        result("failed_users", &[0.0]),
        result("max_lag_ms", &[40.0]),
    ]);
    let metrics = metrics(&client(&[&rule]), &endpoint(), FUNCTION, now())
        .await
        .unwrap();
    assert_eq!(
        metrics,
        MetricsReport::Published(MetricTotals {
            window_seconds: 3600,
            records: 5,
            failed_users: 0,
            max_lag_ms: Some(40),
        })
    );
}

/// A role without cloudwatch:DescribeAlarms: the alarms are a read error, the metrics are still
/// read.
#[tokio::test]
async fn a_cloudwatch_failure_is_recorded_and_the_rest_still_read() {
    let denied = mock!(Client::describe_alarms).then_error(|| {
        DescribeAlarmsError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message(
                    "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: \
                     cloudwatch:DescribeAlarms",
                )
                .build(),
        )
    });
    let rule = metric_data(vec![
        result("records", &[12.0]),
        result("failed_users", &[0.0]),
        result("max_lag_ms", &[300.0]),
    ]);
    let report = health(
        &client(&[&denied, &rule]),
        &TargetKind::Aws,
        &resources(),
        Some(FUNCTION),
        now(),
    )
    .await;

    assert_eq!(report.alarms, None);
    assert_eq!(
        report.read_errors,
        BTreeMap::from([(
            "alarms".to_owned(),
            "failed to call CloudWatch DescribeAlarms: AccessDenied: User: \
             arn:aws:iam::123456789012:user/ops is not authorized to perform: \
             cloudwatch:DescribeAlarms"
                .to_owned()
        )])
    );
    assert_eq!(
        report.metrics,
        Some(MetricsReport::Published(MetricTotals {
            window_seconds: 3600,
            records: 12,
            failed_users: 0,
            max_lag_ms: Some(300),
        }))
    );
}

/// A stack whose function does not exist (yet) has no metrics to ask for.
#[tokio::test]
async fn without_a_function_there_are_no_metrics() {
    let describe = four_alarms();
    let no_metrics = metric_data(Vec::new());
    let report = health(
        &client(&[&describe, &no_metrics]),
        &TargetKind::Aws,
        &resources(),
        None,
        now(),
    )
    .await;
    assert_eq!(report.metrics, None);
    assert_eq!(no_metrics.num_calls(), 0);
    assert_eq!(report.alarms.map(|a| a.len()), Some(4));
}

#[test]
fn metrics_serialise_flat_with_published_saying_which() {
    let published = MetricsReport::Published(MetricTotals {
        window_seconds: 3600,
        records: 7,
        failed_users: 1,
        max_lag_ms: None,
    });
    assert_eq!(
        serde_json::to_value(&published).unwrap(),
        serde_json::json!({
            "published": true,
            "window_seconds": 3600,
            "records": 7,
            "failed_users": 1,
            "max_lag_ms": null,
        })
    );
    let not = MetricsReport::NotPublished {
        reason: LOCAL_NOT_PUBLISHED.to_owned(),
    };
    assert_eq!(
        serde_json::to_value(&not).unwrap(),
        serde_json::json!({"published": false, "reason": LOCAL_NOT_PUBLISHED})
    );
}
