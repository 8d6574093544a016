//! `dev`: the whole pipeline on this machine. Builds the function, provides a target (by
//! default a private embedded emulator, stopped at the end), deploys the stack when it is
//! missing or stale, and runs the real `bootstrap` behind a local poller until stopped.
//!
//! On a shared target (an endpoint, or AWS: [`DevTarget::Connected`]) the stack, its table and
//! its bucket outlive the session, and the deployed event source mapping may read the stream
//! too. There dev:
//!
//! - refuses to run while the stack's mapping is enabled, unless it may take the mapping over
//!   ([`TakeOver`]): then it disables the mapping while it runs, and the caller enables it again
//!   however the session ends. Its poller stands in for the mapping: it runs although the
//!   deployed mapping is disabled.
//! - never applies old history to a bucket that already holds objects. From TRIM_HORIZON a
//!   restarted dev re-applied up to a day of records (the stream's retention): an old INSERT
//!   brought a deleted user back, at least until the DELETE after it was read again. Instead
//!   the poller starts at LATEST, held: every shard open at the start gets its iterator first;
//!   then the whole table is reconciled, with repair; then the poller applies the stream from
//!   those LATEST positions. This order loses nothing. A write made before the iterators were
//!   taken is in the table, which the repair reads consistently, and only after that point: the
//!   object ends as the table says (the repair never undoes a write made while it runs). A write
//!   made after is in the stream past the LATEST point, and the poller applies it after the
//!   repair, in stream order, so each user's object ends at the user's last write. A user
//!   deleted before the start has no item, so the repair deletes its object, and no record from
//!   before the start is ever read.
//!
//! On the private emulator the stack is dev's own and new: its table and bucket start empty and
//! its stream holds only what was written since they were created, so the poller starts where
//! the deployed mapping says (TRIM_HORIZON), which keeps what is written while dev starts, and
//! there is nothing to reconcile.
//!
//! [`demo`] drives a short scripted session through it: users inserted, one modified, one
//! deleted, the bucket compared with the table after each step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_lambda::error::ProvideErrorMetadata;
use serde_json::Value;

use crate::emulator::{ensure_binary, Emulator, EmulatorError};
use crate::mapping::pipeline::{LocalPipeline, PipelineError, PipelineOptions, PipelineStart};
use crate::mapping::poller::{PollerObserver, PollerOptions};
use crate::mapping::settings::{enabled_in, StartingPosition};
use crate::runtime::function_host::OutputSink;
use deployer::artifact::{self, BuildError, BuildOptions, Purpose};
use deployer::console::Console;
use deployer::mirror_check::{self, KeyLayout, MirrorDiff};
use deployer::reconcile::deployed::function_config;
use deployer::reconcile::{
    reconcile, DeployedMirrorError, ReconcileError, ReconcileOptions, ReconcileProgress,
    ReconcileReport,
};
use deployer::settings::StackSettings;
use deployer::stack::{self, aws_error, Quieted, StackError, TeardownOutcome};
use deployer::target::{Target, TargetError, DEFAULT_LOCAL_REGION};
use deployer::template::output;
use deployer::workflow::{self, DeployError, DeployReport, DeployResult};
use usersync_function::Config;

