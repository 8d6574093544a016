//! The template's alarms, their notifications and the dashboard: each alarm's metric,
//! statistic, dimensions, threshold, periods and missing-data rule; what `alarm_email` and
//! `alarm_topic_arn` add (and that setting both is refused, naming both); that adopting a table
//! or bucket keeps every alarm; that none of it changes the role; the dashboard's graphs; and the
//! template's size against CloudFormation's limit. No network; cfn-lint and checkov scan these
//! variants in `tests/template.rs`.

use std::collections::BTreeSet;

use deployer::settings::{ArtifactLocation, DeleteScope, SettingsError, StackSettings};
use deployer::template::{
    self, logical_id, synthesize, synthesize_adopting, to_json_string, AdoptedBucket, AdoptedTable,
    Adoption, ALARMS,
};
use serde_json::{json, Value};
use usersync_function::metrics;

fn artifact() -> ArtifactLocation {
    ArtifactLocation {
        bucket: "usersync-assets-123456789012-eu-west-1".to_owned(),
        key: "usersync/bootstrap-0123abcd.zip".to_owned(),
    }
}

const EMAIL: &str = "ops@example.com";
const TOPIC_ARN: &str = "arn:aws:sns:eu-west-1:123456789012:ops-alarms";

fn with(change: impl FnOnce(&mut StackSettings)) -> StackSettings {
    let mut settings = StackSettings::default();
    change(&mut settings);
    settings
        .validate()
        .unwrap_or_else(|err| panic!("{settings:?} should be valid: {err}"));
    settings
}

fn email() -> StackSettings {
    with(|s| s.alarm_email = Some(EMAIL.to_owned()))
}

fn topic() -> StackSettings {
    with(|s| s.alarm_topic_arn = Some(TOPIC_ARN.to_owned()))
}

fn props<'a>(template: &'a Value, id: &str) -> &'a Value {
    let resource = template["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("the template has no resource {id}"));
    &resource["Properties"]
}

