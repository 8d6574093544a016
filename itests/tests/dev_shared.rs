//! `dev` on a shared target: the embedded emulator reached by its endpoint, as
//! `cargo xtask dev --endpoint-url` reaches one, so that the stack, its table and its bucket
//! outlive each session.
//!
//! - dev refuses to run beside the stack's enabled event source mapping, and with take-over
//!   disables it while it runs and enables it again when it stops;
//! - dev restarted twice, with inserts, updates and deletes while it runs and while it is down:
//!   each start reconciles the bucket and then applies only what is written after it, so the
//!   bucket ends equal to the table, no record from before a start is ever applied again, and a
//!   user deleted before a restart never comes back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use deployer::console::RecordingConsole;
use deployer::mirror_check;
use deployer::reconcile::deployed::function_config;
use deployer::settings::StackSettings;
use deployer::stack;
use deployer::target::Target;
use deployer::template::output;
use itests::emulator::{start, REGION};
use itests::test_stack::{unique_stack_name, CONVERGE_TIMEOUT, POLL_INTERVAL};
use usersync_local::dev::{DevError, DevSession, DevTarget, TakeOver};
use usersync_local::mapping::batch::{BatchEvent, Verdict};
use usersync_local::mapping::poller::{PollerEvent, PollerObserver};
use usersync_local::runtime::function_host::OutputSink;

/// What the pollers of one session told.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<PollerEvent>>>);

impl Seen {
    fn observer(&self) -> PollerObserver {
        let seen = Arc::clone(&self.0);
        Arc::new(move |event| seen.lock().unwrap_or_else(|e| e.into_inner()).push(event))
    }

    fn events(&self) -> Vec<PollerEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the function was given and took, over every successful invocation.
    fn records_applied(&self) -> usize {
        self.events()
            .iter()
            .filter_map(|event| match event {
                PollerEvent::Batch(BatchEvent::Invoked(report))
                    if report.verdict == Verdict::Success =>
                {
                    Some(report.records)
                }
                _ => None,
            })
            .sum()
    }
}

/// The shared target and the stack dev deploys on it.
struct Shared {
    target: Target,
    settings: StackSettings,
}

impl Shared {
    fn new(target: Target, label: &str) -> Self {
        Self {
            target,
            settings: StackSettings {
                stack_name: unique_stack_name(label),
                ..StackSettings::default()
            },
        }
    }

    /// Starts dev as `cargo xtask dev --endpoint-url …` does.
    async fn dev(
        &self,
        take_over: &mut TakeOver,
        console: &mut RecordingConsole,
        seen: &Seen,
    ) -> Result<DevSession, DevError> {
        DevSession::start(
            DevTarget::Connected(Box::new(self.target.clone())),
            &self.settings,
            take_over,
            console,
            OutputSink::new(|_| {}),
            seen.observer(),
        )
        .await
    }

    async fn outputs(&self) -> Result<BTreeMap<String, String>> {
        let found = stack::describe_stack(&self.target, &self.settings.stack_name)
            .await?
            .context("the stack exists")?;
        Ok(stack::outputs_of(&found))
    }

    async fn mapping_state(&self) -> Result<String> {
        let uuid = self.outputs().await?[output::EVENT_SOURCE_MAPPING_ID].clone();
        let mapping = self
            .target
            .lambda()
            .get_event_source_mapping()
            .uuid(uuid)
            .send()
            .await
            .context("failed to read the mapping")?;
        Ok(mapping.state().unwrap_or_default().to_owned())
    }

    async fn teardown(&self) -> Result<()> {
        stack::teardown(
            &self.target,
            &self.settings.stack_name,
            false,
            false,
            &mut RecordingConsole::agreeing(),
        )
        .await?;
        Ok(())
    }
}

/// The stack's table, written by the deployed function's key attribute.
struct Table {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    key_attribute: String,
}

impl Table {
    /// The table of a running session.
    fn of(session: &DevSession) -> Result<Self> {
        Ok(Self {
            dynamodb: session.target.dynamodb(),
            table: session.table_and_bucket()?.0,
            key_attribute: session.function_config.key_attribute.clone(),
        })
    }

    /// The table while no dev runs.
    async fn while_down(shared: &Shared) -> Result<Self> {
        let outputs = shared.outputs().await?;
        let config = function_config(&shared.target, &outputs[output::FUNCTION_NAME]).await?;
        Ok(Self {
            dynamodb: shared.target.dynamodb(),
            table: outputs[output::TABLE_NAME].clone(),
            key_attribute: config.key_attribute,
        })
    }

    async fn put(&self, name: &str, plan: &str) -> Result<()> {
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item(&self.key_attribute, AttributeValue::S(name.to_owned()))
            .item("plan", AttributeValue::S(plan.to_owned()))
            .send()
            .await
            .with_context(|| format!("failed to put {name}"))?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .key(&self.key_attribute, AttributeValue::S(name.to_owned()))
            .send()
            .await
            .with_context(|| format!("failed to delete {name}"))?;
        Ok(())
    }
}

