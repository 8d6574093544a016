//! Where the end-to-end suite runs its scenarios: the backend, chosen from the environment.
//!
//! `ITESTS_BACKEND` picks one of [`BackendKind`]: `localstack` (a LocalStack container whose
//! own event source mapping runs the function in Lambda's `provided.al2023` image), `local`
//! (the embedded emulator, with the function run on this machine) or `endpoint` (any running
//! AWS-compatible emulator at `ITESTS_ENDPOINT_URL` that runs Lambdas itself). Unset, it is
//! LocalStack when a Docker daemon answers (found as testcontainers finds it: see [`docker`])
//! and the local backend otherwise, saying where it looked and why. [`select`] decides
//! without touching the environment, so every case is testable; [`select_from_env`] applies it
//! to this process.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use deployer::artifact::Purpose;
use deployer::workflow::DeployOptions;

pub mod docker;
pub mod endpoint;
pub mod localstack;

pub use docker::{docker_daemon_answers, DockerProbe};

/// The variable that selects the backend.
pub const BACKEND_VARIABLE: &str = "ITESTS_BACKEND";

/// A backend the suite can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A LocalStack container started for the run; needs a Docker daemon.
    LocalStack,
    /// The embedded emulator, with the function run on this machine.
    Local,
    /// An already running AWS-compatible emulator at `ITESTS_ENDPOINT_URL`.
    Endpoint,
}

impl BackendKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [Self; 3] = [Self::LocalStack, Self::Local, Self::Endpoint];

    /// The value of `ITESTS_BACKEND` that selects this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalStack => "localstack",
            Self::Local => "local",
            Self::Endpoint => "endpoint",
        }
    }

    /// The build the function needs here: LocalStack and other endpoints run it in Lambda's
    /// Amazon Linux 2023 image, the local backend on this machine.
    pub fn purpose(self) -> Purpose {
        match self {
            Self::LocalStack | Self::Endpoint => Purpose::Aws,
            Self::Local => Purpose::Local,
        }
    }

    /// The options for `deployer::workflow::deploy` on this backend.
    pub fn deploy_options(self) -> DeployOptions {
        DeployOptions {
            purpose: Some(self.purpose()),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    /// Parses `localstack`, `local` or `endpoint`, ignoring case and surrounding blanks.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let wanted = value.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| BackendError::UnknownBackend {
                value: value.to_owned(),
            })
    }
}

/// The chosen backend and why, for the suite to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub kind: BackendKind,
    /// Such as `ITESTS_BACKEND=local`, or why an unset variable led to this kind.
    pub reason: String,
}

/// Failures of choosing or starting a backend; each names the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{BACKEND_VARIABLE}={value:?} is not a backend: set it to localstack, local or endpoint, or leave it unset to use LocalStack when a Docker daemon answers and the embedded local backend otherwise")]
    UnknownBackend { value: String },

    #[error("{BACKEND_VARIABLE}=endpoint needs {}: set it to the emulator's http(s) URL, such as http://localhost:4566", endpoint::ENDPOINT_URL_VARIABLE)]
    MissingEndpointUrl,

    #[error("{}={value:?} is not usable: {reason}; set it to the emulator's http(s) URL, such as http://localhost:4566", endpoint::ENDPOINT_URL_VARIABLE)]
    BadEndpointUrl { value: String, reason: String },

    #[error("no Docker daemon answered at {docker_host}: {why}; the LocalStack backend needs one to run LocalStack and the function's Lambda containers: start Docker (or point DOCKER_HOST, or tc.host in ~/.testcontainers.properties, at a running daemon), or use the embedded local backend with {BACKEND_VARIABLE}=local")]
    DockerUnavailable {
        /// The address testcontainers used, and where it came from.
        docker_host: String,
        /// Why the daemon did not answer.
        why: String,
    },

    #[error("{}={value:?} is not an image of the form name:tag: set it to one such as {}:{}, or unset it for that default", localstack::IMAGE_VARIABLE, localstack::DEFAULT_IMAGE, localstack::DEFAULT_TAG)]
    BadLocalStackImage { value: String },

    #[error("failed to start the LocalStack container {image} (check that `docker info` works and that the image can be pulled; LocalStack 4.15 and later also need LOCALSTACK_AUTH_TOKEN)")]
    LocalStackStart {
        image: String,
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },

    #[error("the stack's template has a resource type {resource_type:?} that names no AWS service, so the LocalStack services it needs are unknown")]
    UnknownResourceType { resource_type: String },

    #[error("failed to write LocalStack's log to {}", path.display())]
    LocalStackLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the LocalStack container {image} started, but {action} failed")]
    LocalStackContainer {
        image: String,
        action: &'static str,
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
}

