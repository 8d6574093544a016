//! Whether a Docker daemon answers, found as testcontainers finds it: the LocalStack backend
//! needs one for its own container and for the function's Lambda containers.
//!
//! The decision is testcontainers' own: [`probe`] pings the daemon through
//! `testcontainers::core::client::docker_client_instance()`, the client that later starts the
//! LocalStack container, so the suite never says "no Docker" where testcontainers would find
//! one. What that client resolved is not public, so [`DockerEnvironment::resolve`] repeats
//! testcontainers 0.28's resolution (`src/core/env/config.rs`, `Config::load` and
//! `Config::docker_host`, with the `properties-config` feature this workspace enables) to say
//! *where* it looked and to pick the socket LocalStack mounts. In that order:
//!
//! 1. `tc.host` in `~/.testcontainers.properties`;
//! 2. `DOCKER_HOST`;
//! 3. `docker.host` in `~/.testcontainers.properties`;
//! 4. the first socket that exists of `/var/run/docker.sock`,
//!    `$XDG_RUNTIME_DIR/.docker/run/docker.sock`, `~/.docker/run/docker.sock` and
//!    `~/.docker/desktop/docker.sock` (Docker Desktop's);
//! 5. else `unix:///var/run/docker.sock`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deployer::errors::chain;
use testcontainers::bollard::Docker;
use testcontainers::core::client::docker_client_instance;

/// The daemon address when nothing names one, as testcontainers and the Docker CLI have it.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The daemon's standard socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// testcontainers' settings file, in the home directory.
pub const PROPERTIES_FILE: &str = ".testcontainers.properties";

/// How long a ping may take: a daemon that answers does so in milliseconds, and a socket that
/// accepts but never answers must not stall test selection.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Where testcontainers' daemon address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSource {
    /// `tc.host` in `~/.testcontainers.properties`.
    TcHostProperty,
    /// The `DOCKER_HOST` variable.
    DockerHostVariable,
    /// `docker.host` in `~/.testcontainers.properties`.
    DockerHostProperty,
    /// `/var/run/docker.sock`, which exists.
    DefaultSocket,
    /// A per-user socket that exists: `$XDG_RUNTIME_DIR/.docker/run/docker.sock`,
    /// `~/.docker/run/docker.sock` or `~/.docker/desktop/docker.sock` (Docker Desktop).
    UserSocket,
    /// Nothing named a daemon and none of the sockets exists.
    NoSocket,
}

impl fmt::Display for HostSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TcHostProperty => "tc.host in ~/.testcontainers.properties",
            Self::DockerHostVariable => "DOCKER_HOST",
            Self::DockerHostProperty => "docker.host in ~/.testcontainers.properties",
            Self::DefaultSocket => "the default socket",
            Self::UserSocket => "a per-user socket such as Docker Desktop's",
            Self::NoSocket => {
                "nothing names a daemon, and none of the sockets testcontainers tries exists"
            }
        })
    }
}

/// The daemon address testcontainers uses, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerHost {
    /// Such as `unix:///var/run/docker.sock` or `tcp://10.0.0.5:2375`.
    pub address: String,
    pub source: HostSource,
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.source)
    }
}

impl DockerHost {
    /// The standard socket, as if nothing else were set and it existed.
    pub fn default_socket() -> Self {
        Self {
            address: DEFAULT_DOCKER_HOST.to_owned(),
            source: HostSource::DefaultSocket,
        }
    }

    /// An address named by `DOCKER_HOST`.
    pub fn from_variable(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            source: HostSource::DockerHostVariable,
        }
    }

    /// The daemon's socket as a path on the daemon's own machine, for a bind mount into a
    /// container: a local daemon's socket is where the address points; Docker Desktop's
    /// per-user sockets are forwarders on the host, while its daemon (in a VM) serves
    /// `/var/run/docker.sock`; a remote daemon's socket is at the standard path over there.
    pub fn socket_to_mount(&self) -> String {
        match self.source {
            HostSource::UserSocket => DEFAULT_SOCKET.to_owned(),
            _ => unix_socket_path(&self.address)
                .unwrap_or(DEFAULT_SOCKET)
                .to_owned(),
        }
    }
}

