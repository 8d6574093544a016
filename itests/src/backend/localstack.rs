//! The LocalStack backend: a LocalStack container started for the run, in which the deployed
//! stack's own event source mapping invokes the function in Lambda's `provided.al2023` image.
//!
//! The container is described by a plain [`LocalStackSpec`], built from the environment by a
//! pure function, so that its image, environment, services, mounts, wait condition and log
//! file are testable without Docker; [`start`] turns it into a testcontainers request and runs
//! it.
//!
//! What this module expects of LocalStack is read from its source at the tag `v4.14.0`
//! (github.com/localstack/localstack); each expectation names the file, relative to
//! `localstack-core/localstack/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deployer::settings::{ArtifactLocation, StackSettings};
use serde_json::Value;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use super::docker::{self, DockerEnvironment, DockerHost, DockerProbe};
use super::BackendError;

/// The variable that overrides the image, as `name:tag`.
pub const IMAGE_VARIABLE: &str = "ITESTS_LOCALSTACK_IMAGE";
/// LocalStack's community image.
pub const DEFAULT_IMAGE: &str = "localstack/localstack";
/// Pinned to a release, not the moving `4.14` tag, so that every run uses the LocalStack whose
/// source this module cites. 4.14 is also the last line that runs these services without
/// `LOCALSTACK_AUTH_TOKEN` (an account's token); 4.15 and later refuse to start without one.
pub const DEFAULT_TAG: &str = "4.14.0";
/// LocalStack's licence token; passed into the container when set, for images that need it.
pub const AUTH_TOKEN_VARIABLE: &str = "LOCALSTACK_AUTH_TOKEN";
/// LocalStack's single gateway port for every service.
pub const GATEWAY_PORT: u16 = 4566;
/// The line LocalStack prints on standard output once it serves requests.
pub const READY_LINE: &str = "Ready.";
/// How long LocalStack may take from container start to [`READY_LINE`] (pulling the image
/// comes before and is not counted).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// Where LocalStack looks for the Docker socket inside its container.
pub const CONTAINER_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Seconds LocalStack waits for a new Lambda container to report ready (default 20): the
/// first invocation also creates the container from Lambda's image, which is slow on a busy
/// CI runner.
pub const LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT_SECONDS: u32 = 180;
/// How long a graceful [`LocalStackBackend::stop`] lets LocalStack remove its Lambda
/// containers before it is killed.
pub const STOP_TIMEOUT_SECONDS: i32 = 30;
/// The end of the log file's name: `<run>.localstack.log`.
pub const LOG_SUFFIX: &str = ".localstack.log";

/// `0` makes LocalStack's CloudFormation fail a stack that uses a resource type it has no
/// provider for, instead of reporting the resource created while creating nothing (its
/// default). `config.py` reads it with `is_env_not_false` (so unset means "ignore", and only
/// `0`/`false`/`False` turn it off). With it off, `services/cloudformation/v2/provider.py`
/// (`_setup_change_set_model`, behind CreateChangeSet, CreateStack and UpdateStack) runs
/// `services/cloudformation/engine/v2/change_set_resource_support_checker.py` on the change
/// set, which fails it, and the stack, naming each unsupported type; and
/// `services/cloudformation/engine/v2/change_set_model_executor.py` fails such a resource
/// instead of faking it. The checker asks LocalStack's catalog, which is downloaded from
/// api.localstack.cloud (`utils/catalog/catalog_loader.py`); without network access LocalStack
/// falls back to a catalog that knows no type (`utils/catalog/plugins.py`,
/// `utils/catalog/catalog.py`), and every stack fails, naming all its types. The container
/// needs network access anyway (see [`INTERNAL_DEPENDENCIES`], kinesis).
pub const CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES: (&str, &str) =
    ("CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES", "0");

/// The one type of the stack that LocalStack's community image has no CloudFormation provider
/// for: the dashboard. v4.14.0 has providers for the alarms and the notification resources
/// (`services/cloudwatch/resource_providers/aws_cloudwatch_alarm.py`, whose update is not
/// implemented, so a stack whose alarms change fails to update there;
/// `services/sns/resource_providers/aws_sns_topic.py`, which passes `KmsMasterKeyId` on;
/// `services/sns/resource_providers/aws_sns_subscription.py`;
/// `services/kms/resource_providers/aws_kms_key.py`) but none for `AWS::CloudWatch::Dashboard`,
/// which `services/cloudformation/resources.py` only lists as existing on AWS. It is exempted
/// alone from [`CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES`]:
/// `config.py` reads these variables as comma-separated lists, and
/// `services/cloudformation/engine/v2/unsupported_resource.py`
/// (`should_ignore_unsupported_resource_type`), which both the support checker and the change
/// set executor ask, lets a listed type through, reported created but not made. A stack's
/// deletion runs as an UPDATE change set (`services/cloudformation/v2/entities.py`, the
/// `ChangeSetType` default), so the type is listed for both. Every other type stays strict, and
/// nothing the end-to-end scenarios check depends on the dashboard.
pub const IGNORED_UNSUPPORTED_TYPES: [&str; 1] = ["AWS::CloudWatch::Dashboard"];