/// Chooses the backend from `lookup` (environment variables by name) and, only when
/// `ITESTS_BACKEND` is unset or `localstack`, `docker` (whether a Docker daemon answers, where
/// testcontainers looked, and why not).
pub fn select(
    lookup: impl Fn(&str) -> Option<String>,
    docker: impl FnOnce() -> DockerProbe,
) -> Result<Selection, BackendError> {
    let Some(kind) = requested(&lookup)? else {
        let probe = docker();
        let (kind, mut reason) = if probe.is_answered() {
            (
                BackendKind::LocalStack,
                format!("{BACKEND_VARIABLE} is unset and {probe}; using LocalStack"),
            )
        } else {
            (
                BackendKind::Local,
                format!(
                    "{BACKEND_VARIABLE} is unset and {probe}; using the embedded local backend"
                ),
            )
        };
        if set(&lookup, endpoint::ENDPOINT_URL_VARIABLE).is_some() {
            reason.push_str(&format!(
                " ({} is ignored unless {BACKEND_VARIABLE}=endpoint)",
                endpoint::ENDPOINT_URL_VARIABLE
            ));
        }
        return Ok(Selection { kind, reason });
    };
    let reason = match kind {
        BackendKind::LocalStack => {
            let probe = docker();
            if let Err(why) = probe.outcome {
                return Err(BackendError::DockerUnavailable {
                    docker_host: probe.host.to_string(),
                    why,
                });
            }
            format!("{BACKEND_VARIABLE}=localstack")
        }
        BackendKind::Local => format!("{BACKEND_VARIABLE}=local"),
        BackendKind::Endpoint => {
            let endpoint = endpoint::EndpointBackend::from_lookup(&lookup)?;
            format!("{BACKEND_VARIABLE}=endpoint at {}", endpoint.endpoint_url())
        }
    };
    Ok(Selection { kind, reason })
}

/// [`select`] over this process's environment, pinging the Docker daemon (through
/// testcontainers' own client) only when the choice depends on it.
pub async fn select_from_env() -> Result<Selection, BackendError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let probe = match requested(lookup)? {
        None | Some(BackendKind::LocalStack) => Some(docker::probe().await),
        Some(BackendKind::Local | BackendKind::Endpoint) => None,
    };
    select(lookup, || {
        probe.expect("the daemon is probed whenever the selection depends on it")
    })
}

