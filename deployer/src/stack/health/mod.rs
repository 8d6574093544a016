//! The stack's health, for `status`: its alarms as CloudWatch reports them, and the function's
//! metrics over the last hour; where the target does not serve something, it says so rather
//! than reporting a state or a zero as if measured.
//!
//! What each kind of target serves:
//!
//! - **AWS** evaluates every alarm on its metric and extracts the function's Embedded Metric
//!   Format lines into metrics.
//! - **The embedded emulator** (`--local`, fakecloud 0.51.0) answers the CloudWatch API, but no
//!   datapoint of any metric the alarms watch reaches it. Its alarms are evaluated on
//!   `DescribeAlarms` against the datapoints it holds (`fakecloud-cloudwatch`
//!   `src/service.rs` `describe_alarms` calls `src/alarm_eval.rs` `evaluate_alarms`); with none,
//!   `TreatMissingData: notBreaching` turns them OK ("Insufficient data treated as not
//!   breaching."), so OK there is no sign of health. Datapoints reach its store only through
//!   `PutMetricData`, CloudWatch Logs metric filters (`fakecloud-logs`
//!   `src/service/streams.rs` `publish_metric_filter_data`) and its own Lambda `Invoke`
//!   (`fakecloud-lambda` `src/service/invoke.rs`: `AWS/Lambda` `Invocations`, `Duration`,
//!   `Errors`; its stream poller, `fakecloud` `src/dynamodb_streams_lambda_poller.rs`, invokes
//!   through `src/lambda_delivery.rs`, which publishes none). Under `--local` the function runs
//!   in usersync's own host (`usersync_local::runtime`), whose output never reaches fakecloud's
//!   Logs, which has no EMF extraction anyway; its SQS publishes no `AWS/SQS` metrics and
//!   nothing publishes `IteratorAge`. So nothing of the function's metrics is published there
//!   either, and `status` does not ask.
//! - **An endpoint** (`--endpoint-url`) is taken to be LocalStack, which the end-to-end suite
//!   runs (4.14, `localstack/localstack` at `v4.14.0`). It evaluates simple metric alarms on a
//!   schedule (`services/cloudwatch/alarm_scheduler.py`, started by
//!   `services/cloudwatch/provider_v2.py` `put_metric_alarm`). It publishes `AWS/Lambda`
//!   `Invocations` and `Errors` for each invocation (`services/lambda_/invocation/metrics.py`,
//!   called from `services/lambda_/invocation/version_manager.py`) and each queue's
//!   `ApproximateNumberOfMessagesVisible` every 60 s (`services/sqs/provider.py`
//!   `CloudwatchPublishWorker`), but no `IteratorAge` (its event source mapping,
//!   `services/lambda_/event_source_mapping/`, publishes no metric), and it does not extract
//!   EMF: the function's output goes to CloudWatch Logs (`services/lambda_/invocation/logs.py`),
//!   whose `put_log_events` (`services/logs/provider.py`) applies metric filters only. So the
//!   errors and failure-queue alarms are evaluated there, the iterator-age and lag alarms are
//!   not; the function's metrics are asked for, and reported as not published when CloudWatch
//!   has no datapoint of them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricAlarm, MetricDataQuery, MetricDataResult, MetricStat, StatusCode,
};
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use usersync_function::metrics::{metric, DIMENSION, NAMESPACE};

use super::{aws_error, ResourceReport, StackError};
use crate::target::TargetKind;

/// The resource type of the stack's alarms; each one's physical id is the alarm's name.
pub const ALARM_RESOURCE_TYPE: &str = "AWS::CloudWatch::Alarm";

/// The span of the metrics `status` reports: the last hour.
pub const METRICS_WINDOW: Duration = Duration::from_secs(3600);

/// The namespace of the metrics Lambda publishes for a function and its event source mappings.
const LAMBDA_NAMESPACE: &str = "AWS/Lambda";
/// Lambda's metric of how far a stream mapping trails its stream.
const ITERATOR_AGE: &str = "IteratorAge";

/// The state CloudWatch reports for an alarm that the stack names but CloudWatch does not have.
pub const ALARM_NOT_FOUND: &str = "NOT_FOUND";

