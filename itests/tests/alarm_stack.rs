//! The stack's alarms, their notification topic and the dashboard on the embedded emulator: a
//! stack with `alarm_email` is created (the key, the encrypted topic and its email
//! subscription with it), CloudWatch serves its four alarms, pointing at that topic, and its
//! dashboard with every name resolved; a new threshold updates the alarms in place; teardown
//! removes all of it.
//!
//! fakecloud's CloudFormation provisions each type used here
//! (`fakecloud-cloudformation/src/resource_provisioner/mod.rs` dispatches
//! `AWS::CloudWatch::Alarm` and `AWS::CloudWatch::Dashboard` to `cloudwatch.rs`,
//! `AWS::SNS::Topic` and `AWS::SNS::Subscription` to `sns.rs`, `AWS::KMS::Key` to `kms.rs`);
//! its alarms are stored, not evaluated, so their state says nothing about health here.

use std::collections::BTreeMap;

use deployer::console::RecordingConsole;
use deployer::settings::StackSettings;
use deployer::stack::{self, StackReport, TeardownOutcome};
use deployer::target::Target;
use deployer::template::{self, logical_id, output, ALARMS};
use deployer::workflow::{self, DeployResult};
use itests::emulator::{start, REGION};
use serde_json::Value;

const EMAIL: &str = "ops@example.com";

/// The stack's resources as `status` reports them: logical ID → (type, physical ID, status).
async fn resources(target: &Target, stack: &str) -> BTreeMap<String, (String, String, String)> {
    report(target, stack)
        .await
        .resources
        .into_iter()
        .map(|r| {
            let status = r.status_text().to_owned();
            let physical = r.physical_id.unwrap_or_default();
            (r.logical_id, (r.resource_type, physical, status))
        })
        .collect()
}

async fn stack_status(target: &Target, stack: &str) -> String {
    report(target, stack).await.status.as_str().to_owned()
}

async fn report(target: &Target, stack: &str) -> StackReport {
    stack::status(target, stack)
        .await
        .expect("the stack's status is read")
        .expect("the stack exists")
}