/// What testcontainers reads to find the daemon, gathered so that [`Self::resolve`] is pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerEnvironment {
    /// `DOCKER_HOST` as set (testcontainers does not trim it or ignore a blank one).
    pub docker_host: Option<String>,
    /// `tc.host` from `~/.testcontainers.properties`.
    pub tc_host_property: Option<String>,
    /// `docker.host` from `~/.testcontainers.properties`.
    pub docker_host_property: Option<String>,
    /// The home directory.
    pub home: Option<PathBuf>,
    /// `XDG_RUNTIME_DIR`, when it is an absolute path (as etcetera, testcontainers' source
    /// for it, requires).
    pub runtime_dir: Option<PathBuf>,
}

impl DockerEnvironment {
    /// This process's environment and `~/.testcontainers.properties`.
    pub fn from_system() -> Self {
        let home = std::env::home_dir();
        let properties = home
            .as_deref()
            .and_then(|home| std::fs::read_to_string(home.join(PROPERTIES_FILE)).ok())
            .map(|text| parse_properties(&text))
            .unwrap_or_default();
        Self {
            docker_host: std::env::var("DOCKER_HOST").ok(),
            tc_host_property: properties.get("tc.host").cloned(),
            docker_host_property: properties.get("docker.host").cloned(),
            home,
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|dir| dir.is_absolute()),
        }
    }

    /// The address testcontainers connects to, in its order (see the module's documentation);
    /// `exists` says whether a socket file exists.
    pub fn resolve(&self, exists: impl Fn(&Path) -> bool) -> DockerHost {
        let named = [
            (&self.tc_host_property, HostSource::TcHostProperty),
            (&self.docker_host, HostSource::DockerHostVariable),
            (&self.docker_host_property, HostSource::DockerHostProperty),
        ];
        if let Some((address, source)) = named
            .into_iter()
            .find_map(|(value, source)| value.as_ref().map(|v| (v.clone(), source)))
        {
            return DockerHost { address, source };
        }
        let mut sockets = vec![(PathBuf::from(DEFAULT_SOCKET), HostSource::DefaultSocket)];
        if let Some(dir) = &self.runtime_dir {
            sockets.push((dir.join(".docker/run/docker.sock"), HostSource::UserSocket));
        }
        if let Some(home) = &self.home {
            sockets.push((home.join(".docker/run/docker.sock"), HostSource::UserSocket));
            sockets.push((
                home.join(".docker/desktop/docker.sock"),
                HostSource::UserSocket,
            ));
        }
        sockets
            .into_iter()
            .find(|(path, _)| exists(path))
            .map_or_else(
                || DockerHost {
                    address: DEFAULT_DOCKER_HOST.to_owned(),
                    source: HostSource::NoSocket,
                },
                |(path, source)| DockerHost {
                    address: format!("unix://{}", path.display()),
                    source,
                },
            )
    }
}

/// The keys and values of a Java properties file (the format of
/// `~/.testcontainers.properties`, read with the parser testcontainers uses); empty when it
/// cannot be read, in which case testcontainers' own client fails and says why.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    serde_java_properties::from_str(text).unwrap_or_default()
}

/// The socket file of a `unix://` address; `None` for other schemes.
pub fn unix_socket_path(host: &str) -> Option<&str> {
    host.strip_prefix("unix://").filter(|path| !path.is_empty())
}

/// Whether a Docker daemon answered, and where testcontainers looked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerProbe {
    pub host: DockerHost,
    /// `Ok` when the daemon answered the ping; else why not, in plain words.
    pub outcome: Result<(), String>,
}

impl DockerProbe {
    /// A daemon that answered at `host`.
    pub fn answered(host: DockerHost) -> Self {
        Self {
            host,
            outcome: Ok(()),
        }
    }

    /// No daemon answered at `host`, for `why`.
    pub fn unanswered(host: DockerHost, why: impl Into<String>) -> Self {
        Self {
            host,
            outcome: Err(why.into()),
        }
    }

