//! Stack lifecycle edge cases without a network: `deploy` and `teardown` run unchanged against a
//! scripted fake of CloudFormation, STS and S3 (see `support`) plugged in as the SDK's HTTP
//! client. Covered: nothing to change, a change set that changes only outputs, a failed create, a
//! stack left in `ROLLBACK_COMPLETE`, an update that rolls back, a stack missing at teardown, a
//! stack busy with another operation, stacks stuck in `UPDATE_ROLLBACK_FAILED`,
//! `ROLLBACK_FAILED` and `DELETE_FAILED`, the teardown's order (event source mapping disabled
//! before the data bucket is emptied, the deletion retried when the bucket was written to after
//! emptying), the assets bucket's owner check (`ExpectedBucketOwner` on every request), and a
//! stack that adopted an existing table and bucket (remembered from its outputs, left alone by
//! the teardown).

mod support;

use deployer::console::RecordingConsole;
use deployer::settings::{ArtifactLocation, StackSettings};
use deployer::stack::{
    check_adoption, deploy, teardown, teardown_report, upload_artifact, AdoptedNames,
    AdoptionError, DeployOutcome, ResourceFailure, ResourceStatus, StackError, StackStatus,
    TeardownOutcome, TeardownReport, UploadedArtifact,
};
use deployer::template::{
    output, synthesize, synthesize_adopting, to_json_string, AdoptedBucket, AdoptedTable, Adoption,
};
use support::{
    physical_id, Bucket, Change, ChangeSetOutcome, Clock, Event, ExistingStack, FakeAws, Mapping,
    Scenario, Step, ACCOUNT, ASSETS_BUCKET,
};

const STACK: &str = "usersync-test";

const TABLE: &str = "AWS::DynamoDB::Table";
const BUCKET: &str = "AWS::S3::Bucket";
const FUNCTION: &str = "AWS::Lambda::Function";
const MAPPING: &str = "AWS::Lambda::EventSourceMapping";
/// An account other than the fake's own.
const STRANGER: &str = "999999999999";

/// AWS's status reason for a change set that changes nothing.
const NO_CHANGES: &str =
    "The submitted information didn't contain changes. Submit different information to create a change set.";

/// The template `deploy` is given: the real synthesised one, for an archive at `key`.
fn template(key: &str) -> String {
    to_json_string(&synthesize(
        &StackSettings::default(),
        &ArtifactLocation {
            bucket: ASSETS_BUCKET.to_owned(),
            key: format!("{STACK}/{key}"),
        },
    ))
}

/// The same template as CloudFormation hands it back: the same JSON, laid out differently.
fn as_stored(template: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(template).expect("the template is JSON");
    serde_json::to_string(&value).expect("JSON serialises")
}

fn outputs() -> Vec<(String, String)> {
    vec![
        ("BucketName".to_owned(), "usersync-test-data".to_owned()),
        ("TableName".to_owned(), "usersync-test-users".to_owned()),
    ]
}

fn outputs_map() -> std::collections::BTreeMap<String, String> {
    outputs().into_iter().collect()
}

/// The events of the stack's first, successful create: history, never to be shown again.
fn create_history() -> Vec<Event> {
    vec![
        Event::stack(STACK, "REVIEW_IN_PROGRESS").because("User Initiated"),
        Event::stack(STACK, "CREATE_IN_PROGRESS").because("User Initiated"),
        Event::resource("UsersTable", TABLE, "CREATE_IN_PROGRESS"),
        Event::resource("DataBucket", BUCKET, "CREATE_IN_PROGRESS"),
        Event::resource("UsersTable", TABLE, "CREATE_COMPLETE"),
        Event::resource("DataBucket", BUCKET, "CREATE_COMPLETE"),
        Event::resource("MirrorFunction", FUNCTION, "CREATE_COMPLETE"),
        Event::stack(STACK, "CREATE_COMPLETE"),
    ]
}

fn existing(status: &str, template: &str) -> ExistingStack {
    ExistingStack {
        status: status.to_owned(),
        template: as_stored(template),
        outputs: outputs(),
        history: create_history(),
    }
}

fn add(logical_id: &'static str, resource_type: &'static str) -> Change {
    Change {
        action: "Add",
        logical_id,
        resource_type,
        replacement: None,
    }
}

/// Asserts that `lines` are exactly one line per event, in order, each naming the event's
/// resource, status and reason.
fn assert_shows_events(lines: &[String], events: &[Event]) {
    assert_eq!(
        lines.len(),
        events.len(),
        "expected one line per event {events:#?}, got {lines:#?}"
    );
    for (line, event) in lines.iter().zip(events) {
        assert!(
            line.contains(&event.logical_id)
                && line.contains(&event.status)
                && line.contains(&event.resource_type)
                && event.reason.as_deref().is_none_or(|r| line.contains(r)),
            "line {line:?} does not show {event:?}"
        );
    }
}

/// The scripted steps of a create that fails on the data bucket and rolls back, and the events
/// they write, in order.
fn failed_create() -> (Vec<Step>, Vec<Event>) {
    let steps = vec![
        Step::new(
            "CREATE_IN_PROGRESS",
            vec![
                Event::stack(STACK, "CREATE_IN_PROGRESS").because("User Initiated"),
                Event::resource("UsersTable", TABLE, "CREATE_IN_PROGRESS"),
                Event::resource("DataBucket", BUCKET, "CREATE_IN_PROGRESS"),
            ],
        ),
        Step::new(
            "ROLLBACK_IN_PROGRESS",
            vec![
                Event::resource("DataBucket", BUCKET, "CREATE_FAILED")
                    .because("usersync-test-data already exists"),
                Event::resource("UsersTable", TABLE, "CREATE_FAILED")
                    .because("Resource creation cancelled"),
                Event::stack(STACK, "ROLLBACK_IN_PROGRESS").because(
                    "The following resource(s) failed to create: [DataBucket, UsersTable]. Rollback requested by user.",
                ),
            ],
        ),
        Step::new(
            "ROLLBACK_IN_PROGRESS",
            vec![
                Event::resource("UsersTable", TABLE, "DELETE_COMPLETE"),
                Event::resource("DataBucket", BUCKET, "DELETE_COMPLETE"),
            ],
        ),
        Step::new(
            "ROLLBACK_COMPLETE",
            vec![Event::stack(STACK, "ROLLBACK_COMPLETE")],
        ),
    ];
    let events = steps.iter().flat_map(|s| s.events.clone()).collect();
    (steps, events)
}

fn expected_create_failures() -> Vec<ResourceFailure> {
    vec![
        ResourceFailure {
            logical_id: "DataBucket".to_owned(),
            resource_type: BUCKET.to_owned(),
            status: ResourceStatus::CreateFailed,
            reason: "usersync-test-data already exists".to_owned(),
        },
        ResourceFailure {
            logical_id: "UsersTable".to_owned(),
            resource_type: TABLE.to_owned(),
            status: ResourceStatus::CreateFailed,
            reason: "Resource creation cancelled".to_owned(),
        },
    ]
}