/// Waits until the session's bucket mirrors its table.
async fn wait_in_step(session: &DevSession, after: &str) -> Result<()> {
    let (table, bucket) = session.table_and_bucket()?;
    let (diff, in_step) = mirror_check::wait_until_in_step(
        &session.target,
        &table,
        &bucket,
        &session.key_layout(),
        CONVERGE_TIMEOUT,
        POLL_INTERVAL,
    )
    .await?;
    ensure!(in_step, "out of step after {after}: {diff}");
    Ok(())
}

/// The users with an object, and their plans.
async fn objects(session: &DevSession) -> Result<BTreeMap<String, String>> {
    let (_, bucket) = session.table_and_bucket()?;
    let objects =
        mirror_check::user_objects(&session.target, &bucket, &session.key_layout()).await?;
    Ok(objects
        .values()
        .map(|body| {
            (
                body["name"].as_str().unwrap_or_default().to_owned(),
                body["plan"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Over `window`, the bucket stays as `expected` (user → plan) and nothing is applied from
/// the stream: no old record is read back into it.
async fn stays_as(
    session: &DevSession,
    seen: &Seen,
    expected: &[(&str, &str)],
    window: Duration,
) -> Result<()> {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(name, plan)| ((*name).to_owned(), (*plan).to_owned()))
        .collect();
    let until = Instant::now() + window;
    while Instant::now() < until {
        let objects = objects(session).await?;
        ensure!(
            objects == expected,
            "the bucket holds {objects:?}, expected {expected:?}"
        );
        ensure!(
            seen.records_applied() == 0,
            "records from before the start were applied: {:#?}",
            seen.events()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// Every shard a session read started at LATEST.
fn started_at_latest(seen: &Seen) -> Result<()> {
    let positions: Vec<_> = seen
        .events()
        .into_iter()
        .filter_map(|event| match event {
            PollerEvent::ShardStarted { position, .. } => Some(position),
            _ => None,
        })
        .collect();
    ensure!(!positions.is_empty(), "no shard was started");
    ensure!(
        positions
            .iter()
            .all(|p| *p == deployer::streams::reader::ReadPosition::Latest),
        "a shard open at the start was not read from LATEST: {positions:?}"
    );
    Ok(())
}

/// Stops the session and enables the mapping it took over again.
async fn stop(session: DevSession, take_over: &mut TakeOver) -> Result<RecordingConsole> {
    let mut console = RecordingConsole::agreeing();
    session.stop(false, &mut console).await?;
    take_over.restore(&mut console).await?;
    Ok(console)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_refuses_beside_an_enabled_mapping_and_takes_it_over_when_told() -> Result<()> {
    let emulator = start().await;
    let shared = Shared::new(
        Target::for_endpoint(&emulator.endpoint_url(), REGION),
        "devtakeover",
    );
    let result = refuses_then_takes_over(&shared).await;
    let teardown = shared.teardown().await;
    result.and(teardown)
}

async fn refuses_then_takes_over(shared: &Shared) -> Result<()> {
    let seen = Seen::default();

    // First run: the stack is new, deployed with its mapping enabled; dev refuses after the
    // deploy that created it.
    let mut console = RecordingConsole::agreeing();
    let mut refused = TakeOver::new(false, None);
    let Err(err) = shared.dev(&mut refused, &mut console, &seen).await else {
        bail!("dev ran beside an enabled mapping");
    };
    let uuid = shared.outputs().await?[output::EVENT_SOURCE_MAPPING_ID].clone();
    let message = err.to_string();
    assert!(
        matches!(&err, DevError::MappingEnabled { uuid: named, .. } if *named == uuid),
        "{err:?}"
    );
    for part in [uuid.as_str(), "--take-over", "cargo xtask teardown"] {
        assert!(message.contains(part), "{message:?} should name {part:?}");
    }
    assert_eq!(refused.taken(), None);
    assert_eq!(shared.mapping_state().await?, "Enabled");

    // Second run: the stack exists, and dev refuses before deploying anything.
    let mut console = RecordingConsole::agreeing();
    let Err(DevError::MappingEnabled { .. }) = shared.dev(&mut refused, &mut console, &seen).await
    else {
        bail!("dev ran beside an enabled mapping");
    };
    assert!(
        !console.lines.iter().any(|line| line.contains("up to date")),
        "refused before the deploy: {:#?}",
        console.lines
    );

    // With take-over: the mapping is disabled while dev runs, and dev's poller reads in its
    // place.
    let mut console = RecordingConsole::agreeing();
    let mut take_over = TakeOver::new(true, None);
    let session = shared.dev(&mut take_over, &mut console, &seen).await?;
    assert_eq!(take_over.taken(), Some(uuid.as_str()));
    assert_eq!(shared.mapping_state().await?, "Disabled");
    assert!(
        console
            .lines
            .iter()
            .any(|line| line.starts_with(&format!("taking over event source mapping {uuid}"))),
        "{:#?}",
        console.lines
    );
    Table::of(&session)?.put("alice", "pro").await?;
    wait_in_step(&session, "inserting alice").await?;

    // Stopped: the mapping is enabled again, and restoring twice does nothing more.
    let console = stop(session, &mut take_over).await?;
    assert_eq!(shared.mapping_state().await?, "Enabled");
    assert_eq!(take_over.taken(), None);
    assert!(
        console
            .lines
            .contains(&format!("event source mapping {uuid} is enabled again")),
        "{:#?}",
        console.lines
    );
    let mut console = RecordingConsole::agreeing();
    take_over.restore(&mut console).await?;
    assert!(console.lines.is_empty(), "{:#?}", console.lines);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_dev_never_applies_old_history() -> Result<()> {
    let emulator = start().await;
    let shared = Shared::new(
        Target::for_endpoint(&emulator.endpoint_url(), REGION),
        "devrestart",
    );
    let result = three_sessions(&shared).await;
    let teardown = shared.teardown().await;
    result.and(teardown)
}

async fn three_sessions(shared: &Shared) -> Result<()> {
    // How long each restarted session is watched for old records read back.
    let watch = Duration::from_secs(3);
    let mut take_over = TakeOver::new(true, None);

    // Session 1: a new stack, an empty bucket.
    let seen = Seen::default();
    let mut console = RecordingConsole::agreeing();
    let session = shared.dev(&mut take_over, &mut console, &seen).await?;
    started_at_latest(&seen)?;
    let users = Table::of(&session)?;
    for name in ["alice", "bob", "carol"] {
        users.put(name, "free").await?;
    }
    wait_in_step(&session, "inserting alice, bob and carol").await?;
    users.put("bob", "pro").await?;
    users.delete("carol").await?;
    wait_in_step(&session, "upgrading bob and deleting carol").await?;
    assert_eq!(seen.records_applied(), 5);
    stop(session, &mut take_over).await?;

    // Down: an insert, an update and a delete that no stream reader applies.
    let writer = Table::while_down(shared).await?;
    writer.put("dave", "free").await?;
    writer.put("alice", "team").await?;
    writer.delete("bob").await?;

    // Session 2: the start-up reconcile repairs what happened while dev was down; the stream
    // is applied from the start on only, so carol (deleted before the restart) and bob
    // (deleted while down) never come back, as their INSERTs would bring them.
    let seen = Seen::default();
    let mut console = RecordingConsole::agreeing();
    let session = shared.dev(&mut take_over, &mut console, &seen).await?;
    started_at_latest(&seen)?;
    let report = session
        .startup_reconcile
        .clone()
        .context("a shared target is reconciled at the start")?;
    assert_eq!(
        (
            report.missing,
            report.stale,
            report.orphaned,
            report.repaired,
            report.failed
        ),
        (1, 1, 1, 3, 0),
        "dave missing, alice stale, bob orphaned: {}",
        report.summary()
    );
    assert!(
        console
            .lines
            .iter()
            .any(|line| line.starts_with("start-up reconcile: ")
                && line.contains("3 of 3 users repaired")),
        "dev says what the reconcile found and repaired: {:#?}",
        console.lines
    );
    wait_in_step(&session, "the second start").await?;
    stays_as(
        &session,
        &seen,
        &[("alice", "team"), ("dave", "free")],
        watch,
    )
    .await?;
    let users = Table::of(&session)?;
    users.put("erin", "free").await?;
    users.delete("dave").await?;
    users.put("alice", "pro").await?;
    wait_in_step(&session, "inserting erin, deleting dave, upgrading alice").await?;
    assert_eq!(
        seen.records_applied(),
        3,
        "only what was written since the start"
    );
    stop(session, &mut take_over).await?;

    // Down again.
    let writer = Table::while_down(shared).await?;
    writer.delete("alice").await?;
    writer.put("erin", "team").await?;

    // Session 3.
    let seen = Seen::default();
    let mut console = RecordingConsole::agreeing();
    let session = shared.dev(&mut take_over, &mut console, &seen).await?;
    started_at_latest(&seen)?;
    let report = session.startup_reconcile.clone().context("reconciled")?;
    assert_eq!(
        (
            report.stale,
            report.orphaned,
            report.repaired,
            report.failed
        ),
        (1, 1, 2, 0),
        "erin stale, alice orphaned: {}",
        report.summary()
    );
    wait_in_step(&session, "the third start").await?;
    stays_as(&session, &seen, &[("erin", "team")], watch).await?;
    Table::of(&session)?.put("frank", "free").await?;
    wait_in_step(&session, "inserting frank").await?;
    assert_eq!(seen.records_applied(), 1);
    stop(session, &mut take_over).await?;
    assert_eq!(shared.mapping_state().await?, "Enabled");
    Ok(())
}