/// The variables that list [`IGNORED_UNSUPPORTED_TYPES`], for stacks being created and updated.
pub const IGNORED_UNSUPPORTED_TYPE_VARIABLES: [&str; 2] = [
    "CFN_IGNORE_UNSUPPORTED_TYPE_CREATE",
    "CFN_IGNORE_UNSUPPORTED_TYPE_UPDATE",
];

/// That one LocalStack service needs another: it calls it through LocalStack's internal
/// client, and a service missing from `SERVICES` answers "Service '…' is not enabled. Please
/// check your 'SERVICES' configuration variable." (`aws/handlers/service_plugin.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub service: &'static str,
    pub needs: &'static str,
    /// Where LocalStack's source shows it, and what for.
    pub why: &'static str,
}

/// LocalStack's calls between the services the stack uses. LocalStack itself adds only its
/// mandatory `API_DEPENDENCIES` (`utils/bootstrap.py`, `resolve_apis`); the optional ones
/// (`API_DEPENDENCIES_OPTIONAL`) and dependencies it does not list, such as DynamoDB's KMS key,
/// must be named in `SERVICES`.
pub const INTERNAL_DEPENDENCIES: &[Dependency] = &[
    Dependency {
        service: "dynamodb",
        needs: "kms",
        why: "a table with SSESpecification.SSEEnabled gets a KMS key LocalStack creates through its internal client (services/dynamodb/provider.py, SSEUtils.get_sse_kms_managed_key); not in API_DEPENDENCIES",
    },
    Dependency {
        service: "dynamodb",
        needs: "dynamodbstreams",
        why: "the table's stream (utils/bootstrap.py, API_DEPENDENCIES)",
    },
    Dependency {
        service: "dynamodbstreams",
        needs: "kinesis",
        why: "each stream is a Kinesis stream in kinesis-mock (services/dynamodbstreams/dynamodbstreams_api.py, add_dynamodb_stream; API_DEPENDENCIES), which LocalStack downloads from npm the first time it is needed (services/kinesis/kinesis_mock_server.py, services/kinesis/packages.py)",
    },
    Dependency {
        service: "cloudformation",
        needs: "s3",
        why: "utils/bootstrap.py, API_DEPENDENCIES",
    },
    Dependency {
        service: "cloudformation",
        needs: "sts",
        why: "utils/bootstrap.py, API_DEPENDENCIES",
    },
    Dependency {
        service: "lambda",
        needs: "s3",
        why: "the function's code archive (utils/bootstrap.py, API_DEPENDENCIES)",
    },
    Dependency {
        service: "lambda",
        needs: "sts",
        why: "the function's credentials (utils/bootstrap.py, API_DEPENDENCIES)",
    },
    Dependency {
        service: "lambda",
        needs: "logs",
        why: "the function's output goes to CloudWatch Logs (services/lambda_/invocation/logs.py; API_DEPENDENCIES_OPTIONAL)",
    },
    Dependency {
        service: "lambda",
        needs: "dynamodbstreams",
        why: "the event source mapping reads the stream (services/lambda_/event_source_mapping/pollers/dynamodb_poller.py; API_DEPENDENCIES_OPTIONAL)",
    },
    Dependency {
        service: "lambda",
        needs: "sqs",
        why: "the mapping's on-failure destination (services/lambda_/event_source_mapping/pollers/stream_poller.py sends to it; API_DEPENDENCIES_OPTIONAL)",
    },
    Dependency {
        service: "lambda",
        needs: "cloudwatch",
        why: "invocation metrics (services/lambda_/invocation/metrics.py; API_DEPENDENCIES_OPTIONAL)",
    },
    Dependency {
        service: "iam",
        needs: "sts",
        why: "utils/bootstrap.py, API_DEPENDENCIES_OPTIONAL: IAM and STS are tightly coupled",
    },
    Dependency {
        service: "sts",
        needs: "iam",
        why: "utils/bootstrap.py, API_DEPENDENCIES_OPTIONAL: IAM and STS are tightly coupled",
    },
];

/// What the deployer and the suite call themselves, with why.
pub const CALLED_DIRECTLY: &[(&str, &str)] = &[
    ("cloudformation", "the deployer's stack lifecycle"),
    (
        "s3",
        "the deployer uploads the function's archive; the scenarios read the bucket, change it \
         behind the function's back (e2e_10, e2e_11, e2e_12), and create and delete the bucket \
         a stack adopts (e2e_09)",
    ),
    (
        "sts",
        "the deployer names the assets bucket after the account (sts:GetCallerIdentity)",
    ),
    (
        "dynamodb",
        "the scenarios write and read users, and create, fill, stream and delete the table a \
         stack adopts (e2e_09: CreateTable, BatchWriteItem, UpdateTable, DeleteTable)",
    ),
    (
        "dynamodbstreams",
        "the deployer's stream reader and replay (deployer/src/streams, deployer/src/replay)",
    ),
    (
        "lambda",
        "the deployer's status reads the function and its mapping; e2e_12 changes the \
         function's environment (UpdateFunctionConfiguration)",
    ),
    (
        "sqs",
        "the deployer's status and replay read the failure queue, and so does e2e_12",
    ),
];

