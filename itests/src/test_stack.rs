//! A deployed stack that one end-to-end scenario owns: the users table to write to, the bucket
//! to assert on, and a teardown that runs even when the scenario fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use deployer::console::RecordingConsole;
use deployer::mirror_check::{self, KeyLayout, MirrorDiff};
use deployer::settings::StackSettings;
use deployer::stack::{self, TeardownOutcome, TeardownReport};
use deployer::target::Target;
use deployer::template::output;
use serde_json::Value;
use usersync_function::config::DEFAULT_KEY_ATTRIBUTE as KEY_ATTRIBUTE;
use usersync_local::mapping::pipeline::{LocalPipeline, PipelineOptions, PipelineStart};
use usersync_local::mapping::settings::StartingPosition;

/// How long a scenario waits for the pipeline to catch up before it fails.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often it looks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A stack name no other scenario in any process uses: `e2e-<label>-<pid>-<n>`.
pub fn unique_stack_name(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let label: String = label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    format!(
        "e2e-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One scenario's stack.
pub struct TestStack {
    pub target: Target,
    pub settings: StackSettings,
    pub outputs: BTreeMap<String, String>,
    /// The local backend's function host and poller; `None` where the backend runs the
    /// function itself.
    pipeline: Option<LocalPipeline>,
    /// How to start the local pipeline again, for a changed function configuration.
    relaunch: Option<Relaunch>,
    torn_down: bool,
}

/// What the local pipeline was started with.
struct Relaunch {
    function: String,
    options: PipelineOptions,
}

impl TestStack {
    pub fn new(
        target: Target,
        settings: StackSettings,
        outputs: BTreeMap<String, String>,
        pipeline: Option<LocalPipeline>,
    ) -> Self {
        Self {
            target,
            settings,
            outputs,
            pipeline,
            relaunch: None,
            torn_down: false,
        }
    }

    /// Remembers what the local pipeline of function `function` was started with, so that
    /// [`TestStack::set_function_variable`] can start it again.
    pub fn with_relaunch(mut self, function: &str, options: PipelineOptions) -> Self {
        self.relaunch = Some(Relaunch {
            function: function.to_owned(),
            options,
        });
        self
    }

    fn output(&self, name: &str) -> &str {
        self.outputs.get(name).map_or("", String::as_str)
    }

    pub fn table(&self) -> &str {
        self.output(output::TABLE_NAME)
    }

    pub fn bucket(&self) -> &str {
        self.output(output::BUCKET_NAME)
    }

    /// The function's layout. The suite's stacks create their table, whose hash key the template
    /// leaves to the function's default `KEY_ATTRIBUTE`.
    pub fn layout(&self) -> KeyLayout {
        KeyLayout {
            key_attribute: KEY_ATTRIBUTE.to_owned(),
            key_prefix: self.settings.key_prefix.clone(),
            object_name: self.settings.object_name.clone(),
        }
    }

    /// Writes user `name` with `attributes` (PutItem: an INSERT, or a MODIFY if it exists).
    pub async fn put_user(&self, name: &str, attributes: &[(&str, AttributeValue)]) -> Result<()> {
        self.target
            .dynamodb()
            .put_item()
            .table_name(self.table())
            .set_item(Some(user_item(name, attributes)))
            .send()
            .await
            .with_context(|| format!("failed to put user {name:?}"))?;
        Ok(())
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.target
            .dynamodb()
            .delete_item()
            .table_name(self.table())
            .key(KEY_ATTRIBUTE, AttributeValue::S(name.to_owned()))
            .send()
            .await
            .with_context(|| format!("failed to delete user {name:?}"))?;
        Ok(())
    }

    /// Writes `items` with BatchWriteItem, 25 at a time, resending what DynamoDB left
    /// unprocessed.
    pub async fn batch_put(&self, items: Vec<HashMap<String, AttributeValue>>) -> Result<()> {
        put_items(&self.target.dynamodb(), self.table(), items).await
    }

    pub async fn batch_delete(&self, names: &[String]) -> Result<()> {
        let requests = names
            .iter()
            .map(|name| {
                let delete = DeleteRequest::builder()
                    .key(KEY_ATTRIBUTE, AttributeValue::S(name.clone()))
                    .build()?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, aws_sdk_dynamodb::error::BuildError>>()?;
        self.batch_write(requests).await
    }

    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        write_batches(&self.target.dynamodb(), self.table(), requests).await
    }

    /// Waits until the bucket mirrors the table; fails with the difference after
    /// [`CONVERGE_TIMEOUT`].
    pub async fn wait_in_step(&self, after: &str) -> Result<MirrorDiff> {
        let (diff, in_step) = mirror_check::wait_until_in_step(
            &self.target,
            self.table(),
            self.bucket(),
            &self.layout(),
            CONVERGE_TIMEOUT,
            POLL_INTERVAL,
        )
        .await
        .context("failed to compare the bucket with the table")?;
        if !in_step {
            bail!(
                "the bucket did not follow the table within {}s after {after}: {diff}",
                CONVERGE_TIMEOUT.as_secs()
            );
        }
        Ok(diff)
    }

    /// Every user object in the bucket with its JSON body.
    pub async fn objects(&self) -> Result<BTreeMap<String, Value>> {
        mirror_check::user_objects(&self.target, self.bucket(), &self.layout())
            .await
            .context("failed to read the bucket")
    }

    /// Every key in the bucket, user objects or not.
    pub async fn all_keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .target
            .s3()
            .list_objects_v2()
            .bucket(self.bucket())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.context("failed to list the bucket")?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    pub async fn put_object(&self, key: &str, body: &str) -> Result<()> {
        self.target
            .s3()
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .with_context(|| format!("failed to put object {key}"))?;
        Ok(())
    }

    /// Polls `check` until it holds or [`CONVERGE_TIMEOUT`] passes; returns how long it took.
    pub async fn wait_for<F, Fut>(&self, what: &str, check: F) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        self.wait_for_within(what, CONVERGE_TIMEOUT, check).await
    }

    /// Polls `check` until it holds or `limit` passes; returns how long it took.
    pub async fn wait_for_within<F, Fut>(
        &self,
        what: &str,
        limit: Duration,
        mut check: F,
    ) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let started = Instant::now();
        loop {
            if check().await? {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!("{what} did not happen within {}s", limit.as_secs());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sets the deployed function's environment variable `name` to `value`
    /// (UpdateFunctionConfiguration, which replaces the whole environment, so the others are
    /// sent as they are) and waits until Lambda reports the update done (`LastUpdateStatus`
    /// `Successful`): from then on, new invocations run with it. LocalStack 4.14.0 does the same:
    /// `update_function_configuration` (`services/lambda_/provider.py`) stores the new `$LATEST`
    /// with `LastUpdateStatus` `InProgress` and starts it (`update_version`,
    /// `services/lambda_/invocation/lambda_service.py`); once it is active,
    /// `update_version_state` makes it the version invocations go to, shuts the old one down and
    /// sets `Successful`.
    ///
    /// The local pipeline reads the configuration once, when it starts, as a Lambda execution
    /// environment does; Lambda starts new environments after an update, so the local pipeline
    /// is started again. It starts at `LATEST`, standing for the deployed mapping, which keeps
    /// its place in the stream across a configuration update: call this only once the pipeline
    /// has handled every record written so far (a bounded wait on its effect), since records
    /// it has not read yet are not read again.
    pub async fn set_function_variable(&mut self, name: &str, value: &str) -> Result<()> {
        let lambda = self.target.lambda();
        let function = self.output(output::FUNCTION_NAME).to_owned();
        let configuration = lambda
            .get_function_configuration()
            .function_name(&function)
            .send()
            .await
            .with_context(|| format!("failed to read the configuration of {function}"))?;
        let mut variables = configuration
            .environment()
            .and_then(|e| e.variables())
            .cloned()
            .unwrap_or_default();
        variables.insert(name.to_owned(), value.to_owned());
        lambda
            .update_function_configuration()
            .function_name(&function)
            .environment(
                aws_sdk_lambda::types::Environment::builder()
                    .set_variables(Some(variables))
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("failed to set {name} of function {function}"))?;
        self.wait_for(&format!("the update of function {function}"), || {
            let lambda = lambda.clone();
            let function = function.clone();
            async move {
                let status = lambda
                    .get_function_configuration()
                    .function_name(&function)
                    .send()
                    .await?
                    .last_update_status()
                    .cloned();
                match status {
                    // No status at all: an emulator that applies updates at once.
                    None | Some(aws_sdk_lambda::types::LastUpdateStatus::Successful) => Ok(true),
                    Some(aws_sdk_lambda::types::LastUpdateStatus::Failed) => {
                        bail!("Lambda failed to update function {function}")
                    }
                    Some(_) => Ok(false),
                }
            }
        })
        .await?;
        if let (Some(pipeline), Some(relaunch)) = (self.pipeline.take(), &self.relaunch) {
            pipeline
                .stop()
                .await
                .context("the local poller stopped with an error")?;
            let restarted = LocalPipeline::start_with(
                &self.target,
                &relaunch.function,
                relaunch.options.clone(),
                // Held: it returns once each shard has its iterator at LATEST, so no record
                // written after this call is missed.
                PipelineStart {
                    starting_position: Some(StartingPosition::Latest),
                    stand_in: false,
                    held: true,
                },
            )
            .await
            .with_context(|| format!("failed to restart the local pipeline of {function}"))?;
            restarted.release();
            self.pipeline = Some(restarted);
        }
        Ok(())
    }

    /// Stops the local pipeline and deletes the stack.
    pub async fn teardown(self) -> Result<TeardownOutcome> {
        Ok(self.teardown_report().await?.outcome)
    }

    /// Stops the local pipeline and deletes the stack; says what the stack had adopted, which
    /// the teardown left as it was.
    pub async fn teardown_report(mut self) -> Result<TeardownReport> {
        self.torn_down = true;
        if let Some(pipeline) = self.pipeline.take() {
            pipeline
                .stop()
                .await
                .context("the local poller stopped with an error")?;
        }
        let mut console = RecordingConsole::agreeing();
        stack::teardown_report(
            &self.target,
            &self.settings.stack_name,
            false,
            false,
            &mut console,
        )
        .await
        .with_context(|| format!("failed to tear down stack {}", self.settings.stack_name))
    }
}

impl Drop for TestStack {
    /// A scenario that failed (or panicked) still removes its stack: on a thread of its own,
    /// since a runtime cannot be blocked on from inside itself.
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let pipeline = self.pipeline.take();
        let target = self.target.clone();
        let stack_name = self.settings.stack_name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Some(pipeline) = pipeline {
                    let _ = pipeline.stop().await;
                }
                let mut console = RecordingConsole::agreeing();
                if let Err(err) =
                    stack::teardown(&target, &stack_name, false, false, &mut console).await
                {
                    eprintln!(
                        "cleanup: failed to tear down stack {stack_name}: {}",
                        deployer::errors::chain(&err)
                    );
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Puts `items` into `table` with BatchWriteItem (see [`write_batches`]).
pub async fn put_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<()> {
    let requests = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build()?;
            Ok(WriteRequest::builder().put_request(put).build())
        })
        .collect::<Result<Vec<_>, aws_sdk_dynamodb::error::BuildError>>()?;
    write_batches(client, table, requests).await
}

/// Writes `requests` into `table` with BatchWriteItem, 25 at a time, resending what DynamoDB
/// left unprocessed.
pub async fn write_batches(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<()> {
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        for attempt in 0.. {
            let output = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .context("failed to write a batch of users")?;
            pending = output
                .unprocessed_items()
                .and_then(|left| left.get(table))
                .cloned()
                .unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            if attempt == 20 {
                bail!(
                    "DynamoDB left {} writes unprocessed 20 times",
                    pending.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
        }
    }
    Ok(())
}

/// A user item: the key attribute plus `attributes`.
pub fn user_item(
    name: &str,
    attributes: &[(&str, AttributeValue)],
) -> HashMap<String, AttributeValue> {
    let mut item: HashMap<String, AttributeValue> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    item.insert(KEY_ATTRIBUTE.to_owned(), AttributeValue::S(name.to_owned()));
    item
}

/// Shorthand for a string attribute.
pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// Shorthand for a number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
