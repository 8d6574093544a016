//! A deployed stack's function, run here: the function's configuration and its event source
//! mappings are read from the target's Lambda API, the built `bootstrap` runs in a
//! [`FunctionHost`] with that configuration, and one [`Poller`] per mapping feeds it, reading
//! while the deployed mapping is enabled (its state is read again as the poller runs).
//!
//! Works against any target. On an emulator the function reaches S3 at the emulator's
//! endpoint; on real AWS it uses the caller's credentials, and reads the stream alongside the
//! deployed mapping (DynamoDB Streams allows two readers per shard), so both apply the records:
//! harmless, as every operation is idempotent, but disable the deployed mapping to be the only
//! consumer.
//!
//! [`LocalPipeline::start_with`] begins otherwise ([`PipelineStart`]): `dev` against a shared
//! target stands in for the deployed mapping it disabled, and starts at LATEST, held until it
//! has reconciled the table (`crate::dev`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::mapping::poller::{MappingState, Poller, PollerError, PollerObserver, PollerOptions};
use crate::mapping::settings::{enabled_in, MappingError, MappingSettings, StartingPosition};
use crate::runtime::function_host::{FunctionHost, FunctionSpec, HostError, OutputSink};
use deployer::target::Target;
use usersync_function::config::vars;

/// Why the local pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("failed to read the configuration of function {function}: {message}; is the stack deployed (`cargo xtask deploy`)?")]
    FunctionConfiguration { function: String, message: String },
    #[error("failed to list the event source mappings of function {function}: {message}")]
    Mappings { function: String, message: String },
    #[error(
        "function {function} has no event source mapping: deploy the stack, which creates one"
    )]
    NoMapping { function: String },
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("failed to resolve credentials for the function: {0}; configure AWS credentials or pass --profile")]
    Credentials(String),
    #[error("failed to start the function")]
    Host(#[from] HostError),
    #[error("failed to start the poller for mapping {uuid}")]
    Poller {
        uuid: String,
        #[source]
        source: PollerError,
    },
    #[error("the poller for mapping {uuid} ended before it had its starting positions")]
    NotPositioned { uuid: String },
}

/// What to run and how to report it.
#[derive(Clone)]
pub struct PipelineOptions {
    /// The function binary to run (the built `bootstrap`).
    pub binary: PathBuf,
    pub poller: PollerOptions,
    /// Where the function's own output goes.
    pub output: OutputSink,
    pub observer: PollerObserver,
    /// Extra environment for the function, over its deployed configuration (`RUST_LOG`, …).
    pub extra_environment: BTreeMap<String, String>,
}

/// How the pipeline begins, where that is not simply as the deployed mappings say
/// ([`PipelineStart::default`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStart {
    /// Where the shards open at the start are read from, over each mapping's own
    /// `StartingPosition`.
    pub starting_position: Option<StartingPosition>,
    /// Runs the mappings whatever the deployed mappings' state, without following it: the
    /// caller stands in for deployed mappings that it disabled, so that it is the stream's only
    /// consumer.
    pub stand_in: bool,
    /// Invokes nothing until [`LocalPipeline::release`]; [`LocalPipeline::start_with`] returns
    /// once every shard open at the start has its iterator.
    pub held: bool,
}

/// The function host and the pollers, running until [`LocalPipeline::stop`].
pub struct LocalPipeline {
    host: Arc<FunctionHost>,
    mappings: Vec<MappingSettings>,
    stop: watch::Sender<bool>,
    /// Set when invocations may go (at once, unless the start was held).
    release: watch::Sender<bool>,
    pollers: Vec<JoinHandle<Result<(), PollerError>>>,
}

impl LocalPipeline {
    /// Starts the pipeline for the deployed function `function_name` on `target`, reading as
    /// the deployed mappings say and following their state.
    pub async fn start(
        target: &Target,
        function_name: &str,
        options: PipelineOptions,
    ) -> Result<Self, PipelineError> {
        Self::start_with(target, function_name, options, PipelineStart::default()).await
    }

