//! `dev`: the whole pipeline on this machine. Builds the function, provides a target (by
//! default a private embedded emulator, stopped at the end), deploys the stack when it is
//! missing or stale, and runs the real `bootstrap` behind a local poller until stopped.
//!
//! [`demo`] drives a short scripted session through it: users inserted, one modified, one
//! deleted, the bucket compared with the table after each step.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use crate::emulator::{ensure_binary, Emulator, EmulatorError};
use crate::mapping::pipeline::{LocalPipeline, PipelineError, PipelineOptions};
use crate::mapping::poller::{PollerObserver, PollerOptions};
use crate::runtime::function_host::OutputSink;
use deployer::artifact::{self, BuildError, BuildOptions, Purpose};
use deployer::console::Console;
use deployer::mirror_check::{self, KeyLayout, MirrorDiff};
use deployer::settings::StackSettings;
use deployer::stack::{self, aws_error, StackError, TeardownOutcome};
use deployer::target::{Target, TargetError, DEFAULT_LOCAL_REGION};
use deployer::template::output;
use deployer::workflow::{self, DeployError, DeployReport, DeployResult};

/// Failures of a dev session, by stage.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("failed to provide the embedded emulator")]
    Emulator(#[from] EmulatorError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("failed to deploy the stack")]
    Deploy(#[from] DeployError),
    #[error("failed to build the function for this machine")]
    Build(#[from] BuildError),
    #[error("the deployed stack has no output {0}: deploy it again")]
    MissingOutput(&'static str),
    #[error("failed to start the local pipeline")]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("the bucket did not follow the table within {seconds}s after {step}: {diff}")]
    NotInStep {
        step: String,
        seconds: u64,
        diff: MirrorDiff,
    },
}

/// Where a dev session runs.
pub enum DevTarget {
    /// A private embedded emulator, started now and stopped with the session.
    PrivateEmulator,
    /// A target reached by the usual flags (an endpoint, or AWS).
    Connected(Box<Target>),
}

/// A running dev session: the target, the deployed stack's outputs and the local pipeline.
pub struct DevSession {
    pub target: Target,
    pub settings: StackSettings,
    pub deploy: DeployReport,
    pipeline: LocalPipeline,
    // Dropped last: the pipeline talks to it until it stops.
    emulator: Option<Emulator>,
}

impl DevSession {
    /// Provides the target, deploys, builds the host binary and starts the pipeline.
    pub async fn start(
        where_to: DevTarget,
        settings: &StackSettings,
        console: &mut dyn Console,
        output: OutputSink,
        observer: PollerObserver,
    ) -> Result<Self, DevError> {
        let (target, emulator) = match where_to {
            DevTarget::PrivateEmulator => {
                let binary = tokio::task::block_in_place(|| {
                    ensure_binary(&mut |line| console.line(&format!("[fakecloud] {line}")))
                })?;
                let log = deployer::project::state_dir().join("dev-fakecloud.log");
                let emulator = Emulator::start(&binary, &log).await?;
                console.line(&format!(
                    "started the embedded emulator at {} (pid {}, log {})",
                    emulator.endpoint_url(),
                    emulator.pid(),
                    log.display()
                ));
                let target = Target::for_endpoint(&emulator.endpoint_url(), DEFAULT_LOCAL_REGION);
                (target, Some(emulator))
            }
            DevTarget::Connected(target) => (*target, None),
        };

        let deploy = workflow::deploy(
            &target,
            settings,
            &workflow::DeployOptions::default(),
            console,
        )
        .await?;
        console.line(&match deploy.result {
            DeployResult::UpToDate => format!("stack {} is up to date", deploy.stack_name),
            result => format!("stack {} {result} on {}", deploy.stack_name, deploy.target),
        });
        let function = deploy
            .outputs
            .get(output::FUNCTION_NAME)
            .ok_or(DevError::MissingOutput(output::FUNCTION_NAME))?
            .clone();

        // The deployed archive may be built for Lambda (another architecture, musl); the host
        // runs a build for this machine. For emulators it is the same build, and cargo has
        // nothing to do.
        let host_build = tokio::task::block_in_place(|| {
            artifact::build(
                &BuildOptions {
                    architecture: None,
                    purpose: Purpose::Local,
                },
                &mut |line| console.line(line),
            )
        })?;
        let pipeline = LocalPipeline::start(
            &target,
            &function,
            PipelineOptions {
                binary: host_build.binary_path.clone(),
                poller: PollerOptions::default(),
                output,
                observer,
                extra_environment: BTreeMap::new(),
            },
        )
        .await?;
        console.line(&format!(
            "running {} as {function} against {}, fed by {} mapping(s)",
            host_build.binary_path.display(),
            target.describe(),
            pipeline.mappings().len()
        ));
        Ok(Self {
            target,
            settings: settings.clone(),
            deploy,
            pipeline,
            emulator,
        })
    }

    /// Whether the pipeline stopped on its own (its stream is gone).
    pub fn pipeline_stopped(&self) -> bool {
        self.pipeline.poller_stopped()
    }

    /// The table and bucket of the deployed stack.
    pub fn table_and_bucket(&self) -> Result<(String, String), DevError> {
        let get = |name: &'static str| {
            self.deploy
                .outputs
                .get(name)
                .cloned()
                .ok_or(DevError::MissingOutput(name))
        };
        Ok((get(output::TABLE_NAME)?, get(output::BUCKET_NAME)?))
    }

    pub fn key_layout(&self) -> KeyLayout {
        KeyLayout {
            key_prefix: self.settings.key_prefix.clone(),
            object_name: self.settings.object_name.clone(),
        }
    }

    /// Stops the pipeline and, if the session started one, the emulator. With `teardown` the
    /// stack is deleted first (pointless on a private emulator, which forgets everything).
    pub async fn stop(
        self,
        teardown: bool,
        console: &mut dyn Console,
    ) -> Result<Option<TeardownOutcome>, DevError> {
        let stopped = self.pipeline.stop().await;
        let outcome = if teardown {
            Some(
                stack::teardown(
                    &self.target,
                    &self.settings.stack_name,
                    self.settings.retain_data_on_teardown,
                    false,
                    console,
                )
                .await?,
            )
        } else {
            None
        };
        if let Some(emulator) = self.emulator {
            emulator.stop();
            console.line("stopped the embedded emulator");
        }
        if let Err(err) = stopped {
            console.line(&format!("the poller had stopped: {err}"));
        }
        Ok(outcome)
    }
}

/// One step of the demo and what the bucket looked like after it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoStep {
    pub step: String,
    pub diff: MirrorDiff,
    /// The bucket's user objects after the step: key → body.
    pub objects: BTreeMap<String, Value>,
    pub millis: u128,
}

/// The users the demo writes: name and plan.
const DEMO_USERS: [(&str, &str); 5] = [
    ("alice", "pro"),
    ("bob", "free"),
    ("Zoë Smith", "team"),
    ("dave/ops", "free"),
    ("eve", "pro"),
];

/// Inserts the demo users, modifies one, deletes one, and after each step waits (up to
/// `timeout`) until the bucket mirrors the table, telling `console` what appeared, changed and
/// disappeared. Fails with the difference when a step does not converge.
pub async fn demo(
    session: &DevSession,
    timeout: Duration,
    console: &mut dyn Console,
) -> Result<Vec<DemoStep>, DevError> {
    let (table, bucket) = session.table_and_bucket()?;
    let dynamodb = session.target.dynamodb();
    let put = |name: &str, plan: &str| {
        dynamodb
            .put_item()
            .table_name(&table)
            .item(mirror_check::KEY_ATTRIBUTE, AttributeValue::S(name.into()))
            .item("plan", AttributeValue::S(plan.into()))
            .item("seats", AttributeValue::N(name.len().to_string()))
            .send()
    };

    let mut steps = Vec::new();
    let mut before = BTreeMap::new();

    for (name, plan) in DEMO_USERS {
        put(name, plan)
            .await
            .map_err(|err| aws_error("insert a demo user", err))?;
    }
    let step = converge(session, &table, &bucket, "inserting 5 users", timeout).await?;
    describe_changes(&before, &step.objects, console);
    before.clone_from(&step.objects);
    steps.push(step);

    put("bob", "pro")
        .await
        .map_err(|err| aws_error("modify a demo user", err))?;
    let step = converge(session, &table, &bucket, "upgrading bob to pro", timeout).await?;
    describe_changes(&before, &step.objects, console);
    before.clone_from(&step.objects);
    steps.push(step);

    dynamodb
        .delete_item()
        .table_name(&table)
        .key(
            mirror_check::KEY_ATTRIBUTE,
            AttributeValue::S("dave/ops".into()),
        )
        .send()
        .await
        .map_err(|err| aws_error("delete a demo user", err))?;
    let step = converge(session, &table, &bucket, "deleting dave/ops", timeout).await?;
    describe_changes(&before, &step.objects, console);
    steps.push(step);
    Ok(steps)
}

async fn converge(
    session: &DevSession,
    table: &str,
    bucket: &str,
    step: &str,
    timeout: Duration,
) -> Result<DemoStep, DevError> {
    let started = std::time::Instant::now();
    let layout = session.key_layout();
    let (diff, in_step) = mirror_check::wait_until_in_step(
        &session.target,
        table,
        bucket,
        &layout,
        timeout,
        Duration::from_millis(200),
    )
    .await?;
    if !in_step {
        return Err(DevError::NotInStep {
            step: step.to_owned(),
            seconds: timeout.as_secs(),
            diff,
        });
    }
    let objects = mirror_check::user_objects(&session.target, bucket, &layout).await?;
    Ok(DemoStep {
        step: step.to_owned(),
        diff,
        objects,
        millis: started.elapsed().as_millis(),
    })
}

/// One line per object that appeared, changed or disappeared between two views of the bucket.
fn describe_changes(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    console: &mut dyn Console,
) {
    for (key, body) in after {
        match before.get(key) {
            None => console.line(&format!("  + {key}  {body}")),
            Some(old) if old != body => console.line(&format!("  ~ {key}  {old} -> {body}")),
            Some(_) => {}
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        console.line(&format!("  - {key}"));
    }
}

/// The table and the bucket side by side, one row per user or object, for the end of a demo.
pub fn side_by_side(
    items: &[std::collections::HashMap<String, AttributeValue>],
    objects: &BTreeMap<String, Value>,
    layout: &KeyLayout,
) -> Vec<(String, String)> {
    let expected = mirror_check::expected_objects(items, layout);
    let mut keys: Vec<&String> = expected.0.keys().chain(objects.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let table = expected
                .0
                .get(key)
                .map_or_else(|| "(no user)".to_owned(), Value::to_string);
            let bucket = objects
                .get(key)
                .map_or_else(|| "(no object)".to_owned(), |body| format!("{key} {body}"));
            (table, bucket)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn side_by_side_pairs_users_with_their_objects() {
        let layout = KeyLayout {
            key_prefix: String::new(),
            object_name: "userdata".into(),
        };
        let items = vec![std::collections::HashMap::from([(
            "name".to_owned(),
            AttributeValue::S("alice".into()),
        )])];
        let objects = BTreeMap::from([
            ("alice/userdata".to_owned(), json!({"name": "alice"})),
            ("zed/userdata".to_owned(), json!({"name": "zed"})),
        ]);
        assert_eq!(
            side_by_side(&items, &objects, &layout),
            [
                (
                    r#"{"name":"alice"}"#.to_owned(),
                    r#"alice/userdata {"name":"alice"}"#.to_owned()
                ),
                (
                    "(no user)".to_owned(),
                    r#"zed/userdata {"name":"zed"}"#.to_owned()
                ),
            ]
        );
    }

    #[test]
    fn changes_are_described_as_appeared_changed_and_gone() {
        let before = BTreeMap::from([
            ("a/userdata".to_owned(), json!({"plan": "free"})),
            ("b/userdata".to_owned(), json!({})),
        ]);
        let after = BTreeMap::from([
            ("a/userdata".to_owned(), json!({"plan": "pro"})),
            ("c/userdata".to_owned(), json!({})),
        ]);
        let mut console = deployer::console::RecordingConsole::agreeing();
        describe_changes(&before, &after, &mut console);
        assert_eq!(
            console.lines,
            [
                r#"  ~ a/userdata  {"plan":"free"} -> {"plan":"pro"}"#,
                "  + c/userdata  {}",
                "  - b/userdata",
            ]
        );
    }
}