/// Services the stack is about to use, started ahead of the template.
pub const PLANNED: &[(&str, &str)] = &[
    ("cloudwatch", "the stack's alarms"),
    ("sns", "the alarms' notifications"),
];

/// LocalStack's name for the service of a CloudFormation resource type, derived as its
/// CloudFormation engine derives it (`_get_service_name` in
/// `services/cloudformation/engine/v2/change_set_resource_support_checker.py`): the `X` of
/// `AWS::X::Y` in lower case, except for a few renamed services. `None` for a type without
/// `::`.
pub fn service_of_resource_type(resource_type: &str) -> Option<String> {
    let parts: Vec<&str> = resource_type.split("::").collect();
    let service = *parts.get(1)?;
    let contains = |part: &str| resource_type.contains(part);
    let renamed = if contains("Cognito::IdentityPool") {
        "cognito-identity"
    } else if service == "Cognito" {
        "cognito-idp"
    } else if service == "Elasticsearch" {
        "es"
    } else if service == "OpenSearchService" {
        "opensearch"
    } else if service == "KinesisFirehose" {
        "firehose"
    } else if service == "ResourceGroups" {
        "resource-groups"
    } else if service == "CertificateManager" {
        "acm"
    } else if contains("ElasticLoadBalancing::") {
        "elb"
    } else if contains("ElasticLoadBalancingV2::") {
        "elbv2"
    } else if contains("ApplicationAutoScaling::") {
        "application-autoscaling"
    } else if contains("MSK::") {
        "kafka"
    } else if contains("Timestream::") {
        "timestream-write"
    } else {
        return Some(service.to_lowercase());
    };
    Some(renamed.to_owned())
}

/// Every resource type of a template, sorted.
pub fn resource_types(template: &Value) -> BTreeSet<String> {
    template["Resources"]
        .as_object()
        .into_iter()
        .flat_map(|resources| resources.values())
        .filter_map(|resource| resource["Type"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The template of a stack with default settings: the resources a scenario's stack has.
pub fn default_template() -> Value {
    let artifact = ArtifactLocation {
        bucket: "usersync-assets".to_owned(),
        key: "bootstrap.zip".to_owned(),
    };
    deployer::template::synthesize(&StackSettings::default(), &artifact)
}

/// The services LocalStack must run for `template`: the service of each resource type, what
/// the deployer and the suite call ([`CALLED_DIRECTLY`]), [`PLANNED`], and, repeatedly, what
/// each of those needs inside LocalStack ([`INTERNAL_DEPENDENCIES`]). Sorted.
pub fn required_services(template: &Value) -> Result<BTreeSet<String>, BackendError> {
    let mut services = BTreeSet::new();
    for resource_type in resource_types(template) {
        let service = service_of_resource_type(&resource_type)
            .ok_or(BackendError::UnknownResourceType { resource_type })?;
        services.insert(service);
    }
    services.extend(
        CALLED_DIRECTLY
            .iter()
            .chain(PLANNED)
            .map(|(service, _)| (*service).to_owned()),
    );
    loop {
        let needed: Vec<String> = INTERNAL_DEPENDENCIES
            .iter()
            .filter(|dependency| services.contains(dependency.service))
            .filter(|dependency| !services.contains(dependency.needs))
            .map(|dependency| dependency.needs.to_owned())
            .collect();
        if needed.is_empty() {
            return Ok(services);
        }
        services.extend(needed);
    }
}

/// A run's name, after this test process: `e2e-<pid>`, as its stacks are `e2e-<label>-<pid>-<n>`.
pub fn run_name(pid: u32) -> String {
    format!("e2e-{pid}")
}

/// Where LocalStack's log of `run` is written: `<state_dir>/itests/<run>.localstack.log`
/// (`target/usersync/itests/…` by default), next to the function logs of the local backend.
pub fn log_path(state_dir: &Path, run: &str) -> PathBuf {
    state_dir.join("itests").join(format!("{run}{LOG_SUFFIX}"))
}

/// A bind mount from the Docker daemon's machine into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The path on the daemon's machine.
    pub source: String,
    /// The path inside the container.
    pub target: String,
}

/// When the container counts as started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalStackWait {
    /// A line to wait for on the container's standard output.
    pub stdout_line: String,
    /// How long to wait for it after the container starts.
    pub startup_timeout: Duration,
}

/// Everything about the LocalStack container, as data.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalStackSpec {
    /// Image name, such as `localstack/localstack`.
    pub image: String,
    /// Image tag, such as `4.14.0`.
    pub tag: String,
    /// The container's environment.
    pub env: BTreeMap<String, String>,
    /// The Docker socket, so that LocalStack can start the function's Lambda containers.
    pub mounts: Vec<BindMount>,
    /// A Docker network for LocalStack and, through `LAMBDA_DOCKER_NETWORK`, its Lambda
    /// containers: on it the function reaches LocalStack's services.
    pub network: String,
    /// The ready condition.
    pub wait: LocalStackWait,
    /// The daemon testcontainers runs it on.
    pub docker_host: DockerHost,
    /// The run's name, such as `e2e-4242`.
    pub run: String,
    /// Where [`LocalStackBackend::stop`] writes LocalStack's log.
    pub log_path: PathBuf,
}