/// The kind `ITESTS_BACKEND` asks for; `None` when it is unset or blank.
fn requested(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<BackendKind>, BackendError> {
    set(lookup, BACKEND_VARIABLE)
        .map(|value| value.parse())
        .transpose()
}

/// A variable's value, with a blank one (as CI templating often leaves) counted as unset.
fn set(lookup: impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|value| !value.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of these variables only.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn never_probed() -> DockerProbe {
        panic!("the Docker daemon must not be probed for this selection")
    }

    fn answered() -> DockerProbe {
        DockerProbe::answered(docker::DockerHost::default_socket())
    }

    fn socket_missing() -> DockerProbe {
        DockerProbe::unanswered(
            docker::DockerHost::default_socket(),
            "testcontainers could not set up its Docker client: failed to initialize a docker client: Socket not found: /var/run/docker.sock",
        )
    }

    #[test]
    fn kinds_print_and_parse_as_their_variable_values() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
        }
        assert_eq!(BackendKind::LocalStack.to_string(), "localstack");
        assert_eq!(BackendKind::Local.to_string(), "local");
        assert_eq!(BackendKind::Endpoint.to_string(), "endpoint");
        assert_eq!(
            " LocalStack ".parse::<BackendKind>().unwrap(),
            BackendKind::LocalStack
        );
    }

    #[test]
    fn unset_with_docker_selects_localstack() {
        let selection = select(env(&[]), answered).unwrap();
        assert_eq!(selection.kind, BackendKind::LocalStack);
        assert_eq!(
            selection.reason,
            "ITESTS_BACKEND is unset and a Docker daemon answered at unix:///var/run/docker.sock (the default socket); using LocalStack"
        );
    }

    #[test]
    fn unset_without_docker_selects_local_and_says_where_it_looked() {
        let refused = || {
            DockerProbe::unanswered(
                docker::DockerHost::from_variable("tcp://10.1.2.3:2375"),
                "connection refused",
            )
        };
        let selection = select(env(&[]), refused).unwrap();
        assert_eq!(selection.kind, BackendKind::Local);
        assert_eq!(
            selection.reason,
            "ITESTS_BACKEND is unset and no Docker daemon answered at tcp://10.1.2.3:2375 (DOCKER_HOST): connection refused; using the embedded local backend"
        );
    }

    #[test]
    fn blank_counts_as_unset() {
        let selection = select(env(&[("ITESTS_BACKEND", " ")]), socket_missing).unwrap();
        assert_eq!(selection.kind, BackendKind::Local);
    }

    #[test]
    fn unset_backend_mentions_an_ignored_endpoint_url() {
        let selection = select(
            env(&[("ITESTS_ENDPOINT_URL", "http://localhost:4566")]),
            socket_missing,
        )
        .unwrap();
        assert_eq!(selection.kind, BackendKind::Local);
        assert!(
            selection
                .reason
                .ends_with("(ITESTS_ENDPOINT_URL is ignored unless ITESTS_BACKEND=endpoint)"),
            "{}",
            selection.reason
        );
    }

    #[test]
    fn explicit_values_select_their_kind() {
        assert_eq!(
            select(env(&[("ITESTS_BACKEND", "local")]), never_probed).unwrap(),
            Selection {
                kind: BackendKind::Local,
                reason: "ITESTS_BACKEND=local".to_owned()
            }
        );
        assert_eq!(
            select(env(&[("ITESTS_BACKEND", "localstack")]), answered).unwrap(),
            Selection {
                kind: BackendKind::LocalStack,
                reason: "ITESTS_BACKEND=localstack".to_owned()
            }
        );
        assert_eq!(
            select(
                env(&[
                    ("ITESTS_BACKEND", "endpoint"),
                    ("ITESTS_ENDPOINT_URL", "http://127.0.0.1:4566/")
                ]),
                never_probed
            )
            .unwrap(),
            Selection {
                kind: BackendKind::Endpoint,
                reason: "ITESTS_BACKEND=endpoint at http://127.0.0.1:4566".to_owned()
            }
        );
    }

    #[test]
    fn an_unknown_value_names_the_variable_and_the_allowed_values() {
        let err = select(env(&[("ITESTS_BACKEND", "docker")]), never_probed).unwrap_err();
        assert!(matches!(err, BackendError::UnknownBackend { .. }));
        assert_eq!(
            err.to_string(),
            "ITESTS_BACKEND=\"docker\" is not a backend: set it to localstack, local or endpoint, or leave it unset to use LocalStack when a Docker daemon answers and the embedded local backend otherwise"
        );
    }

    #[test]
    fn endpoint_without_a_url_says_to_set_it() {
        let err = select(env(&[("ITESTS_BACKEND", "endpoint")]), never_probed).unwrap_err();
        assert!(matches!(err, BackendError::MissingEndpointUrl));
        assert_eq!(
            err.to_string(),
            "ITESTS_BACKEND=endpoint needs ITESTS_ENDPOINT_URL: set it to the emulator's http(s) URL, such as http://localhost:4566"
        );
    }

    #[test]
    fn endpoint_with_a_url_that_is_not_http_is_refused() {
        let err = select(
            env(&[
                ("ITESTS_BACKEND", "endpoint"),
                ("ITESTS_ENDPOINT_URL", "localhost:4566"),
            ]),
            never_probed,
        )
        .unwrap_err();
        assert!(matches!(err, BackendError::BadEndpointUrl { .. }), "{err}");
        assert!(err.to_string().contains("http(s) URL"), "{err}");
    }

    #[test]
    fn explicit_localstack_without_docker_says_why_and_what_to_do() {
        let err = select(env(&[("ITESTS_BACKEND", "localstack")]), socket_missing).unwrap_err();
        assert!(matches!(err, BackendError::DockerUnavailable { .. }));
        let message = err.to_string();
        assert!(
            message.starts_with("no Docker daemon answered at unix:///var/run/docker.sock (the default socket): testcontainers could not set up its Docker client: failed to initialize a docker client: Socket not found: /var/run/docker.sock; "),
            "{message}"
        );
        assert!(message.contains("start Docker"), "{message}");
        assert!(message.contains("ITESTS_BACKEND=local"), "{message}");
    }

    #[test]
    fn each_backend_asks_for_the_build_it_runs() {
        assert_eq!(BackendKind::LocalStack.purpose(), Purpose::Aws);
        assert_eq!(BackendKind::Endpoint.purpose(), Purpose::Aws);
        assert_eq!(BackendKind::Local.purpose(), Purpose::Local);
        assert_eq!(
            BackendKind::LocalStack.deploy_options(),
            DeployOptions {
                purpose: Some(Purpose::Aws)
            }
        );
    }
}