    /// Starts the pipeline as `start` says. Held, it returns once every shard open at the start
    /// has its iterator, and invokes nothing until [`release`](Self::release).
    pub async fn start_with(
        target: &Target,
        function_name: &str,
        options: PipelineOptions,
        start: PipelineStart,
    ) -> Result<Self, PipelineError> {
        let lambda = target.lambda();
        let configuration = lambda
            .get_function_configuration()
            .function_name(function_name)
            .send()
            .await
            .map_err(|err| PipelineError::FunctionConfiguration {
                function: function_name.to_owned(),
                message: aws_sdk_lambda::error::DisplayErrorContext(err).to_string(),
            })?;

        let mut mappings = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = lambda
                .list_event_source_mappings()
                .function_name(function_name)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|err| PipelineError::Mappings {
                    function: function_name.to_owned(),
                    message: aws_sdk_lambda::error::DisplayErrorContext(err).to_string(),
                })?;
            for mapping in page.event_source_mappings() {
                mappings.push(MappingSettings::from_configuration(mapping)?);
            }
            match page.next_marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        if mappings.is_empty() {
            return Err(PipelineError::NoMapping {
                function: function_name.to_owned(),
            });
        }

        let mut spec = FunctionSpec::new(&options.binary, function_name);
        if let Some(arn) = configuration.function_arn() {
            spec.function_arn = arn.to_owned();
        }
        if let Some(version) = configuration.version() {
            spec.version = version.to_owned();
        }
        if let Some(handler) = configuration.handler() {
            spec.handler = handler.to_owned();
        }
        if let Some(memory) = configuration.memory_size() {
            spec.memory_mb = memory.unsigned_abs();
        }
        if let Some(timeout) = configuration.timeout() {
            spec.timeout = Duration::from_secs(timeout.unsigned_abs().into());
        }
        spec.region = target.region();
        if let Some(group) = configuration.logging_config().and_then(|l| l.log_group()) {
            spec.log_group = group.to_owned();
        }
        spec.environment = function_environment(target, &configuration).await?;
        spec.environment.extend(options.extra_environment.clone());

        // The mappings as they run here.
        for settings in &mut mappings {
            if let Some(position) = start.starting_position {
                settings.starting_position = position;
            }
            if start.stand_in {
                settings.enabled = true;
            }
        }

        let host = Arc::new(FunctionHost::start_with_output(spec, options.output.clone()).await?);
        let (stop, stopped) = watch::channel(false);
        let (release, released) = watch::channel(!start.held);
        let mut pollers = Vec::new();
        let mut positioned = Vec::new();
        for settings in &mappings {
            let mut poller = Poller::new(
                settings.clone(),
                target.dynamodb_streams(),
                target.sqs(),
                Arc::clone(&host),
                options.poller,
                Arc::clone(&options.observer),
            )
            .await
            .map_err(|source| PipelineError::Poller {
                uuid: settings.uuid.clone(),
                source,
            })?;
            if !start.stand_in {
                // Disabling (or enabling) the deployed mapping pauses (or resumes) this one too.
                poller = poller.follow_state(Arc::new(DeployedMappingState {
                    lambda: target.lambda(),
                    uuid: settings.uuid.clone(),
                }));
            }
            if start.held {
                let (told, told_rx) = oneshot::channel();
                poller = poller.hold(released.clone(), told);
                positioned.push((settings.uuid.clone(), told_rx));
            }
            pollers.push(tokio::spawn(poller.run(stopped.clone())));
        }
        let pipeline = Self {
            host,
            mappings,
            stop,
            release,
            pollers,
        };
        for (uuid, told) in positioned {
            // Unsent: the poller ended; stopping the pipeline returns why.
            if told.await.is_err() {
                return Err(match pipeline.stop().await {
                    Err(source) => PipelineError::Poller { uuid, source },
                    Ok(()) => PipelineError::NotPositioned { uuid },
                });
            }
        }
        Ok(pipeline)
    }

    /// Lets a held pipeline invoke the function; nothing to do for one that was not held.
    pub fn release(&self) {
        self.release.send_replace(true);
    }

    /// The mappings being run, as they run here.
    pub fn mappings(&self) -> &[MappingSettings] {
        &self.mappings
    }

    /// The function host, for its process id and cold-start times.
    pub fn host(&self) -> &FunctionHost {
        &self.host
    }

    /// Whether a poller has stopped on its own (its stream is gone, for one).
    pub fn poller_stopped(&self) -> bool {
        self.pollers.iter().any(JoinHandle::is_finished)
    }

    /// Stops the pollers and the function's process, and waits for both. Returns the first
    /// error a poller stopped with on its own.
    pub async fn stop(self) -> Result<(), PollerError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for poller in self.pollers {
            if let Ok(Err(err)) = poller.await {
                first_error.get_or_insert(err);
            }
        }
        self.host.shutdown().await;
        first_error.map_or(Ok(()), Err)
    }
}