impl fmt::Debug for LocalStackSpec {
    // By hand, to keep the licence token out of test output and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(name, value)| {
                let shown = if name == AUTH_TOKEN_VARIABLE {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("LocalStackSpec")
            .field("image", &self.image)
            .field("tag", &self.tag)
            .field("env", &env)
            .field("mounts", &self.mounts)
            .field("network", &self.network)
            .field("wait", &self.wait)
            .field("docker_host", &self.docker_host)
            .field("run", &self.run)
            .field("log_path", &self.log_path)
            .finish()
    }
}

impl LocalStackSpec {
    /// The container for this run from `lookup` (environment variables by name:
    /// `ITESTS_LOCALSTACK_IMAGE` and `LOCALSTACK_AUTH_TOKEN`), the daemon testcontainers uses
    /// and the directory logs go to.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        docker_host: DockerHost,
        state_dir: &Path,
    ) -> Result<Self, BackendError> {
        let (image, tag) = match lookup(IMAGE_VARIABLE).filter(|v| !v.trim().is_empty()) {
            Some(value) => parse_image(&value)?,
            None => (DEFAULT_IMAGE.to_owned(), DEFAULT_TAG.to_owned()),
        };
        let pid = std::process::id();
        // One network per test process: concurrent runs do not share (or remove) each
        // other's.
        let network = format!("usersync-itests-{pid}");
        let run = run_name(pid);
        let services = required_services(&default_template())?;

        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: String| env.insert(name.to_owned(), value);
        // Only these start (`STRICT_SERVICE_LOADING` is on by default: utils/bootstrap.py,
        // get_enabled_apis); anything else answers "not enabled".
        set(
            "SERVICES",
            services.into_iter().collect::<Vec<_>>().join(","),
        );
        // Start those services before printing "Ready.", so that ready means ready.
        set("EAGER_SERVICE_LOADING", "1".to_owned());
        set("DEBUG", "0".to_owned());
        set(
            CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES.0,
            CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES.1.to_owned(),
        );
        for variable in IGNORED_UNSUPPORTED_TYPE_VARIABLES {
            set(variable, IGNORED_UNSUPPORTED_TYPES.join(","));
        }
        set("LAMBDA_DOCKER_NETWORK", network.clone());
        set(
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT",
            LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT_SECONDS.to_string(),
        );
        if let Some(token) = lookup(AUTH_TOKEN_VARIABLE).filter(|v| !v.trim().is_empty()) {
            set(AUTH_TOKEN_VARIABLE, token.trim().to_owned());
        }

        let mounts = vec![BindMount {
            source: docker_host.socket_to_mount(),
            target: CONTAINER_DOCKER_SOCKET.to_owned(),
        }];

        Ok(Self {
            image,
            tag,
            env,
            mounts,
            network,
            wait: LocalStackWait {
                stdout_line: READY_LINE.to_owned(),
                startup_timeout: STARTUP_TIMEOUT,
            },
            docker_host,
            log_path: log_path(state_dir, &run),
            run,
        })
    }

    /// [`LocalStackSpec::from_lookup`] over this process's environment, the daemon address
    /// testcontainers resolves, and `target/usersync`.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::from_lookup(
            |name| std::env::var(name).ok(),
            DockerEnvironment::from_system().resolve(Path::exists),
            &deployer::project::state_dir(),
        )
    }

    /// `image:tag`.
    pub fn image_reference(&self) -> String {
        format!("{}:{}", self.image, self.tag)
    }

    /// The services `SERVICES` starts.
    pub fn services(&self) -> Vec<&str> {
        self.env
            .get("SERVICES")
            .map(|services| services.split(',').collect())
            .unwrap_or_default()
    }

    /// The testcontainers request that runs this spec.
    pub fn container_request(&self) -> ContainerRequest<GenericImage> {
        let image = GenericImage::new(self.image.clone(), self.tag.clone())
            .with_exposed_port(GATEWAY_PORT.tcp())
            .with_wait_for(WaitFor::message_on_stdout(&self.wait.stdout_line));
        let mut request = image
            .with_network(self.network.clone())
            .with_startup_timeout(self.wait.startup_timeout);
        for (name, value) in &self.env {
            request = request.with_env_var(name, value);
        }
        for mount in &self.mounts {
            request = request.with_mount(Mount::bind_mount(&mount.source, &mount.target));
        }
        request
    }
}

/// Splits an image reference `name:tag` (the name may carry a registry with a port, such as
/// `localhost:5000/localstack/localstack:4.14.0`).
pub fn parse_image(value: &str) -> Result<(String, String), BackendError> {
    let bad = || BackendError::BadLocalStackImage {
        value: value.to_owned(),
    };
    let value = value.trim();
    // A tag follows the last ':' after the last '/'; a ':' before it belongs to a registry's
    // port. Digests (`@sha256:…`) are not tags.
    let last_segment = value.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = value[last_segment..]
        .rfind(':')
        .map(|colon| value.split_at(last_segment + colon))
        .ok_or_else(bad)?;
    let tag = &tag[1..];
    let well_formed = !name.is_empty()
        && !name.ends_with('/')
        && !tag.is_empty()
        && !value.contains('@')
        && !value.chars().any(char::is_whitespace);
    if !well_formed {
        return Err(bad());
    }
    Ok((name.to_owned(), tag.to_owned()))
}

