//! The replay end to end over scripted AWS (`scripted`): what it leaves in the bucket and the
//! queue when the table, the stream and the bucket disagree in the ways a real outage leaves
//! them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::OperationType::{Insert, Modify, Remove};
use usersync_function::{testing, DeleteScope, S3Store};

use super::batch_read::ReadLimits;
use super::context::Context;
use super::expired::WholeTableReconcile;
use super::report::ExpiredReconcile;
use super::scripted::{batch_message, record, Cloud, ScriptedShard, BUCKET, QUEUE_URL};
use super::{run, Outcome, ReplayOptions, ReplayReport};
use crate::reconcile::DynamoTable;

fn context(cloud: &Cloud, scope: DeleteScope) -> Context {
    Context {
        stack_name: "usersync".into(),
        queue_url: QUEUE_URL.into(),
        config: testing::config(BUCKET, scope),
        table: DynamoTable::new(cloud.dynamodb(), "users".into(), "name".into()),
        store: S3Store::new(cloud.s3(), BUCKET),
        s3: cloud.s3(),
        sqs: cloud.sqs(),
        streams: cloud.streams(),
        read_limits: ReadLimits {
            max_pages: 100,
            max_time: Duration::from_secs(60),
            empty_page_pause: Duration::ZERO,
        },
    }
}

/// A whole-table reconcile that reports `problem` and counts its runs.
#[derive(Default)]
struct ScriptedReconcile {
    problem: Option<String>,
    runs: AtomicUsize,
}

impl WholeTableReconcile for ScriptedReconcile {
    async fn reconcile(&self, progress: &mut (dyn FnMut(&str) + Send)) -> ExpiredReconcile {
        self.runs.fetch_add(1, Ordering::SeqCst);
        progress("scripted reconcile");
        ExpiredReconcile {
            summary: "scripted".into(),
            problem: self.problem.clone(),
        }
    }
}

async fn replay_with(
    cloud: &Cloud,
    scope: DeleteScope,
    options: ReplayOptions,
    reconciler: &ScriptedReconcile,
) -> ReplayReport {
    run(&context(cloud, scope), options, reconciler, &mut |_| {})
        .await
        .unwrap()
}

async fn replay(cloud: &Cloud, scope: DeleteScope, options: ReplayOptions) -> ReplayReport {
    replay_with(cloud, scope, options, &ScriptedReconcile::default()).await
}

/// Defect (a): a user updated after the replay read the stream keeps the update.
#[tokio::test]
async fn an_update_made_after_the_stream_was_read_is_not_overwritten() {
    let cloud = Cloud::default();
    // The batch the mapping gave up on: ann at 1.
    cloud.set_shard(ScriptedShard {
        pages: vec![vec![record(Modify, "ann", Some(1), 100, 1_000)]],
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 100, 1));
    // Then ann becomes 2 and the function mirrors it; DynamoDB Streams publishes the record
    // after the replay's read reached the shard's tip, so the replay never sees it.
    cloud.set_user("ann", Some(2));
    cloud.put_user_object("ann", 2, 2_000);
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Object, ReplayOptions::default()).await;

    assert_eq!(
        cloud.object_json("ann/userdata"),
        cloud.expected_json("ann"),
        "{report:#?}"
    );
    assert!(cloud.queue().ids().is_empty(), "{report:#?}");
}

/// Defect (b): a later write of the user behind several empty pages is not missed, so the old
/// REMOVE does not delete the live user's object.
#[tokio::test]
async fn a_later_write_behind_empty_pages_keeps_the_user_s_object() {
    let cloud = Cloud::default();
    let mut pages = vec![vec![record(Remove, "bob", None, 100, 1_000)]];
    // DynamoDB Streams may answer empty several times on the way through a shard.
    pages.extend((0..6).map(|_| Vec::new()));
    pages.push(vec![record(Insert, "bob", Some(7), 200, 2_000)]);
    cloud.set_shard(ScriptedShard {
        pages,
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 100, 1));
    // The mapping applied the later INSERT.
    cloud.set_user("bob", Some(7));
    cloud.put_user_object("bob", 7, 2_000);
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Object, ReplayOptions::default()).await;

    assert_eq!(
        cloud.object_json("bob/userdata"),
        cloud.expected_json("bob"),
        "{report:#?}"
    );
    assert!(cloud.expected_json("bob").is_some());
}