/// One of the stack's alarms, as CloudWatch reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AlarmReport {
    /// The alarm's name (the resource's physical id).
    pub name: String,
    /// The stack's resource that made it.
    pub logical_id: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA` as CloudWatch spells it; [`ALARM_NOT_FOUND`] when
    /// CloudWatch has no alarm of that name.
    pub state: String,
    /// CloudWatch's reason for the state (`StateReason`).
    pub reason: Option<String>,
    /// When the state last changed (RFC 3339).
    pub state_changed: Option<String>,
    /// The metric it watches: namespace and name, such as `AWS/Lambda IteratorAge`.
    pub metric: Option<String>,
    /// Whether the target evaluates the alarm on its metric. `false` where nothing publishes
    /// that metric (the embedded emulator; on LocalStack, `IteratorAge` and the function's own
    /// metrics): its state then comes from missing data and says nothing of the stack's health.
    /// `false` too for an alarm CloudWatch does not have.
    pub evaluated: bool,
    /// Why it is not evaluated, when it is not.
    pub not_evaluated_reason: Option<String>,
}

/// The function's metrics over [`METRICS_WINDOW`], or why the target has none.
///
/// Serialised flat, `published` telling which: `{"published": true, "window_seconds": 3600,
/// "records": …, "failed_users": …, "max_lag_ms": …}` or `{"published": false, "reason": …}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsReport {
    Published(MetricTotals),
    /// Nothing publishes the function's metrics on this target.
    NotPublished {
        reason: String,
    },
}

/// The function's metrics summed (and the lag maximised) over a window.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MetricTotals {
    pub window_seconds: u64,
    /// Stream records the function received (sum of `Records`).
    pub records: u64,
    /// Users reported back for retry (sum of `FailedUsers`).
    pub failed_users: u64,
    /// The largest `LagMs` of a batch; `None` when no batch reported one in the window.
    pub max_lag_ms: Option<u64>,
}

impl serde::Serialize for MetricsReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::Published(totals) => {
                map.serialize_entry("published", &true)?;
                map.serialize_entry("window_seconds", &totals.window_seconds)?;
                map.serialize_entry("records", &totals.records)?;
                map.serialize_entry("failed_users", &totals.failed_users)?;
                map.serialize_entry("max_lag_ms", &totals.max_lag_ms)?;
            }
            Self::NotPublished { reason } => {
                map.serialize_entry("published", &false)?;
                map.serialize_entry("reason", reason)?;
            }
        }
        map.end()
    }
}

/// The health part of a stack's status: flattened into `StackReport`, so `alarms`, `metrics`
/// and `read_errors` are members of its JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// The stack's alarms, by name; `None` when they could not be read (`read_errors` says
    /// why).
    pub alarms: Option<Vec<AlarmReport>>,
    /// `None` when they could not be read (`read_errors` says why), or the stack has no
    /// function (yet).
    pub metrics: Option<MetricsReport>,
    /// What could not be read, by part (`alarms`, `metrics`): the rest of the report stands.
    pub read_errors: BTreeMap<String, String>,
}

/// Reads the health of a stack whose resources are `resources` and whose function is
/// `function`, on a target of `kind`, through `cloudwatch`, with the metrics' window ending at
/// `now`. A part that cannot be read is recorded in `read_errors`; the other is still read.
pub async fn health(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    kind: &TargetKind,
    resources: &[ResourceReport],
    function: Option<&str>,
    now: SystemTime,
) -> HealthReport {
    let metrics = async {
        match function {
            Some(function) => Some(metrics(cloudwatch, kind, function, now).await),
            None => None,
        }
    };
    let (alarms, metrics) = futures::join!(alarms(cloudwatch, kind, resources), metrics);
    let mut read_errors = BTreeMap::new();
    let alarms = match alarms {
        Ok(alarms) => Some(alarms),
        Err(err) => {
            read_errors.insert("alarms".to_owned(), err.to_string());
            None
        }
    };
    let metrics = match metrics {
        Some(Ok(metrics)) => Some(metrics),
        Some(Err(err)) => {
            read_errors.insert("metrics".to_owned(), err.to_string());
            None
        }
        None => None,
    };
    HealthReport {
        alarms,
        metrics,
        read_errors,
    }
}