/// The deployed mapping's state, read from the target's Lambda API.
struct DeployedMappingState {
    lambda: aws_sdk_lambda::Client,
    uuid: String,
}

impl MappingState for DeployedMappingState {
    fn enabled(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + '_>>
    {
        Box::pin(async move {
            match self
                .lambda
                .get_event_source_mapping()
                .uuid(&self.uuid)
                .send()
                .await
            {
                Ok(mapping) => Ok(enabled_in(mapping.state())),
                // A deleted mapping invokes nothing (Lambda answers ResourceNotFoundException:
                // https://docs.aws.amazon.com/lambda/latest/dg/API_GetEventSourceMapping.html#API_GetEventSourceMapping_Errors).
                Err(err)
                    if aws_sdk_lambda::error::ProvideErrorMetadata::code(&err)
                        == Some("ResourceNotFoundException") =>
                {
                    Ok(false)
                }
                Err(err) => Err(aws_sdk_lambda::error::DisplayErrorContext(err).to_string()),
            }
        })
    }
}

/// The function's deployed `Environment.Variables`, plus what the process needs to reach the
/// target as Lambda's role would give it: credentials, and the endpoint of an emulator.
async fn function_environment(
    target: &Target,
    configuration: &aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput,
) -> Result<BTreeMap<String, String>, PipelineError> {
    let mut environment: BTreeMap<String, String> = configuration
        .environment()
        .and_then(|e| e.variables())
        .map(|variables| {
            variables
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    // Lambda tells the runtime the configured log format and level through these.
    if let Some(logging) = configuration.logging_config() {
        if let Some(format) = logging.log_format() {
            environment.insert("AWS_LAMBDA_LOG_FORMAT".into(), format.as_str().to_owned());
        }
        if let Some(level) = logging.application_log_level() {
            environment.insert("AWS_LAMBDA_LOG_LEVEL".into(), level.as_str().to_owned());
        }
    }
    if let Some(provider) = target.sdk.credentials_provider() {
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|err| PipelineError::Credentials(err.to_string()))?;
        environment.insert(
            "AWS_ACCESS_KEY_ID".into(),
            credentials.access_key_id().to_owned(),
        );
        environment.insert(
            "AWS_SECRET_ACCESS_KEY".into(),
            credentials.secret_access_key().to_owned(),
        );
        if let Some(token) = credentials.session_token() {
            environment.insert("AWS_SESSION_TOKEN".into(), token.to_owned());
        }
    }
    if let Some(endpoint) = target.endpoint_url() {
        environment.insert("AWS_ENDPOINT_URL".into(), endpoint);
        // Emulators serve buckets by path, not by virtual host.
        environment
            .entry(vars::S3_FORCE_PATH_STYLE.into())
            .or_insert_with(|| "true".into());
    }
    Ok(environment)
}
