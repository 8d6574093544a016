//! The LocalStack backend: a LocalStack container started for the run, in which the deployed
//! stack's own event source mapping invokes the function in Lambda's `provided.al2023` image.
//!
//! The container is described by a plain [`LocalStackSpec`], built from the environment by a
//! pure function, so that its image, environment, mounts and wait condition are testable
//! without Docker; [`start`] turns it into a testcontainers request and runs it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use super::{docker, BackendError};

/// The variable that overrides the image, as `name:tag`.
pub const IMAGE_VARIABLE: &str = "ITESTS_LOCALSTACK_IMAGE";
/// LocalStack's community image.
pub const DEFAULT_IMAGE: &str = "localstack/localstack";
/// Pinned because LocalStack 4.15 and later refuse to start without `LOCALSTACK_AUTH_TOKEN`
/// (an account's token); 4.14 is the last line that runs these services without one. The
/// minor tag follows 4.14's patch releases.
pub const DEFAULT_TAG: &str = "4.14";
/// LocalStack's licence token; passed into the container when set, for images that need it.
pub const AUTH_TOKEN_VARIABLE: &str = "LOCALSTACK_AUTH_TOKEN";
/// LocalStack's single gateway port for every service.
pub const GATEWAY_PORT: u16 = 4566;
/// What the stack uses, and nothing else, so LocalStack starts only these.
pub const SERVICES: [&str; 9] = [
    "cloudformation",
    "dynamodb",
    "dynamodbstreams",
    "s3",
    "iam",
    "lambda",
    "sqs",
    "sts",
    "logs",
];
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
    /// Image tag, such as `4.14`.
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
    /// The daemon to run on (`DOCKER_HOST`, or the default socket); [`start`] pings it first.
    pub docker_host: String,
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
            .finish()
    }
}

impl LocalStackSpec {
    /// The container for this run from `lookup` (environment variables by name):
    /// `ITESTS_LOCALSTACK_IMAGE`, `LOCALSTACK_AUTH_TOKEN` and `DOCKER_HOST`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BackendError> {
        let (image, tag) = match lookup(IMAGE_VARIABLE).filter(|v| !v.trim().is_empty()) {
            Some(value) => parse_image(&value)?,
            None => (DEFAULT_IMAGE.to_owned(), DEFAULT_TAG.to_owned()),
        };
        let docker_host = docker::docker_host(&lookup);
        // One network per test process: concurrent runs do not share (or remove) each
        // other's.
        let network = format!("usersync-itests-{}", std::process::id());

        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: String| env.insert(name.to_owned(), value);
        set("SERVICES", SERVICES.join(","));
        // Start those services before printing "Ready.", so that ready means ready.
        set("EAGER_SERVICE_LOADING", "1".to_owned());
        set("DEBUG", "0".to_owned());
        set("LAMBDA_DOCKER_NETWORK", network.clone());
        set(
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT",
            LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT_SECONDS.to_string(),
        );
        if let Some(token) = lookup(AUTH_TOKEN_VARIABLE).filter(|v| !v.trim().is_empty()) {
            set(AUTH_TOKEN_VARIABLE, token.trim().to_owned());
        }