fn ids(template: &Value) -> BTreeSet<String> {
    template["Resources"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// What an alarm watches and when it fires, as the template should say it.
struct Expected {
    id: &'static str,
    name: &'static str,
    namespace: &'static str,
    metric: &'static str,
    dimensions: Value,
    statistic: &'static str,
    threshold: u64,
    evaluation_periods: u64,
}

/// The four alarms of a stack whose mirror may trail the table by `seconds`.
fn expected(seconds: u64) -> [Expected; 4] {
    let function = json!([{ "Name": "FunctionName", "Value": { "Ref": "MirrorFunction" } }]);
    [
        Expected {
            id: logical_id::ITERATOR_AGE_ALARM,
            name: "${AWS::StackName}-iterator-age",
            namespace: "AWS/Lambda",
            metric: "IteratorAge",
            dimensions: function.clone(),
            statistic: "Maximum",
            // IteratorAge is in milliseconds.
            threshold: seconds * 1000,
            evaluation_periods: 3,
        },
        Expected {
            id: logical_id::FAILURE_QUEUE_ALARM,
            name: "${AWS::StackName}-failure-queue",
            namespace: "AWS/SQS",
            metric: "ApproximateNumberOfMessagesVisible",
            dimensions: json!([{
                "Name": "QueueName",
                "Value": { "Fn::GetAtt": ["FailureQueue", "QueueName"] }
            }]),
            statistic: "Maximum",
            threshold: 0,
            evaluation_periods: 1,
        },
        Expected {
            id: logical_id::ERRORS_ALARM,
            name: "${AWS::StackName}-errors",
            namespace: "AWS/Lambda",
            metric: "Errors",
            dimensions: function.clone(),
            statistic: "Sum",
            threshold: 0,
            evaluation_periods: 1,
        },
        Expected {
            id: logical_id::LAG_ALARM,
            name: "${AWS::StackName}-lag",
            // The function's EMF metrics contract.
            namespace: metrics::NAMESPACE,
            metric: metrics::metric::LAG_MS,
            dimensions: json!([{ "Name": metrics::DIMENSION, "Value": { "Ref": "MirrorFunction" } }]),
            statistic: "Maximum",
            threshold: seconds * 1000,
            evaluation_periods: 3,
        },
    ]
}

fn assert_alarm(template: &Value, e: &Expected) {
    let resource = &template["Resources"][e.id];
    assert_eq!(resource["Type"], "AWS::CloudWatch::Alarm", "{}", e.id);
    let p = &resource["Properties"];
    assert_eq!(p["AlarmName"], json!({ "Fn::Sub": e.name }), "{}", e.id);
    let description = p["AlarmDescription"].as_str().unwrap_or_default();
    assert!(
        description.starts_with("usersync: ") && description.split_whitespace().count() > 15,
        "{}: {description:?} says what fired and what to do",
        e.id
    );
    assert_eq!(p["Namespace"], e.namespace, "{}", e.id);
    assert_eq!(p["MetricName"], e.metric, "{}", e.id);
    assert_eq!(p["Dimensions"], e.dimensions, "{}", e.id);
    assert_eq!(p["Statistic"], e.statistic, "{}", e.id);
    assert_eq!(p["Threshold"], e.threshold, "{}", e.id);
    assert_eq!(p["ComparisonOperator"], "GreaterThanThreshold", "{}", e.id);
    assert_eq!(p["Period"], 60, "{}", e.id);
    assert_eq!(p["EvaluationPeriods"], e.evaluation_periods, "{}", e.id);
    // An idle stack has no data points: OK, not INSUFFICIENT_DATA.
    assert_eq!(p["TreatMissingData"], "notBreaching", "{}", e.id);
    // A unit the metric is not published with would leave the alarm without data.
    assert!(p.get("Unit").is_none(), "{}", e.id);
}

#[test]
fn each_alarm_watches_its_metric_with_its_statistic_dimensions_and_threshold() {
    let template = synthesize(&StackSettings::default(), &artifact());
    for e in expected(60) {
        assert_alarm(&template, &e);
    }
    let template = synthesize(&with(|s| s.alarm_iterator_age_seconds = 300), &artifact());
    for e in expected(300) {
        assert_alarm(&template, &e);
    }
    assert_eq!(
        template::lag_threshold_ms(&with(|s| s.alarm_iterator_age_seconds = 300)),
        300_000
    );
    let description = props(&template, logical_id::ITERATOR_AGE_ALARM)["AlarmDescription"]
        .as_str()
        .unwrap();
    assert!(description.contains("more than 300 s"), "{description}");
}

#[test]
fn the_alarms_are_the_crates_constants() {
    let expected_ids: Vec<&str> = expected(60).iter().map(|e| e.id).collect();
    let listed: Vec<&str> = ALARMS.iter().map(|(id, _)| *id).collect();
    assert_eq!(listed, expected_ids);
    for ((_, suffix), e) in ALARMS.iter().zip(expected(60)) {
        assert_eq!(
            template::alarm_name("${AWS::StackName}", suffix),
            e.name,
            "{suffix}"
        );
    }
    assert_eq!(
        template::alarm_name("usersync", "failure-queue"),
        "usersync-failure-queue"
    );
}

#[test]
fn without_a_notification_setting_the_alarms_have_no_actions_and_no_topic() {
    let template = synthesize(&StackSettings::default(), &artifact());
    for (id, _) in ALARMS {
        let p = props(&template, id);
        for actions in ["AlarmActions", "OKActions", "InsufficientDataActions"] {
            assert!(p.get(actions).is_none(), "{id} has {actions}");
        }
    }
    let resources = ids(&template);
    for id in logical_id::NOTIFICATION {
        assert!(!resources.contains(id), "{id}");
    }
    let types: BTreeSet<&str> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["Type"].as_str().unwrap())
        .collect();
    assert!(!types.contains("AWS::SNS::Topic"), "{types:?}");
    assert!(!types.contains("AWS::KMS::Key"), "{types:?}");
}

#[test]
fn an_alarm_email_adds_an_encrypted_topic_with_that_one_subscription() {
    let template = synthesize(&email(), &artifact());
    let default = synthesize(&StackSettings::default(), &artifact());
    let added: BTreeSet<String> = ids(&template).difference(&ids(&default)).cloned().collect();
    let notification: BTreeSet<String> = logical_id::NOTIFICATION
        .iter()
        .map(|id| (*id).to_owned())
        .collect();
    assert_eq!(added, notification);

    let topic = json!({ "Ref": logical_id::ALARM_TOPIC });
    for (id, _) in ALARMS {
        let p = props(&template, id);
        assert_eq!(p["AlarmActions"], json!([topic]), "{id}");
        // Recovery is told too: the operator learns that the mirror caught up.
        assert_eq!(p["OKActions"], json!([topic]), "{id}");
        assert!(p.get("InsufficientDataActions").is_none(), "{id}");
    }

    assert_eq!(
        template["Resources"][logical_id::ALARM_EMAIL_SUBSCRIPTION],
        json!({
            "Type": "AWS::SNS::Subscription",
            "Properties": { "TopicArn": topic, "Protocol": "email", "Endpoint": EMAIL }
        })
    );
    let topic_props = props(&template, logical_id::ALARM_TOPIC);
    assert_eq!(
        template["Resources"][logical_id::ALARM_TOPIC]["Type"],
        "AWS::SNS::Topic"
    );
    // A key of the stack's own, not alias/aws/sns, whose policy CloudWatch cannot use.
    assert_eq!(
        topic_props["KmsMasterKeyId"],
        json!({ "Fn::GetAtt": [logical_id::ALARM_TOPIC_KEY, "Arn"] })
    );
    let key = &template["Resources"][logical_id::ALARM_TOPIC_KEY];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    assert_eq!(
        key["Properties"]["KeyPolicy"],
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministersKey",
                    "Effect": "Allow",
                    "Principal": {
                        "AWS": { "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root" }
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
        })
    );
}