/// Defect (c): under prefix scope, a REMOVE followed by an INSERT still clears what the user
/// had under the prefix before the REMOVE.
#[tokio::test]
async fn a_remove_followed_by_an_insert_clears_the_old_objects_under_the_prefix() {
    let cloud = Cloud::default();
    cloud.set_shard(ScriptedShard {
        pages: vec![
            vec![record(Remove, "cy", None, 100, 1_000)],
            vec![record(Insert, "cy", Some(3), 200, 2_000)],
        ],
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 100, 1));
    // Before the REMOVE, cy had an avatar beside the mirror's object; the INSERT after it was
    // mirrored.
    cloud.put_object("cy/avatar.png", b"png", 500);
    cloud.set_user("cy", Some(3));
    cloud.put_user_object("cy", 3, 2_000);
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Prefix, ReplayOptions::default()).await;

    let keys: Vec<String> = cloud.bucket().into_keys().collect();
    assert_eq!(keys, ["cy/userdata"], "{report:#?}");
    assert_eq!(cloud.object_json("cy/userdata"), cloud.expected_json("cy"));
}

#[tokio::test]
async fn a_user_written_again_after_the_batch_gets_the_table_s_current_item() {
    let cloud = Cloud::default();
    // The batch sets dee to 1; the stream then shows 2, and the table is already at 3 (its
    // record not yet in the shard). The bucket still holds what the mapping last wrote, 2.
    cloud.set_shard(ScriptedShard {
        pages: vec![
            vec![
                record(Insert, "dee", Some(1), 100, 1_000),
                record(Insert, "eve", Some(5), 101, 1_000),
            ],
            vec![record(Modify, "dee", Some(2), 200, 2_000)],
        ],
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 101, 2));
    cloud.set_user("dee", Some(3));
    cloud.set_user("eve", Some(5));
    cloud.put_user_object("dee", 2, 2_000);
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Object, ReplayOptions::default()).await;

    assert_eq!(
        cloud.object_json("dee/userdata"),
        Some(serde_json::json!({"name": "dee", "age": 3}))
    );
    assert_eq!(
        cloud.object_json("eve/userdata"),
        cloud.expected_json("eve")
    );
    let message = &report.messages[0];
    assert_eq!(message.users, ["dee", "eve"]);
    assert_eq!((message.records, message.repaired), (2, 2));
    assert_eq!(message.outcome, Outcome::Replayed);
    assert!(message.deleted);
    assert!(cloud.queue().ids().is_empty());
}

#[tokio::test]
async fn under_prefix_scope_only_objects_older_than_the_remove_go() {
    let cloud = Cloud::default();
    // cy is removed at 1,000 and inserted again; dan is removed for good.
    cloud.set_shard(ScriptedShard {
        pages: vec![vec![
            record(Remove, "cy", None, 100, 1_000),
            record(Remove, "dan", None, 101, 1_000),
        ]],
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 101, 2));
    cloud.put_object("cy/avatar.png", b"old", 500);
    cloud.put_user_object("cy", 1, 999);
    // Written in the REMOVE's own second and after it: both kept.
    cloud.put_object("cy/same-second.txt", b"?", 1_000);
    cloud.put_object("cy/notes.txt", b"new", 1_500);
    cloud.set_user("cy", Some(4));
    cloud.put_object("dan/userdata", b"{}", 900);
    cloud.put_object("dan/later.txt", b"late", 1_200);
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Prefix, ReplayOptions::default()).await;

    let keys: Vec<String> = cloud.bucket().into_keys().collect();
    assert_eq!(
        keys,
        ["cy/notes.txt", "cy/same-second.txt", "cy/userdata"],
        "dan is gone, prefix and all: {report:#?}"
    );
    assert_eq!(
        cloud.object_json("cy/userdata"),
        Some(serde_json::json!({"name": "cy", "age": 4}))
    );
    assert_eq!(
        cloud.bucket()["cy/userdata"].last_modified.secs(),
        3_000,
        "put again by the repair, after the cleanup"
    );
    // cy's avatar and old object, dan's object from before the REMOVE.
    assert_eq!(report.messages[0].prefix_objects_deleted, 3);
    assert_eq!(report.messages[0].outcome, Outcome::Replayed);
}

#[tokio::test]
async fn a_dry_run_names_the_users_and_changes_nothing() {
    let cloud = Cloud::default();
    cloud.set_shard(ScriptedShard {
        pages: vec![vec![
            record(Modify, "ann", Some(1), 100, 1_000),
            record(Remove, "bob", None, 101, 1_000),
        ]],
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 101, 2));
    cloud.set_user("ann", Some(9));
    cloud.put_object("bob/userdata", b"{}", 500);
    let before = cloud.bucket();

    let report = replay(
        &cloud,
        DeleteScope::Prefix,
        ReplayOptions {
            dry_run: true,
            reconcile_expired: true,
        },
    )
    .await;

    assert_eq!(cloud.bucket(), before);
    assert_eq!(cloud.queue().visible(), ["m1"], "released for the next run");
    let message = &report.messages[0];
    assert_eq!(message.users, ["ann", "bob"]);
    assert_eq!(message.repaired, 0);
    assert_eq!(message.outcome, Outcome::WouldReplay);
    assert!(!message.deleted);
    assert_eq!(report.kept_with_problems(), 0);
}