/// The alarms among `resources` (by their physical id, which is the alarm's name), as
/// CloudWatch's `DescribeAlarms` reports them, sorted by name.
pub async fn alarms(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    kind: &TargetKind,
    resources: &[ResourceReport],
) -> Result<Vec<AlarmReport>, StackError> {
    // Name → logical id; an alarm not created yet has no name.
    let wanted: BTreeMap<&str, &str> = resources
        .iter()
        .filter(|r| r.resource_type == ALARM_RESOURCE_TYPE)
        .filter_map(|r| Some((r.physical_id.as_deref()?, r.logical_id.as_str())))
        .collect();
    let names: Vec<&str> = wanted.keys().copied().collect();
    let mut found: BTreeMap<String, MetricAlarm> = BTreeMap::new();
    // DescribeAlarms takes up to 100 names a request.
    for chunk in names.chunks(100) {
        let mut pages = cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(chunk.iter().map(|n| (*n).to_owned()).collect()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| aws_error("call CloudWatch DescribeAlarms", err))?;
            for alarm in page.metric_alarms() {
                if let Some(name) = alarm.alarm_name() {
                    found.insert(name.to_owned(), alarm.clone());
                }
            }
        }
    }
    Ok(wanted
        .into_iter()
        .map(|(name, logical_id)| match found.get(name) {
            Some(alarm) => report(alarm, name, logical_id, kind),
            None => AlarmReport {
                name: name.to_owned(),
                logical_id: logical_id.to_owned(),
                state: ALARM_NOT_FOUND.to_owned(),
                reason: Some(
                    "the stack names this alarm, but CloudWatch has none of that name".to_owned(),
                ),
                state_changed: None,
                metric: None,
                evaluated: false,
                not_evaluated_reason: None,
            },
        })
        .collect())
}

fn report(alarm: &MetricAlarm, name: &str, logical_id: &str, kind: &TargetKind) -> AlarmReport {
    let not_evaluated_reason = not_evaluated(kind, alarm.namespace(), alarm.metric_name());
    AlarmReport {
        name: name.to_owned(),
        logical_id: logical_id.to_owned(),
        state: alarm
            .state_value()
            .map_or("UNKNOWN", |s| s.as_str())
            .to_owned(),
        reason: alarm.state_reason().map(str::to_owned),
        state_changed: alarm
            .state_transitioned_timestamp()
            .or(alarm.state_updated_timestamp())
            .and_then(|t| t.fmt(Format::DateTime).ok()),
        metric: match (alarm.namespace(), alarm.metric_name()) {
            (Some(namespace), Some(metric)) => Some(format!("{namespace} {metric}")),
            (None, Some(metric)) => Some(metric.to_owned()),
            _ => None,
        },
        evaluated: not_evaluated_reason.is_none(),
        not_evaluated_reason,
    }
}

/// Why a target of `kind` does not evaluate an alarm on `namespace`'s `metric` (nothing
/// publishes that metric there), or `None` when it does. The module's comment gives the
/// sources in full: for the embedded emulator, fakecloud 0.51.0's `fakecloud-cloudwatch`
/// `src/alarm_eval.rs` (missing data under `notBreaching` reads OK) and the three publishers it
/// has, none of which runs under `--local`; for LocalStack v4.14.0,
/// `services/lambda_/invocation/metrics.py` (`Errors`) and `services/sqs/provider.py`
/// (`ApproximateNumberOfMessagesVisible`) publish, `services/logs/provider.py`
/// (`put_log_events`: metric filters, no EMF) and `services/lambda_/event_source_mapping/` (no
/// `IteratorAge`) do not.
fn not_evaluated(
    kind: &TargetKind,
    namespace: Option<&str>,
    metric: Option<&str>,
) -> Option<String> {
    match kind {
        TargetKind::Aws => None,
        TargetKind::Local(_) => Some(
            "no metric reaches the embedded emulator's CloudWatch (the function runs in \
             usersync's own host, and the emulator's queues and mappings publish none), so the \
             state comes from missing data"
                .to_owned(),
        ),
        TargetKind::Endpoint(_) if namespace == Some(NAMESPACE) => Some(format!(
            "LocalStack does not turn the function's Embedded Metric Format log lines into \
             metrics, so nothing publishes {NAMESPACE} {} there and the state comes from missing \
             data",
            metric.unwrap_or("metrics")
        )),
        TargetKind::Endpoint(_)
            if namespace == Some(LAMBDA_NAMESPACE) && metric == Some(ITERATOR_AGE) =>
        {
            Some(
                "LocalStack's event source mappings publish no IteratorAge, so the state comes \
                 from missing data"
                    .to_owned(),
            )
        }
        TargetKind::Endpoint(_) => None,
    }
}

/// What the embedded emulator says in place of the function's metrics.
const LOCAL_NOT_PUBLISHED: &str = "the function runs in usersync's own host, not in the \
    embedded emulator's Lambda, and its metric lines go to its log, not to the emulator's \
    CloudWatch";

