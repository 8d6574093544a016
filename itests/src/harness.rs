//! The running backend of an end-to-end run: started once, shared by every scenario, each of
//! which deploys its own stack on it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use deployer::artifact::{self, Artifact, BuildOptions};
use deployer::console::RecordingConsole;
use deployer::settings::StackSettings;
use deployer::target::Target;
use deployer::template::output;
use deployer::workflow;
use usersync_local::emulator::Emulator;
use usersync_local::mapping::pipeline::{LocalPipeline, PipelineOptions};
use usersync_local::mapping::poller::{PollerObserver, PollerOptions};
use usersync_local::runtime::function_host::OutputSink;

use crate::backend::endpoint::EndpointBackend;
use crate::backend::localstack::{self, LocalStackBackend, LocalStackSpec};
use crate::backend::{BackendKind, Selection};
use crate::emulator::REGION;

/// Where the scenarios' stacks are deployed.
pub struct Backend {
    kind: BackendKind,
    endpoint_url: String,
    /// The function, built once for every stack of the run (concurrent builds would race on
    /// the archive).
    artifact: Artifact,
    running: Running,
}

enum Running {
    /// The embedded emulator; each stack gets its own function host and poller.
    Local(Emulator),
    /// The backend runs the function itself.
    LocalStack(Box<LocalStackBackend>),
    Endpoint(EndpointBackend),
}

impl Backend {
    /// Starts the selected backend and builds the function for it.
    pub async fn start(selection: &Selection) -> Result<Self> {
        let kind = selection.kind;
        let running = match kind {
            BackendKind::Local => Running::Local(crate::emulator::start().await),
            BackendKind::LocalStack => {
                let spec = LocalStackSpec::from_env()?;
                Running::LocalStack(Box::new(localstack::start(&spec).await?))
            }
            BackendKind::Endpoint => Running::Endpoint(EndpointBackend::from_env()?),
        };
        let endpoint_url = match &running {
            Running::Local(emulator) => emulator.endpoint_url(),
            Running::LocalStack(localstack) => localstack.endpoint_url().to_owned(),
            Running::Endpoint(endpoint) => endpoint.endpoint_url().to_owned(),
        };
        let options = BuildOptions {
            architecture: None,
            purpose: kind.purpose(),
        };
        let artifact = tokio::task::spawn_blocking(move || {
            artifact::build(&options, &mut |line| eprintln!("[build] {line}"))
        })
        .await
        .context("the build task failed")?
        .context("failed to build the function")?;
        Ok(Self {
            kind,
            endpoint_url,
            artifact,
            running,
        })
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// Deploys a stack with `settings`; on the local backend also starts its function host and
    /// poller.
    pub async fn deploy(&self, settings: StackSettings) -> Result<crate::test_stack::TestStack> {
        let target = Target::for_endpoint(&self.endpoint_url, REGION);
        let mut console = RecordingConsole::agreeing();
        let report = workflow::deploy_built(&target, &settings, &self.artifact, &mut console)
            .await
            .with_context(|| format!("failed to deploy stack {}", settings.stack_name))?;
        let local = match &self.running {
            Running::Local(_) => {
                let function = report
                    .outputs
                    .get(output::FUNCTION_NAME)
                    .context("the stack has no FunctionName output")?
                    .clone();
                let (log, poller_log) = function_log(&settings.stack_name, None)?;
                let options = PipelineOptions {
                    binary: self.artifact.binary_path.clone(),
                    poller: PollerOptions {
                        poll_interval: Duration::from_millis(100),
                        discovery_interval: Duration::from_secs(1),
                        ..PollerOptions::default()
                    },
                    output: log,
                    observer: poller_log,
                    extra_environment: BTreeMap::new(),
                };
                let pipeline = LocalPipeline::start(&target, &function, options.clone())
                    .await
                    .with_context(|| {
                        format!(
                            "failed to start the local pipeline of {}",
                            settings.stack_name
                        )
                    })?;
                Some((pipeline, function, options))
            }
            Running::LocalStack(_) | Running::Endpoint(_) => None,
        };
        Ok(match local {
            Some((pipeline, function, options)) => {
                crate::test_stack::TestStack::new(target, settings, report.outputs, Some(pipeline))
                    .with_relaunch(&function, options)
            }
            None => crate::test_stack::TestStack::new(target, settings, report.outputs, None),
        })
    }

    /// Stops what the backend started.
    pub async fn stop(self) -> Result<()> {
        match self.running {
            Running::Local(emulator) => emulator.stop(),
            Running::LocalStack(localstack) => (*localstack).stop().await?,
            Running::Endpoint(_) => {}
        }
        Ok(())
    }
}

/// The function's output and the poller's events for one stack, written to
/// `target/usersync/itests/<stack>.function.log`: what to read when a scenario fails. Each
/// event is also handed to `also`, if given.
pub(crate) fn function_log(
    stack_name: &str,
    also: Option<PollerObserver>,
) -> Result<(OutputSink, PollerObserver)> {
    let path = deployer::project::state_dir()
        .join("itests")
        .join(format!("{stack_name}.function.log"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let file =
        File::create(&path).with_context(|| format!("failed to create {}", path.display()))?;
    let file = Arc::new(Mutex::new(file));
    let output_file = Arc::clone(&file);
    let output = OutputSink::new(move |line| {
        if let Ok(mut file) = output_file.lock() {
            let _ = writeln!(file, "{line}");
        }
    });
    let observer: PollerObserver = Arc::new(move |event| {
        if let Ok(mut file) = file.lock() {
            let _ = writeln!(file, "[poller] {event:?}");
        }
        if let Some(also) = &also {
            also(event);
        }
    });
    Ok((output, observer))
}
