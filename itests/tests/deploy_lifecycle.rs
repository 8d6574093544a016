//! The deployer against the embedded emulator: deploy → status → deploy again (no-op) →
//! teardown, with the resources checked to exist and then to be gone.

use deployer::console::RecordingConsole;
use deployer::settings::StackSettings;
use deployer::stack::{self, ResourceStatus, StackStatus, TeardownOutcome};
use deployer::target::Target;
use deployer::template::{logical_id, output};
use deployer::workflow::{self, DeployResult};
use itests::emulator::{start, REGION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_status_noop_deploy_and_teardown() {
    let emulator = start().await;
    let target = Target::for_endpoint(&emulator.endpoint_url(), REGION);
    let settings = StackSettings {
        stack_name: format!("itest-lifecycle-{}", std::process::id()),
        ..StackSettings::default()
    };
    let stack_name = settings.stack_name.clone();

    // Create.
    let mut console = RecordingConsole::agreeing();
    let report = workflow::deploy(
        &target,
        &settings,
        &workflow::DeployOptions::default(),
        &mut console,
    )
    .await
    .expect("first deploy");
    assert_eq!(report.result, DeployResult::Created);
    assert_eq!(
        report.changes.len(),
        logical_id::ALL.len(),
        "every resource is added: {:?}",
        report.changes
    );
    assert!(report.artifact_uploaded);
    for name in output::ALL {
        assert!(
            report.outputs.contains_key(name),
            "output {name} missing: {:?}",
            report.outputs
        );
    }
    assert!(
        console
            .lines
            .iter()
            .any(|l| l.contains("CREATE_COMPLETE") && l.contains("UsersTable")),
        "resource events are shown as they happen: {:#?}",
        console.lines
    );

    // The resources exist.
    let outputs = &report.outputs;
    let table = &outputs[output::TABLE_NAME];
    let bucket = &outputs[output::BUCKET_NAME];
    let function = &outputs[output::FUNCTION_NAME];
    let described = target
        .dynamodb()
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("table exists");
    let stream = described
        .table()
        .and_then(|t| t.stream_specification())
        .expect("the table has a stream");
    assert!(stream.stream_enabled());
    target
        .s3()
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("bucket exists");
    let function_config = target
        .lambda()
        .get_function()
        .function_name(function)
        .send()
        .await
        .expect("function exists");
    let env = function_config
        .configuration()
        .and_then(|c| c.environment())
        .and_then(|e| e.variables())
        .expect("the function has environment variables");
    assert_eq!(env.get("BUCKET_NAME"), Some(bucket));

    // Status.
    let status = stack::status(&target, &stack_name)
        .await
        .unwrap()
        .expect("the stack exists");
    assert_eq!(status.status, StackStatus::CreateComplete);
    assert_eq!(status.resources.len(), logical_id::ALL.len());
    assert!(
        status
            .resources
            .iter()
            .all(|r| r.status == Some(ResourceStatus::CreateComplete)),
        "{:?}",
        status.resources
    );
    assert_eq!(status.event_source_mappings.len(), 1);
    assert_eq!(status.failure_queue_depth, Some(0));
    assert_eq!(status.bucket_objects, Some(0));

    // Nothing changed: up to date, nothing executed, the archive not uploaded again.
    let mut console = RecordingConsole::agreeing();
    let again = workflow::deploy(
        &target,
        &settings,
        &workflow::DeployOptions::default(),
        &mut console,
    )
    .await
    .expect("second deploy");
    assert_eq!(again.result, DeployResult::UpToDate);
    assert!(!again.artifact_uploaded);
    assert_eq!(again.outputs, report.outputs);
    assert!(
        !console
            .lines
            .iter()
            .any(|l| l.contains("UPDATE_IN_PROGRESS")),
        "{:#?}",
        console.lines
    );

    // Data in the bucket does not stop the teardown: it is emptied first.
    for key in ["alice/userdata", "bob/userdata", "bob/avatar.png"] {
        target
            .s3()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(b"{}".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let mut console = RecordingConsole::agreeing();
    let outcome = stack::teardown(&target, &stack_name, false, false, &mut console)
        .await
        .expect("teardown");
    assert_eq!(
        outcome,
        TeardownOutcome::TornDown {
            emptied_objects: 3,
            removed_artifacts: 1,
            data_retained: false
        }
    );

    // Everything is gone.
    assert!(stack::status(&target, &stack_name).await.unwrap().is_none());
    assert!(
        target
            .s3()
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .is_err(),
        "bucket {bucket} is gone"
    );
    assert!(
        target
            .dynamodb()
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_err(),
        "table {table} is gone"
    );
    assert!(
        target
            .lambda()
            .get_function()
            .function_name(function)
            .send()
            .await
            .is_err(),
        "function {function} is gone"
    );

    // A second teardown has nothing to do.
    let outcome = stack::teardown(&target, &stack_name, false, false, &mut console)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        TeardownOutcome::NothingToTearDown {
            removed_artifacts: 0
        }
    );
}
