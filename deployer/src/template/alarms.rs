//! The stack's four alarms, and where they send their notifications.
//!
//! Each alarm is named `<stack name>-<suffix>` ([`ALARMS`], [`alarm_name`]), is described, and
//! treats missing data as not breaching: an idle stack publishes no iterator age, lag or
//! errors, and its alarms must then be OK, not INSUFFICIENT_DATA. The function is named by its
//! `Ref` and the queue by its `QueueName`; an adopted table or bucket changes neither, so every
//! stack has all four.
//!
//! Notifications follow the settings: `alarm_email` adds a topic of the stack's own
//! ([`notification_resources`]), `alarm_topic_arn` names one that exists, and with neither the
//! alarms have no actions. A topic is told both when an alarm fires and when it recovers
//! (`AlarmActions` and `OKActions`), so an operator knows when the mirror caught up again.
//!
//! The alarms need no permissions: CloudWatch evaluates them and publishes to the topic itself,
//! so the function's role is unchanged.

use serde_json::{json, Value};
use usersync_function::metrics;

use super::{get_att, logical_id, reference, sub};
use crate::settings::StackSettings;

/// The stack's alarms, as (logical ID, name suffix): each is named
/// `<stack name>-<suffix>`.
pub const ALARMS: [(&str, &str); 4] = [
    (logical_id::ITERATOR_AGE_ALARM, "iterator-age"),
    (logical_id::FAILURE_QUEUE_ALARM, "failure-queue"),
    (logical_id::ERRORS_ALARM, "errors"),
    (logical_id::LAG_ALARM, "lag"),
];

/// The physical name of the alarm ending in `suffix` (one of [`ALARMS`]) in a stack called
/// `stack_name`.
pub fn alarm_name(stack_name: &str, suffix: &str) -> String {
    format!("{stack_name}-{suffix}")
}

/// A minute: the period of every alarm, CloudWatch's standard resolution, at which Lambda and
/// SQS publish their metrics.
const PERIOD_SECONDS: u32 = 60;

/// Minutes the iterator age and the lag must stay above the threshold before their alarms
/// fire: one slow batch is not a mirror falling behind.
const SUSTAINED_PERIODS: u32 = 3;

/// Missing data is not a breach: no data means no records were processed (or no failed batch
/// was queued), which is healthy. CloudWatch's values:
/// https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html#alarms-and-missing-data
const TREAT_MISSING_DATA: &str = "notBreaching";

/// The threshold of the iterator age and lag alarms, in milliseconds, the unit of both
/// metrics.
pub fn lag_threshold_ms(settings: &StackSettings) -> u64 {
    u64::from(settings.alarm_iterator_age_seconds) * 1000
}