        // Bind mounts name paths on the daemon's machine: a local daemon's socket is where
        // DOCKER_HOST points; a remote daemon's is at the standard path over there.
        let socket = docker::unix_socket_path(&docker_host).unwrap_or(CONTAINER_DOCKER_SOCKET);
        let mounts = vec![BindMount {
            source: socket.to_owned(),
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
        })
    }

    /// [`LocalStackSpec::from_lookup`] over this process's environment.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `image:tag`.
    pub fn image_reference(&self) -> String {
        format!("{}:{}", self.image, self.tag)
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
/// `localhost:5000/localstack/localstack:4.14`).
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
/// remove the Lambda containers it started.
pub struct LocalStackBackend {
    container: ContainerAsync<GenericImage>,
    image: String,
    endpoint_url: String,
}

impl fmt::Debug for LocalStackBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStackBackend")
            .field("container", &self.container.id())
            .field("image", &self.image)
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

/// Starts LocalStack as `spec` says and waits until it is ready. Fails at once, with what to
/// do, when no Docker daemon answers at `spec.docker_host`.
pub async fn start(spec: &LocalStackSpec) -> Result<LocalStackBackend, BackendError> {
    if !docker::daemon_answers_at(&spec.docker_host, docker::PING_TIMEOUT).await {
        return Err(BackendError::DockerUnavailable {
            docker_host: spec.docker_host.clone(),
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

    /// LocalStack's output so far (standard output, then standard error), for a failing
    /// test to show.
    pub async fn logs(&self) -> Result<String, BackendError> {
        let read = |action| {
            let image = self.image.clone();
            move |source| BackendError::LocalStackContainer {
                image,
                action,
                source: Box::new(source),
            }
        };
        let stdout = self
            .container
            .stdout_to_vec()
            .await
            .map_err(read("reading its standard output"))?;
        let stderr = self
            .container
            .stderr_to_vec()
            .await
            .map_err(read("reading its standard error"))?;
        let mut logs = String::from_utf8_lossy(&stdout).into_owned();
        logs.push_str(&String::from_utf8_lossy(&stderr));
        Ok(logs)
    }

    /// Stops LocalStack gracefully, so that it removes the Lambda containers it started
    /// (killing it would leave them behind), then removes its container.
    pub async fn stop(self) -> Result<(), BackendError> {
        let failed = |action| {
            let image = self.image.clone();
            move |source| BackendError::LocalStackContainer {
                image,
                action,
                source: Box::new(source),
            }
        };
        self.container
            .stop_with_timeout(Some(STOP_TIMEOUT_SECONDS))
            .await
            .map_err(failed("stopping it"))?;
        let remove_failed = failed("removing it");
        self.container.rm().await.map_err(remove_failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::env;

    fn default_spec() -> LocalStackSpec {
        LocalStackSpec::from_lookup(env(&[])).unwrap()
    }

    #[test]
    fn the_default_image_is_the_pinned_community_release() {
        let spec = default_spec();
        assert_eq!(spec.image, "localstack/localstack");
        assert_eq!(spec.tag, "4.14");
        assert_eq!(spec.image_reference(), "localstack/localstack:4.14");
        assert_eq!(
            spec.container_request().descriptor(),
            "localstack/localstack:4.14"
        );
    }

    #[test]
    fn the_image_variable_overrides_name_and_tag() {
        let spec = LocalStackSpec::from_lookup(env(&[(
            "ITESTS_LOCALSTACK_IMAGE",
            "localstack/localstack-pro:4.15.0",
        )]))
        .unwrap();
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
            parse_image("mirror.example/localstack:4.14").unwrap(),
            ("mirror.example/localstack".to_owned(), "4.14".to_owned())
        );
    }

    #[test]
    fn an_image_without_a_tag_is_refused_with_the_form_expected() {
        for value in [
            "localstack/localstack",
            "localhost:5000/localstack",
            "localstack/localstack:",
            ":4.14",
            "localstack/localstack@sha256:abcd",
            "local stack:4.14",
        ] {
            let err = LocalStackSpec::from_lookup(env(&[("ITESTS_LOCALSTACK_IMAGE", value)]))
                .unwrap_err();
            assert!(
                matches!(err, BackendError::BadLocalStackImage { .. }),
                "{value}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!("ITESTS_LOCALSTACK_IMAGE={value:?} is not an image of the form name:tag: set it to one such as localstack/localstack:4.14, or unset it for that default")
            );
        }
    }

    #[test]
    fn the_auth_token_is_passed_only_when_set_and_never_printed() {
        assert!(!default_spec().env.contains_key("LOCALSTACK_AUTH_TOKEN"));
        let blank = LocalStackSpec::from_lookup(env(&[("LOCALSTACK_AUTH_TOKEN", "")])).unwrap();
        assert!(!blank.env.contains_key("LOCALSTACK_AUTH_TOKEN"));

        let spec = LocalStackSpec::from_lookup(env(&[("LOCALSTACK_AUTH_TOKEN", "ls-secret-1234")]))
            .unwrap();
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

        let rootless = LocalStackSpec::from_lookup(env(&[(
            "DOCKER_HOST",
            "unix:///run/user/1000/docker.sock",
        )]))
        .unwrap();
        assert_eq!(rootless.docker_host, "unix:///run/user/1000/docker.sock");
        assert_eq!(rootless.mounts[0].source, "/run/user/1000/docker.sock");
        assert_eq!(rootless.mounts[0].target, "/var/run/docker.sock");

        let remote =
            LocalStackSpec::from_lookup(env(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")])).unwrap();
        assert_eq!(remote.mounts[0].source, "/var/run/docker.sock");

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
    fn only_the_stacks_services_start_and_lambdas_join_localstacks_network() {
        let spec = default_spec();
        let env = &spec.env;
        assert_eq!(
            env["SERVICES"],
            "cloudformation,dynamodb,dynamodbstreams,s3,iam,lambda,sqs,sts,logs"
        );
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
        let spec = LocalStackSpec::from_lookup(env(&[(
            "DOCKER_HOST",
            "unix:///nonexistent/usersync-itests/docker.sock",
        )]))
        .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(20), start(&spec))
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
                "no Docker daemon answered at unix:///nonexistent/usersync-itests/docker.sock"
            ),
            "{message}"
        );
        assert!(message.contains("start Docker"), "{message}");
        assert!(message.contains("ITESTS_BACKEND=local"), "{message}");
    }
}
