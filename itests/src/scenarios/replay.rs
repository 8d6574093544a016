//! 12. `DELETE_SCOPE=prefix` and `replay-failures`: a REMOVE and an INSERT of a user land in the
//!     failure queue during an outage that outlives the mapping's retries; the replay clears what
//!     the user had under its prefix before the REMOVE and puts the user's current object back,
//!     and the queue ends empty.
//!
//! The outage: the deployed function is pointed at a bucket that does not exist (its
//! `BUCKET_NAME`), which any backend applies to the invocations after the update, and the
//! mapping is deployed with no retries and no bisection, so each failing batch goes to the
//! failure queue after one invocation.
//!
//! What this relies on in LocalStack 4.14.0 (`localstack-core/localstack/`):
//! `services/lambda_/event_source_mapping/pollers/stream_poller.py` retries from the lowest
//! failed sequence number after a partial batch failure, and once `max_retries_exceeded` (more
//! attempts than `MaximumRetryAttempts`, so after the first with 0) sends the batch's
//! coordinates, `batchSize` included, to the SQS destination (`send_events_to_dlq`,
//! `create_dlq_event`) under `DDBStreamBatchInfo` (`pollers/dynamodb_poller.py`); stream records
//! carry `ApproximateCreationDateTime` as whole seconds (`int(time.time())`, `get_record_template`
//! in `services/dynamodb/provider.py`). Its `DeleteObjects` (`services/s3/provider.py`) ignores
//! the per-key ETag condition the replay's prefix cleanup sends; nothing rewrites the user's
//! objects during the replay here, so the scenario does not depend on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use aws_sdk_sqs::types::QueueAttributeName;
use deployer::replay::{parse_message, replay_failures, ReplayOptions, ReplayReport};
use deployer::settings::DeleteScope;
use deployer::template::output;
use serde_json::json;
use usersync_function::config::vars;

use super::settings;
use crate::harness::Backend;
use crate::test_stack::{n, s, TestStack};

const USER: &str = "ursula";

pub(super) async fn replay_prefix_scope(backend: &Backend) -> Result<()> {
    let mut settings = settings("replay");
    settings.delete_scope = DeleteScope::Prefix;
    settings.maximum_retry_attempts = 0;
    settings.bisect_batch_on_function_error = false;
    let mut stack = backend.deploy(settings).await?;
    let (object, avatar) = (format!("{USER}/userdata"), format!("{USER}/avatar.png"));
    stack.put_user(USER, &[("plan", s("free"))]).await?;
    stack.wait_in_step("inserting ursula").await?;
    stack.put_object(&avatar, "png").await?;

    // The replay deletes the objects under the prefix last modified in a second strictly
    // before the REMOVE's: S3's LastModified and the stream's ApproximateCreationDateTime are
    // both whole seconds (`deployer::replay`'s prefix cleanup says why). So the REMOVE must come
    // at least a second after the later of the two objects was written: sleep until the clock
    // is two seconds past that second (one more for clocks that disagree by less than one).
    let last_written = last_modified(&stack, &[&object, &avatar]).await?;
    let remove_from = UNIX_EPOCH + Duration::from_secs(last_written + 2);
    if let Ok(wait) = remove_from.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }

    let bucket = stack.bucket().to_owned();
    // Never created: the stack's name is unique, and no bucket is named after it.
    let missing = format!(
        "{}-no-such-bucket",
        stack.settings.stack_name.to_lowercase()
    );
    stack
        .set_function_variable(vars::BUCKET_NAME, &missing)
        .await?;
    stack.delete_user(USER).await?;
    stack
        .put_user(USER, &[("plan", s("pro")), ("seats", n(3))])
        .await?;
    stack
        .wait_for("the REMOVE and the INSERT in the failure queue", || async {
            Ok(queued_records(&stack).await? >= 2)
        })
        .await?;
    let queued = queued_records(&stack).await?;
    ensure!(
        queued == 2,
        "the failure queue names {queued} records, expected the REMOVE and the INSERT"
    );
    let objects = stack.objects().await?;
    ensure!(
        objects.get(&object) == Some(&json!({"name": USER, "plan": "free"}))
            && stack.all_keys().await?.contains(&avatar),
        "the outage should have left the bucket as it was, found {objects:?}"
    );
    stack
        .set_function_variable(vars::BUCKET_NAME, &bucket)
        .await?;

    let report = replay(&stack).await?;
    ensure!(
        !report.messages.is_empty() && report.kept() == 0,
        "expected every message replayed and deleted: {}",
        report.summary()
    );
    let prefix_deleted: usize = report
        .messages
        .iter()
        .map(|m| m.prefix_objects_deleted)
        .sum();
    ensure!(
        prefix_deleted == 2,
        "expected the old object and the avatar deleted as older than the REMOVE, {prefix_deleted} \
         were: {}",
        report.summary()
    );
    let keys: Vec<String> = stack
        .all_keys()
        .await?
        .into_iter()
        .filter(|k| k.starts_with(&format!("{USER}/")))
        .collect();
    ensure!(
        keys == [object.clone()],
        "only {object} should be left under the prefix, found {keys:?}"
    );
    let objects = stack.objects().await?;
    ensure!(
        objects.get(&object) == Some(&json!({"name": USER, "plan": "pro", "seats": 3})),
        "{object} is {:?}, expected the INSERT's item",
        objects.get(&object)
    );
    stack
        .wait_for("the failure queue to be empty", || async {
            Ok(queue_depth(&stack).await? == 0)
        })
        .await?;
    stack.teardown().await?;
    Ok(())
}