/// A shard whose batch 100..=102 lost its first record to the stream's retention.
fn trimmed_shard(cloud: &Cloud) {
    cloud.set_shard(ScriptedShard {
        pages: vec![
            vec![record(Insert, "gone", Some(1), 100, 1_000)],
            vec![
                record(Insert, "fay", Some(1), 101, 1_000),
                record(Insert, "gus", Some(1), 102, 1_000),
            ],
        ],
        trim_horizon: 1,
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 102, 3));
    cloud.set_user("fay", Some(2));
    cloud.set_user("gus", Some(2));
    cloud.set_s3_now(3_000);
}

#[tokio::test]
async fn an_expired_message_is_kept_and_says_how_to_reconcile() {
    let cloud = Cloud::default();
    trimmed_shard(&cloud);
    let reconciler = ScriptedReconcile::default();

    let report = replay_with(
        &cloud,
        DeleteScope::Object,
        ReplayOptions::default(),
        &reconciler,
    )
    .await;

    let message = &report.messages[0];
    assert_eq!(message.outcome, Outcome::Expired { missing: 1 });
    assert!(!message.deleted);
    assert_eq!(message.users, ["fay", "gus"]);
    // The users it still names are repaired all the same.
    assert_eq!(message.repaired, 2);
    assert_eq!(
        cloud.object_json("fay/userdata"),
        cloud.expected_json("fay")
    );
    assert_eq!(cloud.queue().visible(), ["m1"]);
    assert_eq!(reconciler.runs.load(Ordering::SeqCst), 0);
    assert_eq!(report.kept_with_problems(), 1);
    assert!(
        message.outcome.label().contains("--reconcile-expired"),
        "{}",
        message.outcome.label()
    );
    assert!(
        report.summary().contains(
            "1 message(s) have records no longer in the stream and cannot name their users: run `cargo xtask replay-failures --reconcile-expired`"
        ),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn reconcile_expired_deletes_expired_messages_only_when_nothing_failed() {
    let reconcile_expired = ReplayOptions {
        dry_run: false,
        reconcile_expired: true,
    };

    let cloud = Cloud::default();
    trimmed_shard(&cloud);
    let reconciler = ScriptedReconcile::default();
    let report = replay_with(&cloud, DeleteScope::Object, reconcile_expired, &reconciler).await;
    assert_eq!(reconciler.runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        report.messages[0].outcome,
        Outcome::ExpiredReconciled { missing: 1 }
    );
    assert!(report.messages[0].deleted);
    assert!(cloud.queue().ids().is_empty());
    assert_eq!(report.kept_with_problems(), 0);
    assert_eq!(
        report
            .expired_reconcile
            .as_ref()
            .map(|r| r.summary.as_str()),
        Some("scripted")
    );

    let cloud = Cloud::default();
    trimmed_shard(&cloud);
    let failing = ScriptedReconcile {
        problem: Some("1 user(s) could not be repaired".into()),
        ..ScriptedReconcile::default()
    };
    let report = replay_with(&cloud, DeleteScope::Object, reconcile_expired, &failing).await;
    assert_eq!(failing.runs.load(Ordering::SeqCst), 1);
    assert_eq!(report.messages[0].outcome, Outcome::Expired { missing: 1 });
    assert!(!report.messages[0].deleted);
    assert_eq!(cloud.queue().visible(), ["m1"], "kept and released");
    assert!(
        report.summary().contains("did not repair everything"),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn a_batch_that_cannot_be_read_to_its_end_fails_its_message_only() {
    let cloud = Cloud::default();
    // Message m1's batch ends at 105, which the open shard never reaches; m2 is fine.
    let mut pages = vec![vec![record(Insert, "hal", Some(1), 100, 1_000)]];
    pages.extend((0..200).map(|_| Vec::new()));
    cloud.set_shard(ScriptedShard {
        pages,
        ..ScriptedShard::default()
    });
    cloud.enqueue("m1", batch_message(100, 105, 2));
    cloud.enqueue("m2", batch_message(100, 100, 1));
    cloud.enqueue("m3", "not a failure record".to_owned());
    cloud.set_user("hal", Some(1));
    cloud.set_s3_now(3_000);

    let report = replay(&cloud, DeleteScope::Object, ReplayOptions::default()).await;

    let outcome = |id: &str| {
        report
            .messages
            .iter()
            .find(|m| m.message_id == id)
            .map(|m| m.outcome.clone())
            .unwrap()
    };
    assert!(
        matches!(outcome("m1"), Outcome::Failed { ref reason } if reason.contains("read 100 page(s)")),
        "{:?}",
        outcome("m1")
    );
    assert_eq!(outcome("m2"), Outcome::Replayed);
    assert!(matches!(outcome("m3"), Outcome::Unreadable { .. }));
    assert_eq!(cloud.queue().visible(), ["m1", "m3"]);
    assert_eq!(
        cloud.object_json("hal/userdata"),
        cloud.expected_json("hal")
    );
}