/// The four alarms, by logical ID.
pub(super) fn alarms(settings: &StackSettings) -> Vec<(&'static str, Value)> {
    use logical_id::*;

    let threshold_ms = lag_threshold_ms(settings);
    let seconds = settings.alarm_iterator_age_seconds;
    let function = || dimension(metrics::DIMENSION, reference(MIRROR_FUNCTION));
    let actions = actions(settings);
    let alarm = |suffix: &str, description: String, metric: Value| {
        let mut properties = metric.as_object().expect("a metric is an object").clone();
        properties.insert(
            "AlarmName".into(),
            sub(alarm_name("${AWS::StackName}", suffix)),
        );
        properties.insert("AlarmDescription".into(), description.into());
        properties.insert("ComparisonOperator".into(), "GreaterThanThreshold".into());
        properties.insert("TreatMissingData".into(), TREAT_MISSING_DATA.into());
        properties.insert("Period".into(), PERIOD_SECONDS.into());
        if let Some(topic) = &actions {
            properties.insert("AlarmActions".into(), json!([topic]));
            properties.insert("OKActions".into(), json!([topic]));
        }
        json!({ "Type": "AWS::CloudWatch::Alarm", "Properties": properties })
    };
    let [(_, iterator_age), (_, failure_queue), (_, errors), (_, lag)] = ALARMS;
    vec![
        (
            ITERATOR_AGE_ALARM,
            // IteratorAge is published by function: FunctionName (also Resource for a version
            // or alias) — "Types of metrics for Lambda functions", performance metrics,
            // https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html.
            // The EventSourceMappingUUID dimension belongs to the event source mapping metrics
            // (PolledEventCount and the rest), which a mapping publishes only with
            // MetricsConfig EventCount turned on
            // (https://docs.aws.amazon.com/lambda/latest/api/API_EventSourceMappingMetricsConfig.html);
            // the stack's function has exactly one mapping, so FunctionName names its stream.
            alarm(
                iterator_age,
                format!(
                    "usersync: the mirror is falling behind the table. The oldest stream record \
                     the mapping delivered to the function was more than {seconds} s old for \
                     {SUSTAINED_PERIODS} minutes in a row (AWS/Lambda IteratorAge, maximum). \
                     Raise memory_mb or parallelization_factor, and look at the function's \
                     errors and duration."
                ),
                json!({
                    "Namespace": "AWS/Lambda",
                    "MetricName": "IteratorAge",
                    "Dimensions": [function()],
                    "Statistic": "Maximum",
                    "EvaluationPeriods": SUSTAINED_PERIODS,
                    "Threshold": threshold_ms,
                }),
            ),
        ),
        (
            FAILURE_QUEUE_ALARM,
            alarm(
                failure_queue,
                "usersync: batches the mapping gave up on are waiting in the failure queue \
                 (AWS/SQS ApproximateNumberOfMessagesVisible above 0): those users' objects may \
                 be stale. Run `cargo xtask replay-failures` to repair them from the table."
                    .to_owned(),
                json!({
                    "Namespace": "AWS/SQS",
                    "MetricName": "ApproximateNumberOfMessagesVisible",
                    "Dimensions": [dimension("QueueName", get_att(FAILURE_QUEUE, "QueueName"))],
                    "Statistic": "Maximum",
                    "EvaluationPeriods": 1,
                    "Threshold": 0,
                }),
            ),
        ),
        (
            ERRORS_ALARM,
            alarm(
                errors,
                "usersync: the mirror function failed a whole invocation (AWS/Lambda Errors \
                 above 0: a crash, a timeout or running out of memory; users it reports as \
                 failed are retried and do not count). Read the function's log group; the \
                 mapping retries the batch, then sends it to the failure queue."
                    .to_owned(),
                json!({
                    "Namespace": "AWS/Lambda",
                    "MetricName": "Errors",
                    "Dimensions": [function()],
                    "Statistic": "Sum",
                    "EvaluationPeriods": 1,
                    "Threshold": 0,
                }),
            ),
        ),
        (
            LAG_ALARM,
            alarm(
                lag,
                format!(
                    "usersync: the objects trail the users table by more than {seconds} s: the \
                     largest time from a table write to its batch being mirrored was above that \
                     for {SUSTAINED_PERIODS} minutes in a row ({} {}, maximum, from the \
                     function's own metrics). Raise memory_mb or parallelization_factor.",
                    metrics::NAMESPACE,
                    metrics::metric::LAG_MS
                ),
                json!({
                    "Namespace": metrics::NAMESPACE,
                    "MetricName": metrics::metric::LAG_MS,
                    "Dimensions": [function()],
                    "Statistic": "Maximum",
                    "EvaluationPeriods": SUSTAINED_PERIODS,
                    "Threshold": threshold_ms,
                }),
            ),
        ),
    ]
}

fn dimension(name: &str, value: Value) -> Value {
    json!({ "Name": name, "Value": value })
}

/// The topic the alarms notify: the stack's own (`alarm_email`), an existing one
/// (`alarm_topic_arn`), or none.
fn actions(settings: &StackSettings) -> Option<Value> {
    match (&settings.alarm_email, &settings.alarm_topic_arn) {
        (Some(_), _) => Some(reference(logical_id::ALARM_TOPIC)),
        (None, Some(arn)) => Some(arn.clone().into()),
        (None, None) => None,
    }
}