/// Runs `replay-failures` on the stack, as `cargo xtask replay-failures` would.
async fn replay(stack: &TestStack) -> Result<ReplayReport> {
    let stack_name = &stack.settings.stack_name;
    let mut progress = |line: &str| eprintln!("{stack_name}: replay: {line}");
    replay_failures(
        &stack.target,
        stack_name,
        ReplayOptions::default(),
        &mut progress,
    )
    .await
    .context("replay-failures failed")
}

/// The later LastModified of `keys`, in whole seconds since the epoch.
async fn last_modified(stack: &TestStack, keys: &[&str]) -> Result<u64> {
    let mut latest = 0;
    for key in keys {
        let head = stack
            .target
            .s3()
            .head_object()
            .bucket(stack.bucket())
            .key(*key)
            .send()
            .await
            .with_context(|| format!("failed to read {key}'s metadata"))?;
        let at = head
            .last_modified()
            .with_context(|| format!("{key} has no LastModified"))?;
        latest = latest.max(u64::try_from(at.secs()).unwrap_or(0));
    }
    Ok(latest)
}

/// The records the failure queue's messages name (each message's `batchSize`), read and made
/// visible again at once, so that the replay reads them all.
async fn queued_records(stack: &TestStack) -> Result<u64> {
    let sqs = stack.target.sqs();
    let url = stack
        .outputs
        .get(output::FAILURE_QUEUE_URL)
        .cloned()
        .unwrap_or_default();
    let mut records = 0;
    let mut receipts = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            // A short long-poll: asks every SQS server, so an empty answer is an empty queue.
            .wait_time_seconds(1)
            .send()
            .await
            .context("failed to read the failure queue")?;
        if received.messages().is_empty() {
            break;
        }
        for message in received.messages() {
            let info = parse_message(message.body().unwrap_or_default())
                .context("a failure queue message is no stream batch's")?;
            records += info.batch_size.unwrap_or(0);
            receipts.extend(message.receipt_handle().map(str::to_owned));
        }
    }
    for receipt in receipts {
        sqs.change_message_visibility()
            .queue_url(&url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .context("failed to release a failure queue message")?;
    }
    Ok(records)
}

/// Messages in the failure queue, visible or not.
async fn queue_depth(stack: &TestStack) -> Result<u64> {
    let url = stack
        .outputs
        .get(output::FAILURE_QUEUE_URL)
        .cloned()
        .unwrap_or_default();
    let attributes = stack
        .target
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .context("failed to read the failure queue's depth")?;
    let read = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(read(QueueAttributeName::ApproximateNumberOfMessages)
        + read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