/// What an endpoint with no datapoint of the function's metrics says in their place: LocalStack
/// v4.14.0 sends the function's output to CloudWatch Logs (`services/lambda_/invocation/logs.py`),
/// whose `put_log_events` (`services/logs/provider.py`) applies metric filters and extracts no
/// Embedded Metric Format record.
const ENDPOINT_NOT_PUBLISHED: &str = "no datapoint of the function's metrics at this endpoint: \
    LocalStack does not turn the function's Embedded Metric Format log lines into metrics";

/// The sum of `Records`, the sum of `FailedUsers` and the maximum of `LagMs` of `function`
/// over the [`METRICS_WINDOW`] ending at `now`, in one `GetMetricData` request. On the
/// embedded emulator, which publishes none, nothing is asked; at an endpoint, no datapoint at
/// all reads as nothing published.
pub async fn metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    kind: &TargetKind,
    function: &str,
    now: SystemTime,
) -> Result<MetricsReport, StackError> {
    if matches!(kind, TargetKind::Local(_)) {
        return Ok(MetricsReport::NotPublished {
            reason: LOCAL_NOT_PUBLISHED.to_owned(),
        });
    }
    let start = now.checked_sub(METRICS_WINDOW).unwrap_or(now);
    let mut results: Vec<MetricDataResult> = Vec::new();
    let mut pages = cloudwatch
        .get_metric_data()
        .set_metric_data_queries(Some(queries(function)))
        .start_time(DateTime::from(start))
        .end_time(DateTime::from(now))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| aws_error("call CloudWatch GetMetricData", err))?;
        results.extend(page.metric_data_results().iter().cloned());
    }
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for result in &results {
        if let Some(code @ (StatusCode::InternalError | StatusCode::Forbidden)) =
            result.status_code()
        {
            let messages: Vec<String> = result
                .messages()
                .iter()
                .filter_map(|m| m.value().map(str::to_owned))
                .collect();
            return Err(StackError::Aws {
                action: "call CloudWatch GetMetricData".to_owned(),
                message: format!(
                    "{code} for query {}{}",
                    result.id().unwrap_or("?"),
                    if messages.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", messages.join("; "))
                    }
                ),
            });
        }
        let id = match result.id() {
            Some(QUERY_RECORDS) => QUERY_RECORDS,
            Some(QUERY_FAILED_USERS) => QUERY_FAILED_USERS,
            Some(QUERY_LAG) => QUERY_LAG,
            _ => continue,
        };
        values
            .entry(id)
            .or_default()
            .extend_from_slice(result.values());
    }
    if !matches!(kind, TargetKind::Aws) && values.values().all(Vec::is_empty) {
        return Ok(MetricsReport::NotPublished {
            reason: ENDPOINT_NOT_PUBLISHED.to_owned(),
        });
    }
    let sum = |id: &str| -> u64 {
        values
            .get(id)
            .map_or(0.0, |v| v.iter().sum::<f64>())
            .round() as u64
    };
    let max_lag_ms = values
        .get(QUERY_LAG)
        .and_then(|v| v.iter().copied().reduce(f64::max))
        .map(|ms| ms.round() as u64);
    Ok(MetricsReport::Published(MetricTotals {
        window_seconds: METRICS_WINDOW.as_secs(),
        records: sum(QUERY_RECORDS),
        failed_users: sum(QUERY_FAILED_USERS),
        max_lag_ms,
    }))
}

const QUERY_RECORDS: &str = "records";
const QUERY_FAILED_USERS: &str = "failed_users";
const QUERY_LAG: &str = "max_lag_ms";

/// The three queries: each metric of `function` over the whole window as one period (values
/// CloudWatch splits across periods anyway are summed, or maximised, again).
fn queries(function: &str) -> Vec<MetricDataQuery> {
    [
        (QUERY_RECORDS, metric::RECORDS, "Sum"),
        (QUERY_FAILED_USERS, metric::FAILED_USERS, "Sum"),
        (QUERY_LAG, metric::LAG_MS, "Maximum"),
    ]
    .into_iter()
    .map(|(id, name, stat)| {
        let metric = Metric::builder()
            .namespace(NAMESPACE)
            .metric_name(name)
            .dimensions(Dimension::builder().name(DIMENSION).value(function).build())
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(METRICS_WINDOW.as_secs() as i32)
                    .stat(stat)
                    .build(),
            )
            .return_data(true)
            .build()
    })
    .collect()
}

#[cfg(test)]
mod tests;
