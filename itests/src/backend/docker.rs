//! Whether a Docker daemon answers: the LocalStack backend needs one for its own container and
//! for the function's Lambda containers.

use std::time::Duration;

use testcontainers::bollard::Docker;

/// The daemon address when `DOCKER_HOST` is unset, as the Docker CLI has it.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long a ping may take: a daemon that answers does so in milliseconds, and a socket that
/// accepts but never answers must not stall test selection.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The daemon address: `DOCKER_HOST` (`unix://…`, `tcp://…`), else [`DEFAULT_DOCKER_HOST`].
pub fn docker_host(lookup: impl Fn(&str) -> Option<String>) -> String {
    lookup("DOCKER_HOST")
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// The socket file of a `unix://` address; `None` for other schemes.
pub fn unix_socket_path(host: &str) -> Option<&str> {
    host.strip_prefix("unix://").filter(|path| !path.is_empty())
}

/// Whether the daemon named by this process's `DOCKER_HOST` (default
/// `unix:///var/run/docker.sock`) answers a ping within [`PING_TIMEOUT`].
pub async fn docker_daemon_answers() -> bool {
    daemon_answers_at(&docker_host(|name| std::env::var(name).ok()), PING_TIMEOUT).await
}

/// Whether the daemon at `host` answers `GET /_ping` with `OK` within `timeout`. Every failure
/// (an unsupported scheme, no socket, a refused or silent connection) is a `false`.
pub async fn daemon_answers_at(host: &str, timeout: Duration) -> bool {
    // bollard is the Docker client testcontainers itself uses, so both read an address the
    // same way.
    let Ok(docker) = Docker::connect_with_host(host) else {
        return false;
    };
    let docker = docker.with_timeout(timeout);
    matches!(
        tokio::time::timeout(timeout, docker.ping()).await,
        Ok(Ok(answer)) if answer.trim() == "OK"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::backend::tests::env;

    #[test]
    fn docker_host_defaults_to_the_standard_socket() {
        assert_eq!(docker_host(env(&[])), "unix:///var/run/docker.sock");
        assert_eq!(
            docker_host(env(&[("DOCKER_HOST", "  ")])),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(
            docker_host(env(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")])),
            "tcp://10.0.0.5:2375"
        );
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

    #[tokio::test]
    async fn a_missing_socket_does_not_answer() {
        assert!(
            !daemon_answers_at(
                "unix:///nonexistent/usersync-itests/docker.sock",
                PING_TIMEOUT
            )
            .await
        );
    }

    #[tokio::test]
    async fn an_unsupported_scheme_does_not_answer() {
        assert!(!daemon_answers_at("ftp://example.invalid", PING_TIMEOUT).await);
    }

    #[tokio::test]
    async fn a_refused_tcp_connection_does_not_answer() {
        // A port just released by a listener: nothing accepts there.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        assert!(!daemon_answers_at(&format!("tcp://127.0.0.1:{port}"), PING_TIMEOUT).await);
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
        let timeout = Duration::from_millis(300);
        assert!(!daemon_answers_at(&format!("tcp://127.0.0.1:{port}"), timeout).await);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the ping took {:?}",
            started.elapsed()
        );
        silent.abort();
    }
}