/// How long enabling a taken-over mapping again is waited for.
const ENABLE_TIMEOUT: Duration = Duration::from_secs(120);

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
    #[error("failed to read the deployed function's settings")]
    FunctionSettings(#[source] DeployedMirrorError),
    #[error("failed to start the local pipeline")]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(
        "event source mapping {uuid} of stack {stack} is {state}: it reads the stream that dev \
         would read; run dev with --take-over to disable it while dev runs (dev enables it \
         again when it stops), or remove the stack with `cargo xtask teardown`"
    )]
    MappingEnabled {
        stack: String,
        uuid: String,
        state: String,
    },
    #[error(
        "event source mapping {uuid} was not disabled within the wait: dev does not run beside it"
    )]
    StillDisabling { uuid: String },
    #[error("failed to enable the event source mapping that dev took over again; enable it with `{command}`")]
    Restore {
        /// The command names the mapping.
        command: String,
        #[source]
        source: StackError,
    },
    // Boxed: a reconcile's error is large, and every result of the session carries this type.
    #[error("the start-up reconcile failed")]
    Reconcile(#[source] Box<ReconcileError>),
    #[error("the start-up reconcile could not repair {failed} user(s), such as {examples}: their objects may hold an older state; start dev again to repair them")]
    StartupRepair { failed: u64, examples: String },
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

/// Whether dev may take over the deployed stack's event source mapping on a shared target
/// (`--take-over`), and the mapping it took over, to enable again.
///
/// The caller keeps it outside the session and calls [`TakeOver::restore`] however the session
/// ends: after [`DevSession::stop`], after an error (from [`DevSession::start`] too), and after
/// a start that was interrupted (its future dropped).
#[derive(Default)]
pub struct TakeOver {
    allowed: bool,
    /// The profile the target was reached with, for the command that enables the mapping by
    /// hand.
    profile: Option<String>,
    taken: Option<TakenMapping>,
}

/// A mapping dev disabled.
struct TakenMapping {
    target: Target,
    uuid: String,
}

impl TakeOver {
    /// `allowed`: whether dev may disable the mapping; `profile`: `--profile`, if given.
    pub fn new(allowed: bool, profile: Option<String>) -> Self {
        Self {
            allowed,
            profile,
            taken: None,
        }
    }

    /// The mapping dev disabled and has not enabled again.
    pub fn taken(&self) -> Option<&str> {
        self.taken.as_ref().map(|taken| taken.uuid.as_str())
    }

    /// Enables the mapping dev disabled, if any, and waits until it is enabled, telling
    /// `console` what it restores. The error names the command that enables it by hand.
    pub async fn restore(&mut self, console: &mut dyn Console) -> Result<(), DevError> {
        let Some(taken) = self.taken.take() else {
            return Ok(());
        };
        let uuid = &taken.uuid;
        console.line(&format!(
            "enabling event source mapping {uuid} again (dev took it over)"
        ));
        match enable_mapping(&taken.target, uuid, console).await {
            Ok(EnableOutcome::Enabled) => {
                console.line(&format!("event source mapping {uuid} is enabled again"));
                Ok(())
            }
            Ok(EnableOutcome::Gone) => {
                console.line(&format!(
                    "event source mapping {uuid} no longer exists: nothing to enable"
                ));
                Ok(())
            }
            Ok(EnableOutcome::Settling(state)) => {
                console.line(&format!(
                    "event source mapping {uuid} is {state}: Lambda finishes enabling it"
                ));
                Ok(())
            }
            Err(source) => Err(DevError::Restore {
                command: enable_command(&taken.target, uuid, self.profile.as_deref()),
                source,
            }),
        }
    }
}

/// A running dev session: the target, the deployed stack's outputs and the local pipeline.
pub struct DevSession {
    pub target: Target,
    pub settings: StackSettings,
    pub deploy: DeployReport,
    /// The deployed function's settings (its key attribute, key prefix, object name).
    pub function_config: Config,
    /// What the reconcile at the start found and repaired; on a shared target only.
    pub startup_reconcile: Option<ReconcileReport>,
    pipeline: LocalPipeline,
    // Dropped last: the pipeline talks to it until it stops.
    emulator: Option<Emulator>,
}

impl DevSession {
    /// Provides the target, deploys, builds the host binary and starts the pipeline. On a shared
    /// target it first takes the deployed mapping over (or refuses, as `take_over` says; the
    /// caller enables a taken mapping again with [`TakeOver::restore`], whatever this returns),
    /// then reconciles the table before applying the stream (see the module's doc).
    pub async fn start(
        where_to: DevTarget,
        settings: &StackSettings,
        take_over: &mut TakeOver,
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
        let shared = emulator.is_none();
        if shared && !take_over.allowed {
            // Refused before the deploy changes anything, when the stack exists already.
            refuse_beside_a_live_mapping(&target, &settings.stack_name).await?;
        }

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
        let function_config = function_config(&target, &function)
            .await
            .map_err(DevError::FunctionSettings)?;
        if shared {
            // After the deploy, which may have created the mapping or changed it.
            let uuid = deploy
                .outputs
                .get(output::EVENT_SOURCE_MAPPING_ID)
                .ok_or(DevError::MissingOutput(output::EVENT_SOURCE_MAPPING_ID))?;
            take_over_mapping(&target, &deploy.stack_name, uuid, take_over, console).await?;
        }

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
        let start = if shared {
            PipelineStart {
                starting_position: Some(StartingPosition::Latest),
                stand_in: true,
                held: true,
            }
        } else {
            PipelineStart::default()
        };
        let pipeline = LocalPipeline::start_with(
            &target,
            &function,
            PipelineOptions {
                binary: host_build.binary_path.clone(),
                poller: PollerOptions::default(),
                output,
                observer,
                extra_environment: BTreeMap::new(),
            },
            start,
        )
        .await?;
        let startup_reconcile = if shared {
            // The pipeline holds every shard's LATEST position and invokes nothing yet.
            match reconcile_at_start(&target, &deploy.stack_name, console).await {
                Ok(report) => {
                    pipeline.release();
                    Some(report)
                }
                Err(err) => {
                    if let Err(stopped) = pipeline.stop().await {
                        console.line(&format!("the poller had stopped: {stopped}"));
                    }
                    return Err(err);
                }
            }
        } else {
            None
        };
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
            function_config,
            startup_reconcile,
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

    /// The deployed function's key attribute and object keys.
    pub fn key_layout(&self) -> KeyLayout {
        KeyLayout::from(&self.function_config)
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

/// The state of event source mapping `uuid` (`GetEventSourceMapping`); `None` when it does not
/// exist.
async fn mapping_state(target: &Target, uuid: &str) -> Result<Option<String>, StackError> {
    match target
        .lambda()
        .get_event_source_mapping()
        .uuid(uuid)
        .send()
        .await
    {
        Ok(mapping) => Ok(Some(mapping.state().unwrap_or_default().to_owned())),
        Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
        Err(err) => Err(aws_error(
            format!("read the state of event source mapping {uuid}"),
            err,
        )),
    }
}

/// Fails with [`DevError::MappingEnabled`] when stack `stack` exists and its mapping is enabled.
async fn refuse_beside_a_live_mapping(target: &Target, stack: &str) -> Result<(), DevError> {
    let Some(existing) = stack::describe_stack(target, stack).await? else {
        return Ok(());
    };
    // A stack without the output yet gets it from the deploy, and is checked after it.
    let Some(uuid) = stack::outputs_of(&existing).remove(output::EVENT_SOURCE_MAPPING_ID) else {
        return Ok(());
    };
    match mapping_state(target, &uuid).await? {
        Some(state) if enabled_in(Some(&state)) => Err(DevError::MappingEnabled {
            stack: stack.to_owned(),
            uuid,
            state,
        }),
        _ => Ok(()),
    }
}

/// Refuses to run beside the deployed mapping `uuid` while it is enabled, or, when `take_over`
/// allows, disables it and records it there to be enabled again.
async fn take_over_mapping(
    target: &Target,
    stack: &str,
    uuid: &str,
    take_over: &mut TakeOver,
    console: &mut dyn Console,
) -> Result<(), DevError> {
    let Some(state) = mapping_state(target, uuid).await? else {
        return Ok(());
    };
    if !enabled_in(Some(&state)) {
        console.line(&format!(
            "event source mapping {uuid} is {state}: dev reads the stream in its place, and \
             leaves it {state}"
        ));
        return Ok(());
    }
    if !take_over.allowed {
        return Err(DevError::MappingEnabled {
            stack: stack.to_owned(),
            uuid: uuid.to_owned(),
            state,
        });
    }
    console.line(&format!(
        "taking over event source mapping {uuid} (--take-over): disabling it while dev runs; \
         it is enabled again when dev stops"
    ));
    // Recorded before it is asked: a disable that fails or is interrupted is undone too.
    take_over.taken = Some(TakenMapping {
        target: target.clone(),
        uuid: uuid.to_owned(),
    });
    match stack::disable_mapping(target, uuid, &mut WaitingOnly(console)).await? {
        Quieted::Disabled => {
            console.line(&format!("event source mapping {uuid} is disabled"));
            Ok(())
        }
        // Disabled (or deleted) by someone else meanwhile: not dev's to enable again.
        Quieted::AlreadyQuiet | Quieted::NotServed => {
            take_over.taken = None;
            Ok(())
        }
        Quieted::StillDisabling => Err(DevError::StillDisabling {
            uuid: uuid.to_owned(),
        }),
    }
}

/// Passes on what a step waits for and drops its lines: `stack::disable_mapping` words them for
/// a teardown, and dev says what it does itself.
struct WaitingOnly<'a>(&'a mut dyn Console);

impl Console for WaitingOnly<'_> {
    fn line(&mut self, _message: &str) {}

    fn waiting(&mut self, message: &str) {
        self.0.waiting(message);
    }

    fn confirm(&mut self, question: &str) -> bool {
        self.0.confirm(question)
    }
}

/// What enabling a mapping came to.
#[derive(Debug, PartialEq, Eq)]
enum EnableOutcome {
    Enabled,
    /// The mapping no longer exists (the stack was torn down meanwhile).
    Gone,
    /// Asked, and on its way (`Enabling`, `Updating`) when the wait ended.
    Settling(String),
}

/// Enables event source mapping `uuid` (`UpdateEventSourceMapping Enabled=true`) and waits until
/// Lambda reports it `Enabled`, for at most [`ENABLE_TIMEOUT`].
///
/// Lambda takes no change while a mapping is `Creating`, `Updating`, `Enabling` or `Disabling`
/// (`ResourceInUseException`,
/// https://docs.aws.amazon.com/lambda/latest/dg/API_UpdateEventSourceMapping.html#API_UpdateEventSourceMapping_Errors),
/// so it is asked again once the mapping has settled.
async fn enable_mapping(
    target: &Target,
    uuid: &str,
    console: &mut dyn Console,
) -> Result<EnableOutcome, StackError> {
    let interval = if target.is_aws() {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(100)
    };
    let action = || format!("enable event source mapping {uuid}");
    let started = Instant::now();
    loop {
        let Some(state) = mapping_state(target, uuid).await? else {
            return Ok(EnableOutcome::Gone);
        };
        match state.as_str() {
            "Enabled" => return Ok(EnableOutcome::Enabled),
            "Disabled" => {
                let asked = target
                    .lambda()
                    .update_event_source_mapping()
                    .uuid(uuid)
                    .enabled(true)
                    .send()
                    .await;
                match asked {
                    Ok(_) => {}
                    Err(err) if err.code() == Some("ResourceNotFoundException") => {
                        return Ok(EnableOutcome::Gone)
                    }
                    Err(err) if err.code() == Some("ResourceInUseException") => {}
                    Err(err) => return Err(aws_error(action(), err)),
                }
            }
            _ => {}
        }
        if started.elapsed() > ENABLE_TIMEOUT {
            return if enabled_in(Some(&state)) {
                Ok(EnableOutcome::Settling(state))
            } else {
                Err(StackError::Aws {
                    action: action(),
                    message: format!("it is still {state} after {}s", ENABLE_TIMEOUT.as_secs()),
                })
            };
        }
        console.waiting(&format!("event source mapping {uuid} is {state}"));
        tokio::time::sleep(interval).await;
    }
}

/// Reconciles the whole table into the bucket, with repair, while the held pipeline keeps the
/// stream's LATEST positions (see the module's doc), and says what it found and repaired.
async fn reconcile_at_start(
    target: &Target,
    stack: &str,
    console: &mut dyn Console,
) -> Result<ReconcileReport, DevError> {
    let options = ReconcileOptions {
        repair: true,
        // Never an earlier run's checkpoint: what it read predates this start's positions.
        restart: true,
        // Dev's own, so that it never disturbs an interrupted `reconcile`'s checkpoint.
        state_dir: Some(
            deployer::project::state_dir()
                .join("dev")
                .join("reconcile")
                .join(stack),
        ),
        ..ReconcileOptions::default()
    };
    console.line(
        "stream positions taken (LATEST); reconciling the bucket with the table before the \
         stream is applied from them",
    );
    let report = {
        let mut progress = |progress: &ReconcileProgress| {
            if let Some(note) = &progress.note {
                console.line(note);
            }
            console.waiting(&format!(
                "reconciling: {} items scanned, {} objects listed, {} users judged, {} repaired",
                progress.items_scanned, progress.objects_listed, progress.judged, progress.repaired
            ));
        };
        reconcile(target, stack, &options, &mut progress)
            .await
            .map_err(|err| DevError::Reconcile(Box::new(err)))?
    };
    console.line(&format!("start-up reconcile: {}", report.summary()));
    if report.failed > 0 {
        return Err(DevError::StartupRepair {
            failed: report.failed,
            examples: report
                .examples
                .failed
                .iter()
                .map(|user| format!("{} ({})", user.key, user.error))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(report)
}

/// The AWS CLI command that enables mapping `uuid` on `target`.
fn enable_command(target: &Target, uuid: &str, profile: Option<&str>) -> String {
    let mut command = format!(
        "aws lambda update-event-source-mapping --uuid {uuid} --enabled --region {}",
        target.region()
    );
    if let Some(endpoint) = target.endpoint_url() {
        let _ = write!(command, " --endpoint-url {endpoint}");
    }
    if let Some(profile) = profile {
        let _ = write!(command, " --profile {profile}");
    }
    command
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
    let key_attribute = &session.function_config.key_attribute;
    let put = |name: &str, plan: &str| {
        dynamodb
            .put_item()
            .table_name(&table)
            .item(key_attribute, AttributeValue::S(name.into()))
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
        .key(key_attribute, AttributeValue::S("dave/ops".into()))
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
            key_attribute: "name".into(),
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
    fn the_command_that_enables_a_mapping_names_where_it_is() {
        let target = Target::for_endpoint("http://127.0.0.1:4566", "eu-west-1");
        assert_eq!(
            enable_command(&target, "4b1c", Some("dev")),
            "aws lambda update-event-source-mapping --uuid 4b1c --enabled --region eu-west-1 \
             --endpoint-url http://127.0.0.1:4566 --profile dev"
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