async fn deploy(target: &Target, settings: &StackSettings) -> workflow::DeployReport {
    settings.validate().expect("valid settings");
    let mut console = RecordingConsole::agreeing();
    workflow::deploy(
        target,
        settings,
        &workflow::DeployOptions::default(),
        &mut console,
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "deploy of {} failed: {}\n{:#?}",
            settings.stack_name,
            deployer::errors::chain(&err),
            console.lines
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_topic_subscription_and_dashboard_are_created_updated_and_torn_down() {
    let emulator = start().await;
    let target = Target::for_endpoint(&emulator.endpoint_url(), REGION);
    let stack_name = format!("itest-alarms-{}", std::process::id());
    let settings = StackSettings {
        stack_name: stack_name.clone(),
        alarm_email: Some(EMAIL.to_owned()),
        ..StackSettings::default()
    };

    // Created, every resource with it.
    let report = deploy(&target, &settings).await;
    assert_eq!(report.result, DeployResult::Created);
    assert_eq!(stack_status(&target, &stack_name).await, "CREATE_COMPLETE");
    let created = resources(&target, &stack_name).await;
    let mut expected: Vec<&str> = logical_id::ALL
        .into_iter()
        .chain(logical_id::NOTIFICATION)
        .collect();
    expected.sort_unstable();
    let listed: Vec<&str> = created.keys().map(String::as_str).collect();
    assert_eq!(listed, expected, "{created:#?}");
    for (id, (kind, physical, status)) in &created {
        assert_eq!(status, "CREATE_COMPLETE", "{id} ({kind})");
        assert!(!physical.is_empty(), "{id} ({kind}) has no physical ID");
    }
    let topic_arn = &created[logical_id::ALARM_TOPIC].1;
    assert!(topic_arn.starts_with("arn:aws:sns:"), "{topic_arn}");
    let (kind, subscription, _) = &created[logical_id::ALARM_EMAIL_SUBSCRIPTION];
    assert_eq!(kind, "AWS::SNS::Subscription");
    assert!(
        subscription.starts_with(&format!("{topic_arn}:")),
        "the subscription {subscription} is the topic's"
    );
    assert_eq!(created[logical_id::ALARM_TOPIC_KEY].0, "AWS::KMS::Key");

    // CloudWatch serves the four alarms, named after the stack, pointing at the topic.
    let cloudwatch = target.cloudwatch();
    let described = cloudwatch
        .describe_alarms()
        .alarm_name_prefix(format!("{stack_name}-"))
        .send()
        .await
        .expect("the alarms are described");
    let alarms: BTreeMap<&str, _> = described
        .metric_alarms()
        .iter()
        .map(|a| (a.alarm_name().unwrap_or_default(), a))
        .collect();
    let function = &report.outputs[output::FUNCTION_NAME];
    for (id, suffix) in ALARMS {
        let name = template::alarm_name(&stack_name, suffix);
        assert_eq!(created[id].1, name, "{id}'s physical ID is its name");
        let alarm = alarms
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no alarm {name} among {:?}", alarms.keys()));
        assert_eq!(
            alarm.alarm_actions(),
            std::slice::from_ref(topic_arn),
            "{name}"
        );
        assert_eq!(
            alarm.ok_actions(),
            std::slice::from_ref(topic_arn),
            "{name}"
        );
        assert_eq!(alarm.treat_missing_data(), Some("notBreaching"), "{name}");
        assert!(alarm.alarm_description().is_some(), "{name}");
        let dimension = &alarm.dimensions()[0];
        match dimension.name() {
            Some("FunctionName") => assert_eq!(dimension.value(), Some(function.as_str())),
            Some("QueueName") => {
                let url = &report.outputs[output::FAILURE_QUEUE_URL];
                assert!(
                    url.ends_with(&format!("/{}", dimension.value().unwrap_or_default())),
                    "{name}: the queue {url} is named {:?}",
                    dimension.value()
                );
            }
            other => panic!("{name}: unexpected dimension {other:?}"),
        }
    }
    assert_eq!(
        alarms[template::alarm_name(&stack_name, "iterator-age").as_str()].threshold(),
        Some(60_000.0)
    );

    // The dashboard, named after the stack, with the function's and the queue's names filled
    // in.
    assert_eq!(created[logical_id::DASHBOARD].1, stack_name);
    let dashboard = cloudwatch
        .get_dashboard()
        .dashboard_name(&stack_name)
        .send()
        .await
        .expect("the dashboard exists");
    let body = dashboard.dashboard_body().unwrap_or_default();
    assert!(!body.contains("${"), "an unresolved placeholder: {body}");
    let body: Value = serde_json::from_str(body).expect("the body is JSON");
    let widgets = body["widgets"].as_array().expect("widgets");
    assert_eq!(widgets.len(), 4, "{body:#}");
    assert_eq!(
        widgets[0]["properties"]["metrics"][0][3],
        function.as_str(),
        "{body:#}"
    );

    // A new threshold updates the alarms in place.
    let raised = StackSettings {
        alarm_iterator_age_seconds: 120,
        ..settings.clone()
    };
    let report = deploy(&target, &raised).await;
    assert_eq!(report.result, DeployResult::Updated);
    assert_eq!(stack_status(&target, &stack_name).await, "UPDATE_COMPLETE");
    let updated = resources(&target, &stack_name).await;
    assert_eq!(
        updated.keys().collect::<Vec<_>>(),
        created.keys().collect::<Vec<_>>()
    );
    for id in [logical_id::ITERATOR_AGE_ALARM, logical_id::LAG_ALARM] {
        let name = &updated[id].1;
        let described = cloudwatch
            .describe_alarms()
            .alarm_names(name)
            .send()
            .await
            .expect("the alarm is described");
        assert_eq!(
            described.metric_alarms()[0].threshold(),
            Some(120_000.0),
            "{name}"
        );
    }

    // Teardown removes the alarms and the dashboard.
    let mut console = RecordingConsole::agreeing();
    let outcome = stack::teardown(&target, &stack_name, false, false, &mut console)
        .await
        .expect("teardown");
    assert!(
        matches!(outcome, TeardownOutcome::TornDown { .. }),
        "{outcome:?}"
    );
    let left = cloudwatch
        .describe_alarms()
        .alarm_name_prefix(format!("{stack_name}-"))
        .send()
        .await
        .expect("the alarms are described");
    assert!(
        left.metric_alarms().is_empty(),
        "{:?}",
        left.metric_alarms()
    );
    assert!(
        cloudwatch
            .get_dashboard()
            .dashboard_name(&stack_name)
            .send()
            .await
            .is_err(),
        "the dashboard {stack_name} is gone"
    );
}