/// A running LocalStack container. Dropping it removes the container (inside a Tokio
/// runtime, as testcontainers requires); [`LocalStackBackend::stop`] first lets LocalStack
/// remove the Lambda containers it started and keeps its log.
pub struct LocalStackBackend {
    container: ContainerAsync<GenericImage>,
    image: String,
    endpoint_url: String,
    log_path: PathBuf,
}

impl fmt::Debug for LocalStackBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStackBackend")
            .field("container", &self.container.id())
            .field("image", &self.image)
            .field("endpoint_url", &self.endpoint_url)
            .field("log_path", &self.log_path)
            .finish()
    }
}

/// Starts LocalStack as `spec` says and waits until it is ready. Fails at once, with what to
/// do, when testcontainers finds no Docker daemon that answers.
pub async fn start(spec: &LocalStackSpec) -> Result<LocalStackBackend, BackendError> {
    start_after(spec, docker::probe()).await
}

/// [`start`], once `probe` has said whether a daemon answers.
async fn start_after(
    spec: &LocalStackSpec,
    probe: impl Future<Output = DockerProbe>,
) -> Result<LocalStackBackend, BackendError> {
    let probe = probe.await;
    if let Err(why) = probe.outcome {
        return Err(BackendError::DockerUnavailable {
            docker_host: probe.host.to_string(),
            why,
        });
    }
    let image = spec.image_reference();
    let container =
        spec.container_request()
            .start()
            .await
            .map_err(|source| BackendError::LocalStackStart {
                image: image.clone(),
                source: Box::new(source),
            })?;
    let failed = |action| {
        let image = image.clone();
        move |source| BackendError::LocalStackContainer {
            image,
            action,
            source: Box::new(source),
        }
    };
    let host = container
        .get_host()
        .await
        .map_err(failed("finding its host"))?
        .to_string();
    let port = container
        .get_host_port_ipv4(GATEWAY_PORT)
        .await
        .map_err(failed("finding the port mapped to 4566"))?;
    // The port is published on IPv4; "localhost" might resolve to ::1 first.
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    Ok(LocalStackBackend {
        container,
        endpoint_url: format!("http://{host}:{port}"),
        image,
        log_path: spec.log_path.clone(),
    })
}

/// A container's output so far: standard output, then standard error.
async fn read_logs(
    container: &ContainerAsync<GenericImage>,
    image: &str,
) -> Result<String, BackendError> {
    let read = |action| {
        let image = image.to_owned();
        move |source| BackendError::LocalStackContainer {
            image,
            action,
            source: Box::new(source),
        }
    };
    let stdout = container
        .stdout_to_vec()
        .await
        .map_err(read("reading its standard output"))?;
    let stderr = container
        .stderr_to_vec()
        .await
        .map_err(read("reading its standard error"))?;
    let mut logs = String::from_utf8_lossy(&stdout).into_owned();
    logs.push_str(&String::from_utf8_lossy(&stderr));
    Ok(logs)
}

/// Writes `logs` to `path`, creating its directory.
fn write_log(path: &Path, logs: &str) -> Result<(), BackendError> {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, logs));
    written.map_err(|source| BackendError::LocalStackLog {
        path: path.to_owned(),
        source,
    })
}

impl LocalStackBackend {
    /// LocalStack's gateway as this machine reaches it, such as `http://127.0.0.1:32771`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// The image it runs, `name:tag`.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Where [`Self::stop`] writes LocalStack's log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// LocalStack's output so far (standard output, then standard error), for a failing
    /// test to show.
    pub async fn logs(&self) -> Result<String, BackendError> {
        read_logs(&self.container, &self.image).await
    }