/// A stack whose deployed template is the one being deployed (stored with another layout) is up
/// to date: `deploy` compares the JSON, returns the stack's outputs, plans no change set and
/// executes nothing.
#[tokio::test]
async fn unchanged_template_is_up_to_date_without_a_change_set() {
    let body = template("bootstrap-v1.zip");
    let fake = FakeAws::new(Scenario {
        existing: Some(existing("UPDATE_COMPLETE", &body)),
        ..Scenario::new(STACK)
    });
    assert_ne!(fake.deployed_template().as_deref(), Some(body.as_str()));
    let mut console = RecordingConsole::default();

    let outcome = deploy(&fake.target(), STACK, &body, &mut console)
        .await
        .expect("deploy succeeds");

    assert_eq!(
        outcome,
        DeployOutcome::UpToDate {
            outputs: outputs_map()
        }
    );
    assert_eq!(fake.actions(), ["DescribeStacks", "GetTemplate"]);
    let get_template = fake.only_call("GetTemplate");
    assert_eq!(get_template.param("StackName"), Some(STACK));
    assert_eq!(get_template.param("TemplateStage"), Some("Original"));
    assert!(console.lines.is_empty(), "{:?}", console.lines);
    assert!(console.questions.is_empty());
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// When the templates differ but CloudFormation's change set fails because it holds no changes
/// (both of AWS's wordings), the deploy is up to date: the pending change set is deleted, nothing
/// is executed and the stack's outputs are returned.
#[tokio::test]
async fn change_set_without_changes_is_up_to_date_and_removed() {
    for reason in [NO_CHANGES, "No updates are to be performed."] {
        let deployed = template("bootstrap-v1.zip");
        let fake = FakeAws::new(Scenario {
            existing: Some(existing("UPDATE_COMPLETE", &deployed)),
            change_set: ChangeSetOutcome::Failed(reason.to_owned()),
            ..Scenario::new(STACK)
        });
        let body = template("bootstrap-v2.zip");
        let mut console = RecordingConsole::default();

        let outcome = deploy(&fake.target(), STACK, &body, &mut console)
            .await
            .expect("deploy succeeds");

        assert_eq!(
            outcome,
            DeployOutcome::UpToDate {
                outputs: outputs_map()
            },
            "{reason}"
        );
        assert_eq!(fake.mutations(), ["CreateChangeSet", "DeleteChangeSet"]);
        let create = fake.only_call("CreateChangeSet");
        assert_eq!(create.param("StackName"), Some(STACK));
        assert_eq!(create.param("ChangeSetType"), Some("UPDATE"));
        assert_eq!(create.param("TemplateBody"), Some(body.as_str()));
        assert_eq!(
            create.param("Capabilities.member.1"),
            Some("CAPABILITY_IAM")
        );
        // The change set was polled until computed, then the very one created was deleted.
        assert_eq!(fake.calls_of("DescribeChangeSet").len(), 2);
        assert!(
            fake.change_set_ids().is_empty(),
            "a change set was left behind"
        );
        assert_eq!(fake.stack_status().as_deref(), Some("UPDATE_COMPLETE"));
        assert!(console.lines.is_empty(), "{:?}", console.lines);
        assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    }
}

/// A change set that fails for any other reason is an error that carries CloudFormation's reason,
/// and nothing is executed: the "no changes" detection does not swallow real failures.
#[tokio::test]
async fn change_set_failing_for_another_reason_is_reported() {
    let reason = "Template format error: Unresolved resource dependencies [Missing] in the Resources block of the template";
    let fake = FakeAws::new(Scenario {
        existing: Some(existing("UPDATE_COMPLETE", &template("bootstrap-v1.zip"))),
        change_set: ChangeSetOutcome::Failed(reason.to_owned()),
        ..Scenario::new(STACK)
    });
    let mut console = RecordingConsole::default();

    let err = deploy(
        &fake.target(),
        STACK,
        &template("bootstrap-v2.zip"),
        &mut console,
    )
    .await
    .expect_err("the change set failed");

    match &err {
        StackError::ChangeSetFailed { stack, reason: got } => {
            assert_eq!(stack, STACK);
            assert_eq!(got, reason);
        }
        other => panic!("expected ChangeSetFailed, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("failed to plan the changes to stack {STACK}: {reason}")
    );
    assert_eq!(fake.mutations(), ["CreateChangeSet"]);
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// A first deploy whose create fails: a CREATE change set is planned and executed, every event of
/// the execution is shown once and in order (not the change set's `REVIEW_IN_PROGRESS`), and the
/// stack's `ROLLBACK_COMPLETE` ends in `DeployFailed` listing each failed resource with its
/// reason, in the error's value and in its message.
#[tokio::test]
async fn failed_create_reports_each_failed_resource() {
    let (steps, events) = failed_create();
    let fake = FakeAws::new(Scenario {
        change_set: ChangeSetOutcome::Changes(vec![
            add("UsersTable", TABLE),
            add("DataBucket", BUCKET),
        ]),
        execution: steps,
        ..Scenario::new(STACK)
    });
    let body = template("bootstrap-v1.zip");
    let mut console = RecordingConsole::default();

    let err = deploy(&fake.target(), STACK, &body, &mut console)
        .await
        .expect_err("the create fails");

    match &err {
        StackError::DeployFailed {
            stack,
            status,
            failures,
        } => {
            assert_eq!(stack, STACK);
            assert_eq!(status, &StackStatus::RollbackComplete);
            assert_eq!(failures, &expected_create_failures());
        }
        other => panic!("expected DeployFailed, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "deploy of stack {STACK} failed, the stack is ROLLBACK_COMPLETE; failed resources:\n  \
             DataBucket (AWS::S3::Bucket) CREATE_FAILED: usersync-test-data already exists\n  \
             UsersTable (AWS::DynamoDB::Table) CREATE_FAILED: Resource creation cancelled"
        )
    );

    assert_eq!(fake.mutations(), ["CreateChangeSet", "ExecuteChangeSet"]);
    let create = fake.only_call("CreateChangeSet");
    assert_eq!(create.param("ChangeSetType"), Some("CREATE"));
    assert_eq!(create.param("TemplateBody"), Some(body.as_str()));
    let execute = fake.only_call("ExecuteChangeSet");
    assert_eq!(execute.param("StackName"), Some(STACK));
    assert_eq!(
        execute.param("ChangeSetName"),
        fake.change_set_ids().first().map(String::as_str),
        "the change set created is the one executed"
    );
    assert!(
        fake.calls_of("GetTemplate").is_empty(),
        "nothing to compare on a create"
    );
    assert_eq!(fake.stack_status().as_deref(), Some("ROLLBACK_COMPLETE"));

    let header = format!("creating stack {STACK} on endpoint http://fake: 2 change(s)");
    assert_eq!(console.lines[0], header);
    assert!(console.lines[1].contains("+ Add") && console.lines[1].contains("UsersTable"));
    assert!(console.lines[2].contains("+ Add") && console.lines[2].contains("DataBucket"));
    assert_shows_events(&console.lines[3..], &events);
    assert!(console.questions.is_empty());
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// The deletion, re-creation and outcome of a stack found in `ROLLBACK_COMPLETE` whose deletion
/// is confirmed.
fn recreate_scenario() -> Scenario {
    let (_, failed_events) = failed_create();
    Scenario {
        existing: Some(ExistingStack {
            status: "ROLLBACK_COMPLETE".to_owned(),
            template: as_stored(&template("bootstrap-v0.zip")),
            outputs: Vec::new(),
            history: failed_events,
        }),
        change_set: ChangeSetOutcome::Changes(vec![
            add("UsersTable", TABLE),
            add("DataBucket", BUCKET),
        ]),
        execution: vec![
            Step::new(
                "CREATE_IN_PROGRESS",
                vec![Event::stack(STACK, "CREATE_IN_PROGRESS").because("User Initiated")],
            ),
            Step::new(
                "CREATE_IN_PROGRESS",
                vec![
                    Event::resource("UsersTable", TABLE, "CREATE_COMPLETE"),
                    Event::resource("DataBucket", BUCKET, "CREATE_COMPLETE"),
                ],
            ),
            Step::new(
                "CREATE_COMPLETE",
                vec![Event::stack(STACK, "CREATE_COMPLETE")],
            ),
        ],
        outputs_after_execution: outputs(),
        ..Scenario::new(STACK)
    }
}

/// A stack left in `ROLLBACK_COMPLETE` by a failed create, with the deletion confirmed: `deploy`
/// asks once, deletes the old stack and waits until it is gone, and only then plans a CREATE
/// change set (the fake refuses a CREATE over an existing stack), executes it and returns the new
/// stack's changes and outputs.
#[tokio::test]
async fn rollback_complete_stack_is_deleted_and_recreated_after_confirmation() {
    let fake = FakeAws::new(recreate_scenario());
    let old_id = fake.stack_id().expect("a stack to start with");
    let mut console = RecordingConsole::agreeing();

    let outcome = deploy(
        &fake.target(),
        STACK,
        &template("bootstrap-v1.zip"),
        &mut console,
    )
    .await
    .expect("the stack is recreated");

    match &outcome {
        DeployOutcome::Deployed {
            created,
            changes,
            outputs,
        } => {
            assert!(created, "a recreated stack is created");
            assert_eq!(changes.len(), 2, "{changes:?}");
            assert!(changes[0].contains("+ Add") && changes[0].contains("UsersTable"));
            assert!(changes[1].contains("+ Add") && changes[1].contains("DataBucket"));
            assert_eq!(outputs, &outputs_map());
        }
        other => panic!("expected Deployed, got {other:?}"),
    }
    assert_eq!(
        console.questions,
        [format!(
            "stack {STACK} is in ROLLBACK_COMPLETE after a failed create and must be deleted before it can be created again; delete it?"
        )]
    );
    assert_eq!(
        fake.mutations(),
        ["DeleteStack", "CreateChangeSet", "ExecuteChangeSet"]
    );
    assert_eq!(
        fake.only_call("DeleteStack").param("StackName"),
        Some(STACK)
    );
    assert_eq!(
        fake.only_call("CreateChangeSet").param("ChangeSetType"),
        Some("CREATE")
    );
    assert_eq!(fake.deleted_stack_ids(), std::slice::from_ref(&old_id));
    let new_id = fake.stack_id().expect("a new stack");
    assert_ne!(new_id, old_id);
    assert_eq!(fake.stack_status().as_deref(), Some("CREATE_COMPLETE"));

    // The deletion's events, then the plan, then the creation's: none of the old history.
    let deletion = [
        Event::stack(STACK, "DELETE_IN_PROGRESS").because("User Initiated"),
        Event::stack(STACK, "DELETE_COMPLETE"),
    ];
    assert_shows_events(&console.lines[..2], &deletion);
    assert_eq!(
        console.lines[2],
        format!("creating stack {STACK} on endpoint http://fake: 2 change(s)")
    );
    let creation: Vec<Event> = recreate_scenario()
        .execution
        .into_iter()
        .flat_map(|s| s.events)
        .collect();
    assert_shows_events(&console.lines[5..], &creation);
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// A stack in `ROLLBACK_COMPLETE` whose deletion is declined is left alone: `deploy` asks once,
/// returns `Declined` and neither deletes the stack nor plans anything.
#[tokio::test]
async fn rollback_complete_stack_is_left_alone_when_declined() {
    let fake = FakeAws::new(recreate_scenario());
    let mut console = RecordingConsole::default();
    assert!(!console.answer);

    let err = deploy(
        &fake.target(),
        STACK,
        &template("bootstrap-v1.zip"),
        &mut console,
    )
    .await
    .expect_err("declined");

    assert!(
        matches!(&err, StackError::Declined(what) if what == &format!("stack {STACK} is in ROLLBACK_COMPLETE")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("stack {STACK} is in ROLLBACK_COMPLETE: not confirmed, nothing was changed (pass --yes to confirm in scripts)")
    );
    assert_eq!(console.questions.len(), 1);
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    assert_eq!(fake.actions(), ["DescribeStacks"]);
    assert_eq!(fake.stack_status().as_deref(), Some("ROLLBACK_COMPLETE"));
    assert!(fake.deleted_stack_ids().is_empty());
    assert!(console.lines.is_empty(), "{:?}", console.lines);
}

/// An update of an `UPDATE_COMPLETE` stack to a different template plans an UPDATE change set,
/// executes it, shows only the update's events (the stack's history spans several event pages and
/// stays hidden), and the rollback to `UPDATE_ROLLBACK_COMPLETE` ends in `DeployFailed` naming the
/// resource that failed and why; the deployed template stays the old one.
#[tokio::test]
async fn failed_update_rolls_back_and_reports_the_failure() {
    let old = template("bootstrap-v1.zip");
    let reason = "Resource handler returned message: \"Memory size 20480 exceeds the account maximum of 10240\" (HandlerErrorCode: InvalidRequest)";
    let steps = vec![
        Step::new(
            "UPDATE_IN_PROGRESS",
            vec![
                Event::stack(STACK, "UPDATE_IN_PROGRESS").because("User Initiated"),
                Event::resource("MirrorFunction", FUNCTION, "UPDATE_IN_PROGRESS"),
            ],
        ),
        Step::new(
            "UPDATE_ROLLBACK_IN_PROGRESS",
            vec![
                Event::resource("MirrorFunction", FUNCTION, "UPDATE_FAILED").because(reason),
                Event::stack(STACK, "UPDATE_ROLLBACK_IN_PROGRESS")
                    .because("The following resource(s) failed to update: [MirrorFunction]."),
            ],
        ),
        Step::new(
            "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
            vec![
                Event::resource("MirrorFunction", FUNCTION, "UPDATE_COMPLETE"),
                Event::stack(STACK, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
            ],
        ),
        Step::new(
            "UPDATE_ROLLBACK_COMPLETE",
            vec![Event::stack(STACK, "UPDATE_ROLLBACK_COMPLETE")],
        ),
    ];
    let events: Vec<Event> = steps.iter().flat_map(|s| s.events.clone()).collect();
    let fake = FakeAws::new(Scenario {
        existing: Some(existing("UPDATE_COMPLETE", &old)),
        change_set: ChangeSetOutcome::Changes(vec![Change {
            action: "Modify",
            logical_id: "MirrorFunction",
            resource_type: FUNCTION,
            replacement: Some("False"),
        }]),
        execution: steps,
        ..Scenario::new(STACK)
    });
    let body = template("bootstrap-v2.zip");
    let mut console = RecordingConsole::default();

    let err = deploy(&fake.target(), STACK, &body, &mut console)
        .await
        .expect_err("the update fails");

    match &err {
        StackError::DeployFailed {
            stack,
            status,
            failures,
        } => {
            assert_eq!(stack, STACK);
            assert_eq!(status, &StackStatus::UpdateRollbackComplete);
            assert_eq!(
                failures,
                &[ResourceFailure {
                    logical_id: "MirrorFunction".to_owned(),
                    resource_type: FUNCTION.to_owned(),
                    status: ResourceStatus::UpdateFailed,
                    reason: reason.to_owned(),
                }]
            );
        }
        other => panic!("expected DeployFailed, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "deploy of stack {STACK} failed, the stack is UPDATE_ROLLBACK_COMPLETE; failed resources:\n  \
             MirrorFunction (AWS::Lambda::Function) UPDATE_FAILED: {reason}"
        )
    );
    assert_eq!(fake.mutations(), ["CreateChangeSet", "ExecuteChangeSet"]);
    let create = fake.only_call("CreateChangeSet");
    assert_eq!(create.param("ChangeSetType"), Some("UPDATE"));
    assert_eq!(create.param("TemplateBody"), Some(body.as_str()));
    assert_eq!(
        fake.stack_status().as_deref(),
        Some("UPDATE_ROLLBACK_COMPLETE")
    );
    assert_eq!(fake.deployed_template(), Some(as_stored(&old)));

    assert_eq!(
        console.lines[0],
        format!("updating stack {STACK} on endpoint http://fake: 1 change(s)")
    );
    assert!(
        console.lines[1].contains("~ Modify")
            && console.lines[1].contains("MirrorFunction")
            && !console.lines[1].contains("replacement"),
        "{:?}",
        console.lines[1]
    );
    assert_shows_events(&console.lines[2..], &events);
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// Tearing down a stack that does not exist is "nothing to tear down": no DeleteStack. Unless
/// assets are kept, the account's assets bucket is looked up (STS, then S3 HeadBucket) and, as it
/// does not exist, nothing is removed; with `keep_assets` not even that is asked.
#[tokio::test]
async fn teardown_of_a_missing_stack_has_nothing_to_tear_down() {
    let fake = FakeAws::new(Scenario::new(STACK));
    let mut console = RecordingConsole::agreeing();

    let outcome = teardown(&fake.target(), STACK, false, false, &mut console)
        .await
        .expect("teardown succeeds");

    assert_eq!(
        outcome,
        TeardownOutcome::NothingToTearDown {
            removed_artifacts: 0
        }
    );
    assert_eq!(
        fake.actions(),
        [
            "DescribeStacks".to_owned(),
            "GetCallerIdentity".to_owned(),
            format!("S3 HEAD /{ASSETS_BUCKET}"),
        ]
    );
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    assert!(console.lines.is_empty() && console.questions.is_empty());
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());

    let fake = FakeAws::new(Scenario::new(STACK));
    let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");
    assert_eq!(
        outcome,
        TeardownOutcome::NothingToTearDown {
            removed_artifacts: 0
        }
    );
    assert_eq!(fake.actions(), ["DescribeStacks"]);
}

/// A stack busy with another operation is refused with `Busy` naming its status, by `deploy` and
/// by `teardown` alike, before anything is planned, emptied or deleted.
#[tokio::test]
async fn busy_stack_is_refused_by_deploy_and_teardown() {
    let body = template("bootstrap-v1.zip");
    for typed in [
        StackStatus::UpdateInProgress,
        StackStatus::CreateInProgress,
        StackStatus::UpdateRollbackInProgress,
        StackStatus::UpdateCompleteCleanupInProgress,
        StackStatus::DeleteInProgress,
    ] {
        let status = typed.as_str();
        let fake = FakeAws::new(Scenario {
            existing: Some(existing(status, &body)),
            ..Scenario::new(STACK)
        });
        let target = fake.target();
        let mut console = RecordingConsole::agreeing();
        let expected = format!(
            "stack {STACK} is busy ({status}): wait for the running operation to finish, then run the command again"
        );

        let err = deploy(&target, STACK, &template("bootstrap-v2.zip"), &mut console)
            .await
            .expect_err("deploy refuses a busy stack");
        assert!(
            matches!(&err, StackError::Busy { stack, status: s } if stack == STACK && s == &typed),
            "{err:?}"
        );
        assert_eq!(err.to_string(), expected);

        let err = teardown(&target, STACK, false, false, &mut console)
            .await
            .expect_err("teardown refuses a busy stack");
        assert!(
            matches!(&err, StackError::Busy { stack, status: s } if stack == STACK && s == &typed),
            "{err:?}"
        );
        assert_eq!(err.to_string(), expected);

        assert_eq!(
            fake.actions(),
            ["DescribeStacks", "DescribeStacks"],
            "{status}"
        );
        assert_eq!(fake.stack_status().as_deref(), Some(status));
        assert!(console.lines.is_empty() && console.questions.is_empty());
    }
}

/// Guards against a race in `wait_for_stack`: an operation that fails and finishes between a
/// poll's reads (a fast emulator does so in milliseconds) must still have its failure events
/// read, shown and reported. Here the create fails and rolls back right after the first poll.
#[tokio::test]
async fn failure_finishing_between_a_polls_reads_is_still_reported() {
    let (_, events) = failed_create();
    let fake = FakeAws::new(Scenario {
        change_set: ChangeSetOutcome::Changes(vec![
            add("UsersTable", TABLE),
            add("DataBucket", BUCKET),
        ]),
        execution: vec![
            Step::new("CREATE_IN_PROGRESS", events[..3].to_vec()),
            Step::new("ROLLBACK_COMPLETE", events[3..].to_vec()),
        ],
        clock: Clock::EachStatusRead,
        ..Scenario::new(STACK)
    });
    let mut console = RecordingConsole::default();

    let err = deploy(
        &fake.target(),
        STACK,
        &template("bootstrap-v1.zip"),
        &mut console,
    )
    .await
    .expect_err("the create fails");

    match &err {
        StackError::DeployFailed {
            status, failures, ..
        } => {
            assert_eq!(status, &StackStatus::RollbackComplete);
            assert_eq!(failures, &expected_create_failures());
        }
        other => panic!("expected DeployFailed, got {other:?}"),
    }
    assert_shows_events(&console.lines[3..], &events);
}

/// A change set that CloudFormation computes with zero changes is executable when only the
/// Outputs differ (aws/aws-cdk#2029): `deploy` executes it rather than reporting "up to date",
/// the stack gets the new outputs, and the next deploy of the same template is up to date.
#[tokio::test]
async fn outputs_only_change_set_is_executed() {
    let old = template("bootstrap-v1.zip");
    let body = template("bootstrap-v2.zip");
    let mut new_outputs = outputs();
    new_outputs.push(("FunctionName".to_owned(), "usersync-test-mirror".to_owned()));
    let steps = vec![
        Step::new(
            "UPDATE_IN_PROGRESS",
            vec![Event::stack(STACK, "UPDATE_IN_PROGRESS").because("User Initiated")],
        ),
        Step::new(
            "UPDATE_COMPLETE",
            vec![Event::stack(STACK, "UPDATE_COMPLETE")],
        ),
    ];
    let events: Vec<Event> = steps.iter().flat_map(|s| s.events.clone()).collect();
    let fake = FakeAws::new(Scenario {
        existing: Some(existing("UPDATE_COMPLETE", &old)),
        change_set: ChangeSetOutcome::Changes(Vec::new()),
        execution: steps,
        outputs_after_execution: new_outputs.clone(),
        ..Scenario::new(STACK)
    });
    let mut console = RecordingConsole::default();

    let outcome = deploy(&fake.target(), STACK, &body, &mut console)
        .await
        .expect("deploy succeeds");

    let new_outputs: std::collections::BTreeMap<String, String> = new_outputs.into_iter().collect();
    assert_eq!(
        outcome,
        DeployOutcome::Deployed {
            created: false,
            changes: Vec::new(),
            outputs: new_outputs.clone(),
        }
    );
    assert_eq!(fake.mutations(), ["CreateChangeSet", "ExecuteChangeSet"]);
    assert_eq!(
        fake.only_call("ExecuteChangeSet").param("ChangeSetName"),
        fake.change_set_ids().first().map(String::as_str),
        "the change set created is the one executed, and it was not deleted"
    );
    assert_eq!(fake.deployed_template().as_deref(), Some(body.as_str()));
    assert_eq!(
        console.lines[0],
        format!(
            "updating stack {STACK} on endpoint http://fake: no resource changes, only outputs"
        )
    );
    assert_shows_events(&console.lines[1..], &events);
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());

    // Not lost: the next deploy finds the template deployed.
    let mut console = RecordingConsole::default();
    let again = deploy(&fake.target(), STACK, &body, &mut console)
        .await
        .expect("deploy succeeds");
    assert_eq!(
        again,
        DeployOutcome::UpToDate {
            outputs: new_outputs
        }
    );
    assert_eq!(fake.mutations(), ["CreateChangeSet", "ExecuteChangeSet"]);
}

/// A function archive to upload.
fn archive() -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(b"PK\x05\x06 not really an archive")
        .expect("written");
    file
}

/// Every S3 call as its action and the `ExpectedBucketOwner` it carried.
fn s3_owners(fake: &FakeAws) -> Vec<(String, Option<String>)> {
    fake.s3_calls()
        .iter()
        .map(|c| {
            (
                c.action.clone(),
                c.param("ExpectedBucketOwner").map(str::to_owned),
            )
        })
        .collect()
}

/// The first upload creates the assets bucket and uploads the archive; every request on the
/// bucket carries `ExpectedBucketOwner` (the account), except `CreateBucket`, which takes none,
/// so the bucket is checked again (HeadBucket) right after it is created.
#[tokio::test]
async fn assets_bucket_requests_carry_the_expected_owner() {
    let fake = FakeAws::new(Scenario::new(STACK));
    let zip = archive();
    let mut console = RecordingConsole::default();

    let uploaded = upload_artifact(
        &fake.target(),
        STACK,
        zip.path(),
        "bootstrap-abc.zip",
        &mut console,
    )
    .await
    .expect("uploaded");

    let key = format!("{STACK}/bootstrap-abc.zip");
    assert_eq!(
        uploaded,
        UploadedArtifact {
            bucket: ASSETS_BUCKET.to_owned(),
            key: key.clone(),
            uploaded: true,
        }
    );
    let ours = Some(ACCOUNT.to_owned());
    let bucket = format!("/{ASSETS_BUCKET}");
    let object = format!("/{ASSETS_BUCKET}/{key}");
    assert_eq!(
        s3_owners(&fake),
        [
            (format!("S3 HEAD {bucket}"), ours.clone()),
            (format!("S3 PUT {bucket}"), None),
            (format!("S3 HEAD {bucket}"), ours.clone()),
            (format!("S3 PUT {bucket}?encryption"), ours.clone()),
            (format!("S3 PUT {bucket}?publicAccessBlock"), ours.clone()),
            (format!("S3 HEAD {object}"), ours.clone()),
            (format!("S3 PUT {object}"), ours),
        ]
    );
    assert_eq!(fake.bucket_keys(ASSETS_BUCKET), Some(vec![key]));
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// An assets bucket that another account owns (its name can be guessed) answers 403 to the
/// owner check: nothing is uploaded to it, nothing is removed from it, and the error names both
/// causes a 403 can have (another owner, or no `s3:ListBucket`).
#[tokio::test]
async fn an_assets_bucket_of_another_account_is_neither_written_nor_emptied() {
    let theirs = format!("{STACK}/bootstrap-planted.zip");
    let fake = FakeAws::new(Scenario {
        buckets: vec![Bucket::new(ASSETS_BUCKET, STRANGER, &[&theirs])],
        ..Scenario::new(STACK)
    });
    let zip = archive();
    let mut console = RecordingConsole::default();

    let err = upload_artifact(
        &fake.target(),
        STACK,
        zip.path(),
        "bootstrap-abc.zip",
        &mut console,
    )
    .await
    .expect_err("the bucket is not ours");

    assert!(
        matches!(&err, StackError::AssetsBucketForbidden { bucket, account }
            if bucket == ASSETS_BUCKET && account == ACCOUNT),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("s3:ListBucket") && message.contains("another AWS account owns it"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(
        s3_owners(&fake),
        [(
            format!("S3 HEAD /{ASSETS_BUCKET}"),
            Some(ACCOUNT.to_owned())
        )]
    );

    let err = teardown(&fake.target(), STACK, false, false, &mut console)
        .await
        .expect_err("the bucket is not ours");
    assert!(
        matches!(err, StackError::AssetsBucketForbidden { .. }),
        "{err:?}"
    );
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    assert_eq!(fake.bucket_keys(ASSETS_BUCKET), Some(vec![theirs]));
    assert!(console.lines.is_empty(), "{:?}", console.lines);
}

/// Teardown removes the stack's archives (and only those) from the account's own assets bucket,
/// listing and deleting with `ExpectedBucketOwner`.
#[tokio::test]
async fn teardown_removes_the_stacks_archives_with_the_expected_owner() {
    let fake = FakeAws::new(Scenario {
        buckets: vec![Bucket::new(
            ASSETS_BUCKET,
            ACCOUNT,
            &[
                &format!("{STACK}/bootstrap-a.zip"),
                &format!("{STACK}/bootstrap-b.zip"),
                "other-stack/bootstrap-c.zip",
            ],
        )],
        ..Scenario::new(STACK)
    });
    let mut console = RecordingConsole::default();

    let outcome = teardown(&fake.target(), STACK, false, false, &mut console)
        .await
        .expect("teardown succeeds");

    assert_eq!(
        outcome,
        TeardownOutcome::NothingToTearDown {
            removed_artifacts: 2
        }
    );
    let ours = Some(ACCOUNT.to_owned());
    let bucket = format!("/{ASSETS_BUCKET}");
    assert_eq!(
        s3_owners(&fake),
        [
            (format!("S3 HEAD {bucket}"), ours.clone()),
            (format!("S3 GET {bucket}?versions"), ours.clone()),
            (format!("S3 POST {bucket}?delete"), ours.clone()),
            (format!("S3 GET {bucket}?versions"), ours),
        ]
    );
    assert_eq!(
        fake.calls_of(&format!("S3 GET {bucket}?versions"))[0].param("prefix"),
        Some(format!("{STACK}/").as_str())
    );
    assert_eq!(
        fake.bucket_keys(ASSETS_BUCKET),
        Some(vec!["other-stack/bootstrap-c.zip".to_owned()])
    );
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// A stack stuck in `status` after `events` (oldest first), with the resources that failed as
/// CloudFormation reports them now, and what the way out names.
struct Stuck {
    status: StackStatus,
    history: Vec<Event>,
    failures: Vec<ResourceFailure>,
    command: String,
}

fn failure(
    logical_id: &str,
    resource_type: &str,
    status: ResourceStatus,
    reason: &str,
) -> ResourceFailure {
    ResourceFailure {
        logical_id: logical_id.to_owned(),
        resource_type: resource_type.to_owned(),
        status,
        reason: reason.to_owned(),
    }
}

fn stuck_stacks() -> Vec<Stuck> {
    let update_failed = "Resource handler returned message: \"Memory size 20480 exceeds the account maximum of 10240\"";
    let rollback_failed = "Resource handler returned message: \"The role defined for the function cannot be assumed by Lambda.\"";
    let table_in_use = "Table usersync-test-users is being used by another operation";
    let not_empty = "The bucket you tried to delete is not empty";
    let mut update_history = create_history();
    update_history.extend([
        Event::stack(STACK, "UPDATE_IN_PROGRESS").because("User Initiated"),
        Event::resource("MirrorFunction", FUNCTION, "UPDATE_FAILED").because(update_failed),
        Event::stack(STACK, "UPDATE_ROLLBACK_IN_PROGRESS"),
        Event::resource("MirrorFunction", FUNCTION, "UPDATE_FAILED").because(rollback_failed),
        Event::stack(STACK, "UPDATE_ROLLBACK_FAILED"),
    ]);
    let (_, mut rollback_history) = failed_create();
    rollback_history.truncate(6);
    rollback_history.extend([
        Event::resource("UsersTable", TABLE, "DELETE_FAILED").because(table_in_use),
        Event::stack(STACK, "ROLLBACK_FAILED"),
    ]);
    let mut delete_history = create_history();
    delete_history.extend([
        Event::stack(STACK, "DELETE_IN_PROGRESS").because("User Initiated"),
        Event::resource("DataBucket", BUCKET, "DELETE_FAILED").because(not_empty),
        Event::stack(STACK, "DELETE_FAILED"),
    ]);
    vec![
        Stuck {
            status: StackStatus::UpdateRollbackFailed,
            history: update_history,
            failures: vec![failure(
                "MirrorFunction",
                FUNCTION,
                ResourceStatus::UpdateFailed,
                rollback_failed,
            )],
            command: format!(
                "`aws cloudformation continue-update-rollback --stack-name {STACK}` (adding \
                 `--resources-to-skip MirrorFunction`"
            ),
        },
        Stuck {
            status: StackStatus::RollbackFailed,
            history: rollback_history,
            // In the order the resources appeared in the stack's events.
            failures: vec![
                failure(
                    "UsersTable",
                    TABLE,
                    ResourceStatus::DeleteFailed,
                    table_in_use,
                ),
                failure(
                    "DataBucket",
                    BUCKET,
                    ResourceStatus::CreateFailed,
                    "usersync-test-data already exists",
                ),
            ],
            command: format!(
                "`cargo xtask teardown` (should a resource still resist, the stack ends in \
                 DELETE_FAILED and `aws cloudformation delete-stack --stack-name {STACK} \
                 --retain-resources UsersTable`"
            ),
        },
        Stuck {
            status: StackStatus::DeleteFailed,
            history: delete_history,
            failures: vec![failure(
                "DataBucket",
                BUCKET,
                ResourceStatus::DeleteFailed,
                not_empty,
            )],
            command: format!(
                "`aws cloudformation delete-stack --stack-name {STACK} --retain-resources \
                 DataBucket`"
            ),
        },
    ]
}

fn stuck_scenario(stuck: &Stuck) -> Scenario {
    Scenario {
        existing: Some(ExistingStack {
            status: stuck.status.as_str().to_owned(),
            template: as_stored(&template("bootstrap-v1.zip")),
            outputs: outputs(),
            history: stuck.history.clone(),
        }),
        ..Scenario::new(STACK)
    }
}

/// A stack in `UPDATE_ROLLBACK_FAILED`, `ROLLBACK_FAILED` or `DELETE_FAILED` takes no change
/// set: `deploy` plans nothing and returns `Stuck`, naming the state, the resources that failed
/// (read from CloudFormation) and the command that gets the stack out.
#[tokio::test]
async fn deploy_names_the_way_out_of_each_stuck_state() {
    for stuck in stuck_stacks() {
        let fake = FakeAws::new(stuck_scenario(&stuck));
        let mut console = RecordingConsole::agreeing();

        let err = deploy(
            &fake.target(),
            STACK,
            &template("bootstrap-v2.zip"),
            &mut console,
        )
        .await
        .expect_err("a stuck stack is refused");

        match &err {
            StackError::Stuck {
                stack,
                status,
                failures,
            } => {
                assert_eq!(stack, STACK);
                assert_eq!(status, &stuck.status);
                assert_eq!(failures, &stuck.failures, "{status}");
            }
            other => panic!("expected Stuck, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("stack {STACK} is {}: ", stuck.status)),
            "{message}"
        );
        assert!(message.contains(&stuck.command), "{message}");
        for failure in &stuck.failures {
            assert!(message.contains(&format!("  {failure}")), "{message}");
        }
        assert_eq!(fake.actions(), ["DescribeStacks", "DescribeStackResources"]);
        assert!(console.questions.is_empty() && console.lines.is_empty());
        assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    }
}

/// `teardown` of a stack in `UPDATE_ROLLBACK_FAILED` deletes nothing and names
/// `continue-update-rollback`; a stack in `ROLLBACK_FAILED` or `DELETE_FAILED` can only be
/// deleted, which teardown does, and when a resource resists again the error names the command
/// that deletes the stack keeping it.
#[tokio::test]
async fn teardown_names_the_way_out_of_each_stuck_state() {
    let protected = "Resource handler returned message: \"Table can't be deleted while deletion protection is enabled\"";
    for stuck in stuck_stacks() {
        let fake = FakeAws::new(Scenario {
            deletion: vec![
                Step::new(
                    "DELETE_IN_PROGRESS",
                    vec![Event::stack(STACK, "DELETE_IN_PROGRESS").because("User Initiated")],
                ),
                Step::new(
                    "DELETE_FAILED",
                    vec![
                        Event::resource("UsersTable", TABLE, "DELETE_FAILED").because(protected),
                        Event::stack(STACK, "DELETE_FAILED")
                            .because("The following resource(s) failed to delete: [UsersTable]."),
                    ],
                ),
            ],
            ..stuck_scenario(&stuck)
        });
        let mut console = RecordingConsole::agreeing();

        let err = teardown(&fake.target(), STACK, false, true, &mut console)
            .await
            .expect_err("the stack stays");
        let message = err.to_string();

        if stuck.status == StackStatus::UpdateRollbackFailed {
            assert!(
                matches!(&err, StackError::Stuck { status, failures, .. }
                    if *status == stuck.status && *failures == stuck.failures),
                "{err:?}"
            );
            assert!(message.contains(&stuck.command), "{message}");
            assert_eq!(fake.actions(), ["DescribeStacks", "DescribeStackResources"]);
            continue;
        }
        match &err {
            StackError::DeleteFailed {
                stack,
                status,
                failures,
            } => {
                assert_eq!(stack, STACK);
                assert_eq!(status, &StackStatus::DeleteFailed);
                assert_eq!(
                    failures,
                    &[failure(
                        "UsersTable",
                        TABLE,
                        ResourceStatus::DeleteFailed,
                        protected
                    )]
                );
            }
            other => panic!("expected DeleteFailed, got {other:?}"),
        }
        assert!(
            message.contains(&format!(
                "run the teardown again, or delete the stack keeping them with `aws \
                 cloudformation delete-stack --stack-name {STACK} --retain-resources UsersTable`"
            )),
            "{message}"
        );
        assert_eq!(fake.mutations(), ["DeleteStack"], "{}", stuck.status);
        assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    }
}

/// A stack left in `DELETE_FAILED` by a bucket that was not empty is torn down: the bucket is
/// emptied and the deletion completes.
#[tokio::test]
async fn teardown_finishes_a_delete_failed_stack() {
    let stuck = stuck_stacks()
        .into_iter()
        .find(|s| s.status == StackStatus::DeleteFailed)
        .expect("a DELETE_FAILED case");
    let fake = FakeAws::new(Scenario {
        buckets: vec![Bucket::new(&data_bucket(), ACCOUNT, &["users/ada.json"])],
        ..stuck_scenario(&stuck)
    });
    let mut console = RecordingConsole::agreeing();

    let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");

    assert_eq!(
        outcome,
        TeardownOutcome::TornDown {
            emptied_objects: 1,
            removed_artifacts: 0,
            data_retained: false,
        }
    );
    assert_eq!(fake.stack_status(), None);
    assert_eq!(fake.bucket_keys(&data_bucket()), Some(Vec::new()));
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// The data bucket's name in the fake.
fn data_bucket() -> String {
    physical_id(STACK, "DataBucket")
}

/// The event source mapping's UUID in the fake.
fn mapping_uuid() -> String {
    physical_id(STACK, "EventSourceMapping")
}

/// A deployed stack with an event source mapping, its data bucket holding `keys`, the mapping in
/// `state`.
fn running_stack(keys: &[&str], mapping: Option<Mapping>) -> Scenario {
    let mut history = create_history();
    let done = history.pop().expect("the stack's CREATE_COMPLETE");
    history.push(Event::resource(
        "EventSourceMapping",
        MAPPING,
        "CREATE_COMPLETE",
    ));
    history.push(done);
    Scenario {
        existing: Some(ExistingStack {
            history,
            ..existing("CREATE_COMPLETE", &template("bootstrap-v1.zip"))
        }),
        buckets: vec![Bucket::new(&data_bucket(), ACCOUNT, keys)],
        mapping,
        ..Scenario::new(STACK)
    }
}

fn enabled_mapping(disabling_reads: usize) -> Option<Mapping> {
    Some(Mapping {
        state: "Enabled".to_owned(),
        disabling_reads,
    })
}

fn position(actions: &[String], wanted: &str) -> usize {
    actions
        .iter()
        .position(|a| a == wanted)
        .unwrap_or_else(|| panic!("no {wanted} in {actions:#?}"))
}

/// Teardown disables the event source mapping (`UpdateEventSourceMapping Enabled=false`) and
/// waits until Lambda reports it `Disabled` before it empties the data bucket, then deletes the
/// stack.
#[tokio::test]
async fn teardown_disables_the_mapping_before_emptying_the_bucket() {
    let fake = FakeAws::new(running_stack(
        &["users/ada.json", "users/bob.json", "users/cy.json"],
        enabled_mapping(2),
    ));
    let mut console = RecordingConsole::agreeing();

    let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");

    assert_eq!(
        outcome,
        TeardownOutcome::TornDown {
            emptied_objects: 3,
            removed_artifacts: 0,
            data_retained: false,
        }
    );
    let actions = fake.actions();
    let update = position(&actions, "UpdateEventSourceMapping");
    let last_read = actions
        .iter()
        .rposition(|a| a == "GetEventSourceMapping")
        .expect("the mapping was read");
    let emptying = position(&actions, &format!("S3 GET /{}?versions", data_bucket()));
    let delete = position(&actions, "DeleteStack");
    assert!(
        update < last_read && last_read < emptying && emptying < delete,
        "{actions:#?}"
    );
    // Read Enabled, then Disabling twice, then Disabled.
    assert_eq!(fake.calls_of("GetEventSourceMapping").len(), 4);
    let disable = fake.only_call("UpdateEventSourceMapping");
    assert_eq!(disable.param("UUID"), Some(mapping_uuid().as_str()));
    assert_eq!(disable.param("Enabled"), Some("false"));
    assert_eq!(fake.mapping_state().as_deref(), Some("Disabled"));
    assert_eq!(fake.bucket_keys(&data_bucket()), Some(Vec::new()));

    let disabled_line = position(
        &console.lines,
        &format!("event source mapping {} is disabled", mapping_uuid()),
    );
    let emptied_line = position(
        &console.lines,
        &format!(
            "emptied bucket {}: 3 object version(s) removed",
            data_bucket()
        ),
    );
    assert!(disabled_line < emptied_line, "{:#?}", console.lines);
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// The deletion's steps when CloudFormation finds the data bucket not empty.
fn bucket_not_empty_deletion() -> Vec<Step> {
    vec![
        Step::new(
            "DELETE_IN_PROGRESS",
            vec![Event::stack(STACK, "DELETE_IN_PROGRESS").because("User Initiated")],
        ),
        Step::new(
            "DELETE_FAILED",
            vec![
                Event::resource("DataBucket", BUCKET, "DELETE_FAILED").because(
                    "The bucket you tried to delete is not empty (Service: S3, Status Code: 409)",
                ),
                Event::stack(STACK, "DELETE_FAILED")
                    .because("The following resource(s) failed to delete: [DataBucket]."),
            ],
        ),
    ]
}

/// An invocation still running when the mapping reached `Disabled` writes to the bucket after
/// it was emptied: the deletion fails on the bucket, and teardown empties it again and deletes
/// again instead of giving up.
#[tokio::test]
async fn teardown_empties_again_when_the_bucket_was_written_after_emptying() {
    let fake = FakeAws::new(Scenario {
        deletion: bucket_not_empty_deletion(),
        deletion_retries: vec![Scenario::new(STACK).deletion],
        late_writes: vec![(data_bucket(), "users/late.json".to_owned())],
        ..running_stack(&["users/ada.json", "users/bob.json"], enabled_mapping(0))
    });
    let mut console = RecordingConsole::agreeing();

    let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");

    assert_eq!(
        outcome,
        TeardownOutcome::TornDown {
            emptied_objects: 3,
            removed_artifacts: 0,
            data_retained: false,
        }
    );
    assert_eq!(fake.calls_of("DeleteStack").len(), 2);
    assert_eq!(fake.stack_status(), None);
    assert!(
        console.lines.contains(&format!(
            "bucket {} was written to after it was emptied; emptying it again",
            data_bucket()
        )),
        "{:#?}",
        console.lines
    );
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// The retry is bounded: a bucket that is never found empty ends the teardown after three
/// deletions with `DeleteFailed`, naming the bucket and how to delete the stack keeping it.
#[tokio::test]
async fn teardown_retries_a_bucket_that_stays_non_empty_a_bounded_number_of_times() {
    let fake = FakeAws::new(Scenario {
        deletion: bucket_not_empty_deletion(),
        ..running_stack(&["users/ada.json"], enabled_mapping(0))
    });
    let mut console = RecordingConsole::agreeing();

    let err = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect_err("the bucket is never empty");

    assert!(
        matches!(&err, StackError::DeleteFailed { failures, .. }
            if failures.len() == 1 && failures[0].logical_id == "DataBucket"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!(
            "--stack-name {STACK} --retain-resources DataBucket"
        )),
        "{err}"
    );
    assert_eq!(fake.calls_of("DeleteStack").len(), 3);
}

/// The mapping step is skipped gracefully when the stack has no mapping, when it is disabled
/// already, and when the target does not serve Lambda's event source mapping API.
#[tokio::test]
async fn teardown_skips_a_mapping_that_is_absent_disabled_or_not_served() {
    let no_mapping = Scenario {
        buckets: vec![Bucket::new(&data_bucket(), ACCOUNT, &["users/ada.json"])],
        ..stuck_scenario(&Stuck {
            status: StackStatus::CreateComplete,
            history: create_history(),
            failures: Vec::new(),
            command: String::new(),
        })
    };
    let disabled = running_stack(
        &["users/ada.json"],
        Some(Mapping {
            state: "Disabled".to_owned(),
            disabling_reads: 0,
        }),
    );
    let not_served = Scenario {
        lambda_served: false,
        ..running_stack(&["users/ada.json"], enabled_mapping(0))
    };
    for (case, scenario, reads) in [
        ("no mapping", no_mapping, 0),
        ("disabled", disabled, 1),
        ("not served", not_served, 1),
    ] {
        let fake = FakeAws::new(scenario);
        let mut console = RecordingConsole::agreeing();

        let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
            .await
            .unwrap_or_else(|err| panic!("{case}: {err}"));

        assert_eq!(
            outcome,
            TeardownOutcome::TornDown {
                emptied_objects: 1,
                removed_artifacts: 0,
                data_retained: false,
            },
            "{case}"
        );
        assert_eq!(
            fake.calls_of("GetEventSourceMapping").len(),
            reads,
            "{case}"
        );
        assert!(
            fake.calls_of("UpdateEventSourceMapping").is_empty(),
            "{case}"
        );
        let notice = console
            .lines
            .iter()
            .any(|l| l.contains("does not serve Lambda event source mappings"));
        assert_eq!(notice, case == "not served", "{case}: {:#?}", console.lines);
        assert!(
            fake.unexpected().is_empty(),
            "{case}: {:?}",
            fake.unexpected()
        );
    }
}

/// The name of the existing table the adopting stack mirrors.
const PEOPLE: &str = "people";
/// The name of the existing bucket it mirrors into.
const PEOPLE_MIRROR: &str = "people-mirror";

/// A deployed stack that adopted the table [`PEOPLE`] and the bucket [`PEOPLE_MIRROR`] (which
/// holds `keys`), with an enabled event source mapping.
fn adopting_stack(keys: &[&str]) -> Scenario {
    let adoption = Adoption {
        table: Some(AdoptedTable {
            name: PEOPLE.to_owned(),
            stream_arn: format!(
                "arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{PEOPLE}/stream/2024-05-01T00:00:00.000"
            ),
            key_attribute: "user_id".to_owned(),
            kms_key_arn: None,
        }),
        bucket: Some(AdoptedBucket {
            name: PEOPLE_MIRROR.to_owned(),
            kms_key_arn: None,
        }),
    };
    let template = to_json_string(&synthesize_adopting(
        &StackSettings::default(),
        &ArtifactLocation {
            bucket: ASSETS_BUCKET.to_owned(),
            key: format!("{STACK}/bootstrap-v1.zip"),
        },
        &adoption,
    ));
    let outputs = [
        (output::TABLE_NAME, PEOPLE),
        (output::ADOPTED_TABLE, PEOPLE),
        (output::BUCKET_NAME, PEOPLE_MIRROR),
        (output::ADOPTED_BUCKET, PEOPLE_MIRROR),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    Scenario {
        existing: Some(ExistingStack {
            status: "CREATE_COMPLETE".to_owned(),
            template: as_stored(&template),
            outputs,
            history: vec![
                Event::stack(STACK, "REVIEW_IN_PROGRESS").because("User Initiated"),
                Event::stack(STACK, "CREATE_IN_PROGRESS").because("User Initiated"),
                Event::resource("MirrorFunction", FUNCTION, "CREATE_COMPLETE"),
                Event::resource("EventSourceMapping", MAPPING, "CREATE_COMPLETE"),
                Event::stack(STACK, "CREATE_COMPLETE"),
            ],
        }),
        buckets: vec![Bucket::new(PEOPLE_MIRROR, ACCOUNT, keys)],
        mapping: enabled_mapping(0),
        ..Scenario::new(STACK)
    }
}

/// Teardown of a stack that adopted a table and a bucket disables the mapping and deletes the
/// stack, but sends not one request to the adopted bucket (nothing emptied), says so, and
/// reports what it left.
#[tokio::test]
async fn teardown_leaves_an_adopted_table_and_bucket_as_they_are() {
    let keys = ["ada/userdata", "bob/userdata"];
    let fake = FakeAws::new(adopting_stack(&keys));
    let mut console = RecordingConsole::agreeing();

    let report = teardown_report(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");

    let adopted = AdoptedNames {
        table: Some(PEOPLE.to_owned()),
        bucket: Some(PEOPLE_MIRROR.to_owned()),
    };
    assert_eq!(
        report,
        TeardownReport {
            outcome: TeardownOutcome::TornDown {
                emptied_objects: 0,
                removed_artifacts: 0,
                data_retained: false,
            },
            adopted: adopted.clone(),
        }
    );
    assert_eq!(
        report.adopted.left().as_deref(),
        Some("left: table people (its items), bucket people-mirror (its objects)")
    );
    assert_eq!(
        fake.bucket_keys(PEOPLE_MIRROR),
        Some(keys.map(str::to_owned).to_vec())
    );
    assert!(
        fake.s3_calls().is_empty(),
        "no S3 request at all: {:#?}",
        fake.s3_calls()
    );
    assert_eq!(
        fake.mutations(),
        ["UpdateEventSourceMapping", "DeleteStack"]
    );
    assert_eq!(fake.mapping_state().as_deref(), Some("Disabled"));
    assert_eq!(fake.stack_status(), None);
    for line in [
        "table people was adopted, not created by the stack: leaving it and its items as they are",
        "bucket people-mirror was adopted, not created by the stack: leaving it and its objects \
         as they are (not emptied)",
    ] {
        assert!(
            console.lines.iter().any(|l| l == line),
            "{line:?} not in {:#?}",
            console.lines
        );
    }
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());

    // `teardown` is the same without the names.
    let fake = FakeAws::new(adopting_stack(&keys));
    let outcome = teardown(&fake.target(), STACK, false, true, &mut console)
        .await
        .expect("teardown succeeds");
    assert_eq!(outcome, report.outcome);
}

/// A stack that created its own table refuses to adopt an existing one instead (its own would be
/// deleted), reading nothing but the stack; without existing_table it keeps its own, and the
/// deploy's check reads nothing else.
#[tokio::test]
async fn a_stack_that_owns_its_table_refuses_an_existing_one_before_anything_changes() {
    let fake = FakeAws::new(running_stack(&[], None));
    let settings = StackSettings {
        stack_name: STACK.to_owned(),
        existing_table: Some(PEOPLE.to_owned()),
        ..StackSettings::default()
    };
    let err = check_adoption(&fake.target(), &settings, &mut RecordingConsole::agreeing())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdoptionError::OwnsItsOwn { own, named, .. } if own == "usersync-test-users" && named == PEOPLE),
        "{err:?}"
    );
    assert_eq!(fake.actions(), ["DescribeStacks"]);

    // Without existing_table the stack keeps its own table, and nothing more is read.
    let fake = FakeAws::new(running_stack(&[], None));
    let plain = StackSettings {
        stack_name: STACK.to_owned(),
        ..StackSettings::default()
    };
    let adoption = check_adoption(&fake.target(), &plain, &mut RecordingConsole::agreeing())
        .await
        .unwrap();
    assert_eq!(adoption, Adoption::default());
    assert_eq!(fake.actions(), ["DescribeStacks"]);
}

/// A stack that adopted a bucket keeps it when the settings say nothing, and refuses another.
#[tokio::test]
async fn a_stack_that_adopted_a_bucket_refuses_another() {
    let fake = FakeAws::new(adopting_stack(&[]));
    let settings = StackSettings {
        stack_name: STACK.to_owned(),
        existing_table: Some(PEOPLE.to_owned()),
        existing_bucket: Some("other-mirror".to_owned()),
        ..StackSettings::default()
    };
    let message = check_adoption(&fake.target(), &settings, &mut RecordingConsole::agreeing())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(
            "stack usersync-test adopted bucket people-mirror, but existing_bucket names bucket \
             other-mirror"
        ),
        "{message}"
    );
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
}