    pub fn is_answered(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl fmt::Display for DockerProbe {
    /// `a Docker daemon answered at …` or `no Docker daemon answered at …: why`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(()) => write!(f, "a Docker daemon answered at {}", self.host),
            Err(why) => write!(f, "no Docker daemon answered at {}: {why}", self.host),
        }
    }
}

/// Pings the daemon through testcontainers' own client (the one that starts the LocalStack
/// container), within [`PING_TIMEOUT`], and says where it looked.
pub async fn probe() -> DockerProbe {
    let host = DockerEnvironment::from_system().resolve(Path::exists);
    let outcome = match tokio::time::timeout(PING_TIMEOUT, docker_client_instance()).await {
        Ok(Ok(docker)) => ping(docker, PING_TIMEOUT).await,
        Ok(Err(err)) => Err(format!(
            "testcontainers could not set up its Docker client: {}",
            chain(&err)
        )),
        Err(_) => Err(format!(
            "testcontainers did not set up its Docker client within {PING_TIMEOUT:?}"
        )),
    };
    DockerProbe { host, outcome }
}

/// Whether a daemon answers (testcontainers' resolution and client).
pub async fn docker_daemon_answers() -> bool {
    probe().await.is_answered()
}

/// Whether the daemon behind `docker` answers `GET /_ping` with `OK` within `timeout`; else
/// why not (no socket, a refused or silent connection, another answer).
pub async fn ping(docker: Docker, timeout: Duration) -> Result<(), String> {
    let docker = docker.with_timeout(timeout);
    match tokio::time::timeout(timeout, docker.ping()).await {
        Ok(Ok(answer)) if answer.trim() == "OK" => Ok(()),
        Ok(Ok(answer)) => Err(format!("it answered the ping with {answer:?}")),
        Ok(Err(err)) => Err(chain(&err)),
        Err(_) => Err(format!("no answer to a ping within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn nothing_exists(_: &Path) -> bool {
        false
    }

    fn home_only() -> DockerEnvironment {
        DockerEnvironment {
            home: Some(PathBuf::from("/home/dev")),
            runtime_dir: Some(PathBuf::from("/run/user/1000")),
            ..DockerEnvironment::default()
        }
    }

    #[test]
    fn with_nothing_set_the_first_existing_socket_wins_in_testcontainers_order() {
        let env = home_only();
        assert_eq!(
            env.resolve(|p| p == Path::new("/var/run/docker.sock")),
            DockerHost::default_socket()
        );
        let desktop = env.resolve(|p| {
            p == Path::new("/home/dev/.docker/run/docker.sock")
                || p == Path::new("/home/dev/.docker/desktop/docker.sock")
        });
        assert_eq!(desktop.address, "unix:///home/dev/.docker/run/docker.sock");
        assert_eq!(desktop.source, HostSource::UserSocket);
        let runtime = env.resolve(|p| p.starts_with("/run/user/1000"));
        assert_eq!(
            runtime.address,
            "unix:///run/user/1000/.docker/run/docker.sock"
        );
        let linux_desktop =
            env.resolve(|p| p == Path::new("/home/dev/.docker/desktop/docker.sock"));
        assert_eq!(
            linux_desktop.address,
            "unix:///home/dev/.docker/desktop/docker.sock"
        );
    }

    #[test]
    fn with_no_socket_it_is_the_default_address_and_says_nothing_was_found() {
        let host = home_only().resolve(nothing_exists);
        assert_eq!(host.address, "unix:///var/run/docker.sock");
        assert_eq!(host.source, HostSource::NoSocket);
        assert!(
            host.to_string()
                .starts_with("unix:///var/run/docker.sock (nothing names a daemon"),
            "{host}"
        );
    }

    #[test]
    fn tc_host_beats_docker_host_which_beats_docker_host_property() {
        let mut env = DockerEnvironment {
            docker_host_property: Some("tcp://property:2375".to_owned()),
            ..home_only()
        };
        let exists = |_: &Path| true;
        assert_eq!(env.resolve(exists).source, HostSource::DockerHostProperty);
        env.docker_host = Some("tcp://variable:2375".to_owned());
        assert_eq!(
            env.resolve(exists),
            DockerHost::from_variable("tcp://variable:2375")
        );
        env.tc_host_property = Some("tcp://tc:2375".to_owned());
        let host = env.resolve(exists);
        assert_eq!(host.address, "tcp://tc:2375");
        assert_eq!(
            host.to_string(),
            "tcp://tc:2375 (tc.host in ~/.testcontainers.properties)"
        );
    }

    #[test]
    fn docker_host_is_taken_as_set_like_testcontainers_does() {
        let env = DockerEnvironment {
            docker_host: Some(String::new()),
            ..home_only()
        };
        assert_eq!(env.resolve(|_| true), DockerHost::from_variable(""));
    }

    #[test]
    fn properties_are_read_as_java_properties() {
        let properties = parse_properties(
            "# testcontainers\ntc.host=tcp://tc:2375\ndocker.host : unix:///run/docker.sock\n",
        );
        assert_eq!(properties["tc.host"], "tcp://tc:2375");
        assert_eq!(properties["docker.host"], "unix:///run/docker.sock");
        assert!(parse_properties("").is_empty());
    }

    #[test]
    fn the_socket_to_mount_is_the_daemons_own() {
        assert_eq!(
            DockerHost::default_socket().socket_to_mount(),
            "/var/run/docker.sock"
        );
        let rootless = DockerHost::from_variable("unix:///run/user/1000/docker.sock");
        assert_eq!(rootless.socket_to_mount(), "/run/user/1000/docker.sock");
        let remote = DockerHost::from_variable("tcp://10.0.0.5:2375");
        assert_eq!(remote.socket_to_mount(), "/var/run/docker.sock");
        let desktop = DockerHost {
            address: "unix:///Users/dev/.docker/run/docker.sock".to_owned(),
            source: HostSource::UserSocket,
        };
        assert_eq!(desktop.socket_to_mount(), "/var/run/docker.sock");
    }

    #[test]
    fn unix_addresses_name_their_socket() {
        assert_eq!(
            unix_socket_path("unix:///run/user/1000/docker.sock"),
            Some("/run/user/1000/docker.sock")
        );
        assert_eq!(unix_socket_path("tcp://127.0.0.1:2375"), None);
        assert_eq!(unix_socket_path("unix://"), None);
    }

    #[test]
    fn a_probe_says_where_and_why() {
        let host = DockerHost::from_variable("tcp://10.1.2.3:2375");
        assert_eq!(
            DockerProbe::answered(host.clone()).to_string(),
            "a Docker daemon answered at tcp://10.1.2.3:2375 (DOCKER_HOST)"
        );
        let unanswered = DockerProbe::unanswered(host, "connection refused");
        assert!(!unanswered.is_answered());
        assert_eq!(
            unanswered.to_string(),
            "no Docker daemon answered at tcp://10.1.2.3:2375 (DOCKER_HOST): connection refused"
        );
    }

    #[tokio::test]
    async fn a_refused_tcp_connection_does_not_answer() {
        // A port just released by a listener: nothing accepts there.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let docker = Docker::connect_with_host(&format!("tcp://127.0.0.1:{port}")).expect("client");
        assert!(ping(docker, PING_TIMEOUT).await.is_err());
    }

    #[tokio::test]
    async fn a_daemon_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accepts connections and holds them open without a byte of answer.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = Instant::now();
        let docker = Docker::connect_with_host(&format!("tcp://127.0.0.1:{port}")).expect("client");
        let outcome = ping(docker, Duration::from_millis(300)).await;
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the ping took {:?}",
            started.elapsed()
        );
        silent.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_probe_returns_promptly_and_names_an_address() {
        // Whatever this machine has, the probe answers within its timeouts and says where.
        let started = Instant::now();
        let probe = probe().await;
        assert!(
            started.elapsed() < PING_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
        assert!(!probe.to_string().is_empty());
        if let Err(why) = &probe.outcome {
            assert!(!why.is_empty());
        }
    }
}