    /// Stops LocalStack gracefully, so that it removes the Lambda containers it started
    /// (killing it would leave them behind), writes its whole log (shutdown included) to
    /// [`Self::log_path`], then removes its container. The container is removed even when
    /// stopping it or keeping its log failed; the first failure is returned.
    pub async fn stop(self) -> Result<(), BackendError> {
        let Self {
            container,
            image,
            log_path,
            ..
        } = self;
        let failed = |action| {
            let image = image.clone();
            move |source| BackendError::LocalStackContainer {
                image,
                action,
                source: Box::new(source),
            }
        };
        let stopped = container
            .stop_with_timeout(Some(STOP_TIMEOUT_SECONDS))
            .await
            .map_err(failed("stopping it"));
        let logged = match read_logs(&container, &image).await {
            Ok(logs) => write_log(&log_path, &logs),
            Err(err) => Err(err),
        };
        match &logged {
            Ok(()) => eprintln!("localstack: its log is in {}", log_path.display()),
            Err(err) => eprintln!("localstack: its log was not kept: {err}"),
        }
        let removed = container.rm().await.map_err(failed("removing it"));
        stopped.and(logged).and(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::docker::HostSource;
    use crate::backend::tests::env;

    fn spec_from(pairs: &[(&str, &str)]) -> LocalStackSpec {
        LocalStackSpec::from_lookup(
            env(pairs),
            DockerHost::default_socket(),
            Path::new("/work/target/usersync"),
        )
        .unwrap()
    }

    fn default_spec() -> LocalStackSpec {
        spec_from(&[])
    }

    #[test]
    fn the_default_image_is_the_pinned_community_release() {
        let spec = default_spec();
        assert_eq!(spec.image, "localstack/localstack");
        assert_eq!(spec.tag, "4.14.0");
        assert_eq!(spec.image_reference(), "localstack/localstack:4.14.0");
        assert_eq!(
            spec.container_request().descriptor(),
            "localstack/localstack:4.14.0"
        );
    }

    #[test]
    fn the_image_variable_overrides_name_and_tag() {
        let spec = spec_from(&[(
            "ITESTS_LOCALSTACK_IMAGE",
            "localstack/localstack-pro:4.15.0",
        )]);
        assert_eq!(spec.image, "localstack/localstack-pro");
        assert_eq!(spec.tag, "4.15.0");
        assert_eq!(
            spec.container_request().descriptor(),
            "localstack/localstack-pro:4.15.0"
        );
    }

    #[test]
    fn image_references_split_at_the_tag_not_at_a_registry_port() {
        assert_eq!(
            parse_image("localhost:5000/localstack/localstack:4.14.1").unwrap(),
            (
                "localhost:5000/localstack/localstack".to_owned(),
                "4.14.1".to_owned()
            )
        );
        assert_eq!(
            parse_image("mirror.example/localstack:4.14.0").unwrap(),
            ("mirror.example/localstack".to_owned(), "4.14.0".to_owned())
        );
    }

    #[test]
    fn an_image_without_a_tag_is_refused_with_the_form_expected() {
        for value in [
            "localstack/localstack",
            "localhost:5000/localstack",
            "localstack/localstack:",
            ":4.14.0",
            "localstack/localstack@sha256:abcd",
            "local stack:4.14.0",
        ] {
            let err = LocalStackSpec::from_lookup(
                env(&[("ITESTS_LOCALSTACK_IMAGE", value)]),
                DockerHost::default_socket(),
                Path::new("/state"),
            )
            .unwrap_err();
            assert!(
                matches!(err, BackendError::BadLocalStackImage { .. }),
                "{value}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!("ITESTS_LOCALSTACK_IMAGE={value:?} is not an image of the form name:tag: set it to one such as localstack/localstack:4.14.0, or unset it for that default")
            );
        }
    }

    #[test]
    fn the_auth_token_is_passed_only_when_set_and_never_printed() {
        assert!(!default_spec().env.contains_key("LOCALSTACK_AUTH_TOKEN"));
        let blank = spec_from(&[("LOCALSTACK_AUTH_TOKEN", "")]);
        assert!(!blank.env.contains_key("LOCALSTACK_AUTH_TOKEN"));

        let spec = spec_from(&[("LOCALSTACK_AUTH_TOKEN", "ls-secret-1234")]);
        assert_eq!(
            spec.env.get("LOCALSTACK_AUTH_TOKEN").map(String::as_str),
            Some("ls-secret-1234")
        );
        assert!(spec
            .container_request()
            .env_vars()
            .any(|(name, value)| name == "LOCALSTACK_AUTH_TOKEN" && value == "ls-secret-1234"));
        let shown = format!("{spec:?}");
        assert!(!shown.contains("ls-secret-1234"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_docker_socket_is_mounted_where_localstack_looks_for_it() {
        let expected = BindMount {
            source: "/var/run/docker.sock".to_owned(),
            target: "/var/run/docker.sock".to_owned(),
        };
        assert_eq!(default_spec().mounts, vec![expected]);

        let spec_on = |host: DockerHost| {
            LocalStackSpec::from_lookup(env(&[]), host, Path::new("/state")).unwrap()
        };
        let rootless = spec_on(DockerHost::from_variable(
            "unix:///run/user/1000/docker.sock",
        ));
        assert_eq!(
            rootless.docker_host.address,
            "unix:///run/user/1000/docker.sock"
        );
        assert_eq!(rootless.mounts[0].source, "/run/user/1000/docker.sock");
        assert_eq!(rootless.mounts[0].target, "/var/run/docker.sock");

        let remote = spec_on(DockerHost::from_variable("tcp://10.0.0.5:2375"));
        assert_eq!(remote.mounts[0].source, "/var/run/docker.sock");

        let desktop = spec_on(DockerHost {
            address: "unix:///Users/dev/.docker/run/docker.sock".to_owned(),
            source: HostSource::UserSocket,
        });
        assert_eq!(desktop.mounts[0].source, "/var/run/docker.sock");

        let request = rootless.container_request();
        let mounts: Vec<_> = request
            .mounts()
            .map(|m| (m.source().map(str::to_owned), m.target().map(str::to_owned)))
            .collect();
        assert_eq!(
            mounts,
            vec![(
                Some("/run/user/1000/docker.sock".to_owned()),
                Some("/var/run/docker.sock".to_owned())
            )]
        );
    }

    #[test]
    fn resource_types_map_to_localstacks_service_names() {
        for (resource_type, service) in [
            ("AWS::DynamoDB::Table", "dynamodb"),
            ("AWS::S3::BucketPolicy", "s3"),
            ("AWS::Logs::LogGroup", "logs"),
            ("AWS::IAM::Role", "iam"),
            ("AWS::Lambda::EventSourceMapping", "lambda"),
            ("AWS::SQS::Queue", "sqs"),
            ("AWS::CloudWatch::Alarm", "cloudwatch"),
            ("AWS::CloudWatch::Dashboard", "cloudwatch"),
            ("AWS::SNS::Topic", "sns"),
            ("AWS::KMS::Key", "kms"),
            ("AWS::KinesisFirehose::DeliveryStream", "firehose"),
            ("AWS::CertificateManager::Certificate", "acm"),
            (
                "AWS::Cognito::IdentityPoolRoleAttachment",
                "cognito-identity",
            ),
            ("AWS::Cognito::UserPoolClient", "cognito-idp"),
            ("AWS::ElasticLoadBalancingV2::Listener", "elbv2"),
            ("AWS::ElasticLoadBalancing::LoadBalancer", "elb"),
        ] {
            assert_eq!(
                service_of_resource_type(resource_type).as_deref(),
                Some(service),
                "{resource_type}"
            );
        }
        assert_eq!(service_of_resource_type("NotAType"), None);
    }

    #[test]
    fn every_service_the_template_needs_is_started() {
        let template = default_template();
        let types = resource_types(&template);
        assert!(types.contains("AWS::DynamoDB::Table"), "{types:?}");
        let spec = default_spec();
        let started = spec.services();
        for resource_type in &types {
            let service = service_of_resource_type(resource_type).expect("an AWS type");
            assert!(
                started.contains(&service.as_str()),
                "{resource_type} needs {service}, which SERVICES={started:?} leaves out"
            );
        }
        for dependency in INTERNAL_DEPENDENCIES {
            if started.contains(&dependency.service) {
                assert!(
                    started.contains(&dependency.needs),
                    "{} needs {} ({}), which SERVICES leaves out",
                    dependency.service,
                    dependency.needs,
                    dependency.why
                );
            }
        }
        for (service, why) in CALLED_DIRECTLY.iter().chain(PLANNED) {
            assert!(
                started.contains(service),
                "{service} ({why}) is not started"
            );
        }
    }

    #[test]
    fn a_stack_that_adopts_its_table_and_bucket_needs_no_other_service() {
        // The services are derived once, from the default template; a scenario's stack that
        // adopts a table and a bucket (e2e_09) has a template without them, whose services must
        // be among those started. The table and the bucket themselves are made by the scenario
        // with DynamoDB's and S3's APIs, which CALLED_DIRECTLY starts whatever the template.
        let artifact = ArtifactLocation {
            bucket: "usersync-assets".to_owned(),
            key: "bootstrap.zip".to_owned(),
        };
        let adoption = deployer::template::Adoption {
            table: Some(deployer::template::AdoptedTable {
                name: "people".to_owned(),
                stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/people/stream/x"
                    .to_owned(),
                key_attribute: "name".to_owned(),
                kms_key_arn: None,
            }),
            bucket: Some(deployer::template::AdoptedBucket {
                name: "people-mirror".to_owned(),
                kms_key_arn: None,
            }),
        };
        let adopting = deployer::template::synthesize_adopting(
            &StackSettings::default(),
            &artifact,
            &adoption,
        );
        let types = resource_types(&adopting);
        assert!(!types.contains("AWS::DynamoDB::Table"), "{types:?}");
        assert!(!types.contains("AWS::S3::Bucket"), "{types:?}");
        let spec = default_spec();
        let started = spec.services();
        for service in required_services(&adopting).unwrap() {
            assert!(
                started.contains(&service.as_str()),
                "an adopting stack needs {service}, which SERVICES={started:?} leaves out"
            );
        }
        for service in ["dynamodb", "dynamodbstreams", "s3", "lambda", "sqs"] {
            assert!(
                CALLED_DIRECTLY.iter().any(|(called, _)| *called == service),
                "{service} is called by the scenarios but not listed in CALLED_DIRECTLY"
            );
        }
    }

    #[test]
    fn an_encrypted_table_starts_kms() {
        // SSESpecification.SSEEnabled: LocalStack's DynamoDB creates a KMS key for the table.
        let template = default_template();
        let table = template["Resources"]
            .as_object()
            .unwrap()
            .values()
            .find(|r| r["Type"] == "AWS::DynamoDB::Table")
            .unwrap();
        assert_eq!(table["Properties"]["SSESpecification"]["SSEEnabled"], true);
        assert!(default_spec().services().contains(&"kms"));
    }

    #[test]
    fn the_services_are_exactly_these() {
        assert_eq!(
            default_spec().env["SERVICES"],
            "cloudformation,cloudwatch,dynamodb,dynamodbstreams,iam,kinesis,kms,lambda,logs,s3,sns,sqs,sts"
        );
    }

    #[test]
    fn dependencies_are_followed_until_nothing_is_missing() {
        let template = serde_json::json!({
            "Resources": { "Table": { "Type": "AWS::DynamoDB::Table" } }
        });
        let services = required_services(&template).unwrap();
        // dynamodb -> dynamodbstreams -> kinesis, and dynamodb -> kms.
        for service in ["dynamodb", "dynamodbstreams", "kinesis", "kms"] {
            assert!(services.contains(service), "{service}: {services:?}");
        }
        let untyped = serde_json::json!({ "Resources": { "X": { "Type": "NotAType" } } });
        let err = required_services(&untyped).unwrap_err();
        assert!(
            matches!(err, BackendError::UnknownResourceType { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"NotAType\""), "{err}");
    }

    #[test]
    fn unsupported_resource_types_fail_the_stack() {
        let spec = default_spec();
        assert_eq!(spec.env["CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES"], "0");
        // Only the dashboard, which the community image cannot create, is let through, and
        // the default template has one.
        for variable in [
            "CFN_IGNORE_UNSUPPORTED_TYPE_CREATE",
            "CFN_IGNORE_UNSUPPORTED_TYPE_UPDATE",
        ] {
            assert_eq!(
                spec.env[variable], "AWS::CloudWatch::Dashboard",
                "{variable}"
            );
        }
        assert!(resource_types(&default_template()).contains("AWS::CloudWatch::Dashboard"));
        assert!(spec
            .container_request()
            .env_vars()
            .any(|(name, value)| name == "CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES" && value == "0"));
    }

    #[test]
    fn lambdas_join_localstacks_network() {
        let spec = default_spec();
        let env = &spec.env;
        assert_eq!(env["DEBUG"], "0");
        assert_eq!(env["EAGER_SERVICE_LOADING"], "1");
        assert_eq!(env["LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT"], "180");
        assert_eq!(
            spec.network,
            format!("usersync-itests-{}", std::process::id())
        );
        assert_eq!(env["LAMBDA_DOCKER_NETWORK"], spec.network);

        let request = spec.container_request();
        assert_eq!(request.network().as_deref(), Some(spec.network.as_str()));
        let request_env: BTreeMap<String, String> = request
            .env_vars()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        assert_eq!(&request_env, env);
        assert_eq!(
            request
                .expose_ports()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["4566/tcp"]
        );
    }

    #[test]
    fn one_log_per_run_named_after_the_run() {
        assert_eq!(run_name(4242), "e2e-4242");
        assert_eq!(
            log_path(Path::new("/work/target/usersync"), "e2e-4242"),
            PathBuf::from("/work/target/usersync/itests/e2e-4242.localstack.log")
        );
        let spec = default_spec();
        assert_eq!(spec.run, format!("e2e-{}", std::process::id()));
        assert_eq!(
            spec.log_path,
            PathBuf::from(format!(
                "/work/target/usersync/itests/e2e-{}.localstack.log",
                std::process::id()
            ))
        );
    }

    #[test]
    fn a_log_is_written_with_its_directory() {
        let dir =
            std::env::temp_dir().join(format!("itests-localstack-log-{}", std::process::id()));
        let path = log_path(&dir, "e2e-1");
        write_log(&path, "Ready.\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "Ready.\n");
        std::fs::remove_dir_all(&dir).unwrap();

        let blocked = Path::new("/proc/itests-no-such-dir/e2e-1.localstack.log");
        let err = write_log(blocked, "x").unwrap_err();
        assert!(matches!(err, BackendError::LocalStackLog { .. }), "{err}");
        assert!(err.to_string().contains("e2e-1.localstack.log"), "{err}");
    }

    #[test]
    fn ready_means_localstacks_ready_line() {
        let spec = default_spec();
        assert_eq!(
            spec.wait,
            LocalStackWait {
                stdout_line: "Ready.".to_owned(),
                startup_timeout: Duration::from_secs(180),
            }
        );
        let request = spec.container_request();
        assert_eq!(request.startup_timeout(), Some(Duration::from_secs(180)));
        let conditions = request.ready_conditions();
        assert_eq!(conditions.len(), 1);
        let shown = format!("{:?}", conditions[0]);
        assert!(
            matches!(conditions[0], WaitFor::Log(_)) && shown.contains("StdOut"),
            "{shown}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starting_without_a_docker_daemon_fails_fast_and_says_what_to_do() {
        let host = DockerHost::from_variable("unix:///nonexistent/usersync-itests/docker.sock");
        let spec =
            LocalStackSpec::from_lookup(env(&[]), host.clone(), Path::new("/state")).unwrap();
        let probe = DockerProbe::unanswered(
            host,
            "Socket not found: /nonexistent/usersync-itests/docker.sock",
        );
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            start_after(&spec, std::future::ready(probe)),
        )
        .await
        .expect("start returns instead of hanging");
        let err = result.expect_err("no daemon answers there");
        assert!(
            matches!(err, BackendError::DockerUnavailable { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(
                "no Docker daemon answered at unix:///nonexistent/usersync-itests/docker.sock (DOCKER_HOST): Socket not found"
            ),
            "{message}"
        );
        assert!(message.contains("start Docker"), "{message}");
        assert!(message.contains("ITESTS_BACKEND=local"), "{message}");
    }
}