/// With `alarm_email`: the topic, its key and the email subscription, by logical ID; else
/// nothing.
///
/// The topic is encrypted at rest (checkov CKV_AWS_26) with a customer managed key. Not with
/// the AWS managed key `alias/aws/sns`: its key policy cannot be changed, so CloudWatch may not
/// use it and alarm notifications to the topic are dropped without an error. Amazon SNS
/// Developer Guide, "Enable compatibility between event sources from AWS services and
/// encrypted topics"
/// (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services):
/// use a customer managed key, and let the publishing service's principal
/// (`cloudwatch.amazonaws.com` for CloudWatch alarms) have `kms:GenerateDataKey*` and
/// `kms:Decrypt` in its key policy. That statement is the page's, without conditions: the page
/// documents none for CloudWatch, and a condition key CloudWatch does not send would drop
/// every notification silently. The key encrypts this topic only, and publishing to the topic
/// still needs the topic's policy (its default: this account only).
pub(super) fn notification_resources(settings: &StackSettings) -> Vec<(&'static str, Value)> {
    use logical_id::*;

    let Some(email) = &settings.alarm_email else {
        return Vec::new();
    };
    let key = json!({
        "Type": "AWS::KMS::Key",
        "Properties": {
            "Description": sub("${AWS::StackName}: encrypts the alarm topic".to_owned()),
            "EnableKeyRotation": true,
            "KeyPolicy": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        // The key policy AWS gives a key by default: the account administers
                        // it, through IAM.
                        // https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html
                        "Sid": "AccountAdministersKey",
                        "Effect": "Allow",
                        "Principal": {
                            "AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root".to_owned())
                        },
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "CloudWatchAlarmsPublish",
                        "Effect": "Allow",
                        "Principal": { "Service": "cloudwatch.amazonaws.com" },
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                        "Resource": "*",
                    },
                ]
            },
        }
    });
    let topic = json!({
        "Type": "AWS::SNS::Topic",
        "Properties": {
            "DisplayName": sub("${AWS::StackName} alarms".to_owned()),
            "KmsMasterKeyId": get_att(ALARM_TOPIC_KEY, "Arn"),
        }
    });
    let subscription = json!({
        "Type": "AWS::SNS::Subscription",
        "Properties": {
            "TopicArn": reference(ALARM_TOPIC),
            "Protocol": "email",
            "Endpoint": email,
        }
    });
    vec![
        (ALARM_TOPIC_KEY, key),
        (ALARM_TOPIC, topic),
        (ALARM_EMAIL_SUBSCRIPTION, subscription),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    /// The properties every alarm carries.
    const COMMON_PROPERTIES: [&str; 5] = [
        "AlarmName",
        "AlarmDescription",
        "ComparisonOperator",
        "TreatMissingData",
        "Period",
    ];

    fn properties(settings: &StackSettings) -> Map<String, Value> {
        alarms(settings)
            .into_iter()
            .map(|(id, alarm)| (id.to_owned(), alarm["Properties"].clone()))
            .collect()
    }

    #[test]
    fn every_alarm_has_the_common_properties_and_no_actions_by_default() {
        for (id, p) in properties(&StackSettings::default()) {
            for name in COMMON_PROPERTIES {
                assert!(p.get(name).is_some(), "{id} has no {name}");
            }
            assert!(p.get("AlarmActions").is_none(), "{id}");
            assert!(p.get("OKActions").is_none(), "{id}");
        }
        assert!(notification_resources(&StackSettings::default()).is_empty());
    }

    #[test]
    fn the_threshold_is_the_setting_in_milliseconds() {
        let settings = StackSettings {
            alarm_iterator_age_seconds: 90,
            ..StackSettings::default()
        };
        assert_eq!(lag_threshold_ms(&settings), 90_000);
        let p = properties(&settings);
        assert_eq!(p[logical_id::ITERATOR_AGE_ALARM]["Threshold"], 90_000);
        assert_eq!(p[logical_id::LAG_ALARM]["Threshold"], 90_000);
        let description = p[logical_id::LAG_ALARM]["AlarmDescription"]
            .as_str()
            .unwrap();
        assert!(description.contains("more than 90 s"), "{description}");
    }

    #[test]
    fn names_are_the_stack_name_and_a_suffix() {
        assert_eq!(alarm_name("users", "iterator-age"), "users-iterator-age");
        let p = properties(&StackSettings::default());
        for (id, suffix) in ALARMS {
            assert_eq!(
                p[id]["AlarmName"],
                json!({ "Fn::Sub": format!("${{AWS::StackName}}-{suffix}") })
            );
        }
    }
}