#[test]
fn an_alarm_topic_arn_is_notified_and_adds_no_resource() {
    let template = synthesize(&topic(), &artifact());
    let default = synthesize(&StackSettings::default(), &artifact());
    assert_eq!(ids(&template), ids(&default));
    for (id, _) in ALARMS {
        let p = props(&template, id);
        assert_eq!(p["AlarmActions"], json!([TOPIC_ARN]), "{id}");
        assert_eq!(p["OKActions"], json!([TOPIC_ARN]), "{id}");
    }
}

#[test]
fn both_notification_settings_are_refused_naming_both() {
    let mut both = email();
    both.alarm_topic_arn = Some(TOPIC_ARN.to_owned());
    let err = both.validate().unwrap_err();
    assert!(matches!(err, SettingsError::Conflict { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("alarm_email and alarm_topic_arn are both set: "),
        "{message}"
    );
}

fn adoptions() -> Vec<Adoption> {
    let table = AdoptedTable {
        name: "people".to_owned(),
        stream_arn:
            "arn:aws:dynamodb:eu-west-1:123456789012:table/people/stream/2024-05-01T00:00:00.000"
                .to_owned(),
        key_attribute: "user_id".to_owned(),
        kms_key_arn: None,
    };
    let bucket = AdoptedBucket {
        name: "people-mirror".to_owned(),
        kms_key_arn: None,
    };
    vec![
        Adoption {
            table: Some(table.clone()),
            bucket: None,
        },
        Adoption {
            table: None,
            bucket: Some(bucket.clone()),
        },
        Adoption {
            table: Some(table),
            bucket: Some(bucket),
        },
    ]
}

#[test]
fn a_stack_that_adopts_its_table_or_bucket_keeps_every_alarm_and_the_dashboard() {
    for adoption in adoptions() {
        for settings in [StackSettings::default(), email(), topic()] {
            let template = synthesize_adopting(&settings, &artifact(), &adoption);
            let plain = synthesize(&settings, &artifact());
            for e in expected(60) {
                assert_alarm(&template, &e);
                assert_eq!(
                    template["Resources"][e.id], plain["Resources"][e.id],
                    "{}: {adoption:?}",
                    e.id
                );
            }
            assert_eq!(
                template["Resources"][logical_id::DASHBOARD],
                plain["Resources"][logical_id::DASHBOARD]
            );
            for id in logical_id::NOTIFICATION {
                assert_eq!(
                    template["Resources"].get(id),
                    plain["Resources"].get(id),
                    "{id}"
                );
            }
        }
    }
}

#[test]
fn the_alarm_settings_leave_the_role_and_the_function_unchanged() {
    for scope in [DeleteScope::Object, DeleteScope::Prefix] {
        let base = with(|s| s.delete_scope = scope);
        let reference = synthesize(&base, &artifact());
        for settings in [
            StackSettings {
                alarm_email: Some(EMAIL.to_owned()),
                ..base.clone()
            },
            StackSettings {
                alarm_topic_arn: Some(TOPIC_ARN.to_owned()),
                alarm_iterator_age_seconds: 30,
                ..base.clone()
            },
        ] {
            let template = synthesize(&settings, &artifact());
            for id in [
                logical_id::FUNCTION_ROLE,
                logical_id::MIRROR_FUNCTION,
                logical_id::EVENT_SOURCE_MAPPING,
                logical_id::FAILURE_QUEUE,
            ] {
                assert_eq!(
                    template["Resources"][id], reference["Resources"][id],
                    "{id} with {settings:?}"
                );
            }
        }
    }
}

/// The dashboard's body with its `Fn::Sub` placeholders filled as CloudFormation would.
fn dashboard_body(template: &Value) -> Value {
    let text = props(template, logical_id::DASHBOARD)["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("the body is an Fn::Sub of text");
    let filled = text
        .replace("${AWS::Region}", "eu-west-1")
        .replace("${MirrorFunction}", "usersync-mirror")
        .replace("${FailureQueue.QueueName}", "usersync-FailureQueue-AbC123");
    assert!(
        !filled.contains("${"),
        "an unresolved placeholder: {filled}"
    );
    serde_json::from_str(&filled).expect("the filled body is JSON")
}

#[test]
fn the_dashboard_graphs_what_each_alarm_watches() {
    let template = synthesize(&with(|s| s.alarm_iterator_age_seconds = 120), &artifact());
    let dashboard = &template["Resources"][logical_id::DASHBOARD];
    assert_eq!(dashboard["Type"], "AWS::CloudWatch::Dashboard");
    assert_eq!(
        dashboard["Properties"]["DashboardName"],
        json!({ "Fn::Sub": "${AWS::StackName}" })
    );
    let body = dashboard_body(&template);
    let widgets = body["widgets"].as_array().unwrap();
    assert_eq!(widgets.len(), ALARMS.len());
    for (widget, e) in widgets.iter().zip(expected(120)) {
        let p = &widget["properties"];
        assert_eq!(widget["type"], "metric", "{}", e.id);
        assert_eq!(p["region"], "eu-west-1", "{}", e.id);
        assert_eq!(p["stat"], e.statistic, "{}", e.id);
        assert_eq!(p["period"], 60, "{}", e.id);
        assert!(
            !p["title"].as_str().unwrap_or_default().is_empty(),
            "{}",
            e.id
        );
        let dimension = &e.dimensions[0];
        let value = match dimension["Name"].as_str().unwrap() {
            "QueueName" => "usersync-FailureQueue-AbC123",
            _ => "usersync-mirror",
        };
        assert_eq!(
            p["metrics"],
            json!([[e.namespace, e.metric, dimension["Name"], value]]),
            "{}",
            e.id
        );
        // The lag graphs draw their alarm's threshold.
        let annotation = &p["annotations"]["horizontal"];
        if e.threshold > 0 {
            assert_eq!(
                annotation,
                &json!([{ "label": "alarm", "value": e.threshold }]),
                "{}",
                e.id
            );
        } else {
            assert!(annotation.is_null(), "{}", e.id);
        }
    }
}

/// CloudFormation's limit on a template passed inline (`TemplateBody`), in bytes:
/// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html
const INLINE_TEMPLATE_LIMIT: usize = 51_200;

#[test]
fn the_largest_template_stays_well_under_the_inline_template_limit() {
    // Every resource at once: an alarm email's topic, the prefix scope's extra permission, and
    // an adopted table and bucket with KMS keys (more statements, more outputs).
    let largest = with(|s| {
        s.alarm_email = Some(EMAIL.to_owned());
        s.delete_scope = DeleteScope::Prefix;
        s.key_prefix = "users/".to_owned();
        s.max_concurrency = Some(16);
    });
    let mut adopted = adoptions().pop().unwrap();
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    adopted.table.as_mut().unwrap().kms_key_arn = Some(key.to_owned());
    adopted.bucket.as_mut().unwrap().kms_key_arn = Some(key.to_owned());
    let variants = [
        (
            "default",
            synthesize(&StackSettings::default(), &artifact()),
        ),
        (
            "largest, own table and bucket",
            synthesize(&largest, &artifact()),
        ),
        (
            "largest, adopted table and bucket",
            synthesize_adopting(&largest, &artifact(), &adopted),
        ),
    ];
    for (name, template) in variants {
        // What deploy sends: the pretty JSON.
        let bytes = to_json_string(&template).len();
        println!(
            "template size ({name}): {bytes} bytes, {}% of CloudFormation's {INLINE_TEMPLATE_LIMIT}",
            bytes * 100 / INLINE_TEMPLATE_LIMIT
        );
        assert!(
            bytes <= INLINE_TEMPLATE_LIMIT / 2,
            "the {name} template is {bytes} bytes, more than half of CloudFormation's \
             {INLINE_TEMPLATE_LIMIT}-byte limit for a template body: make the dashboard or the \
             descriptions smaller before it grows further"
        );
    }
}
