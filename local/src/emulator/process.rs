//! One emulator process: starting it on a free port and waiting for its health check,
//! restarting it in place, stopping it, the state a detached one is found again by, and the
//! process helpers the detached instance shares.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::front::EmulatorFront;
use super::install::EmulatorBinary;
use super::{EmulatorError, FAKECLOUD_VERSION};

/// What later commands need to find a detached emulator again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorState {
    pub addr: SocketAddr,
    pub pid: u32,
    pub version: String,
    pub log: PathBuf,
}

/// How long a freshly started emulator may take to answer its health check.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running emulator.
///
/// An emulator started with [`Emulator::start`] is stopped when dropped, so a test that fails
/// leaves no process behind. One started with [`Emulator::start_detached`] outlives this
/// process, for `cargo xtask deploy --local` and friends, and is found again through its state
/// file.
pub struct Emulator {
    addr: SocketAddr,
    pid: u32,
    child: Option<Child>,
    /// The executable, for [`Emulator::restart`].
    binary: PathBuf,
    log: PathBuf,
    /// In front of an emulator this process owns: makes `BatchWriteItem` stream (see
    /// [`crate::emulator::front`]). A detached emulator, used by `--local` commands that deploy
    /// and inspect but run no function, has none.
    front: Option<EmulatorFront>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .field("front", &self.front.as_ref().map(EmulatorFront::addr))
            .field("log", &self.log)
            .finish()
    }
}

impl Emulator {
    /// Starts an emulator on a free port of 127.0.0.1, owned by this process, logging to `log`.
    pub async fn start(binary: &EmulatorBinary, log: &Path) -> Result<Self, EmulatorError> {
        Self::spawn(binary, log, false).await
    }

    /// Starts an emulator that keeps running after this process exits.
    pub async fn start_detached(
        binary: &EmulatorBinary,
        log: &Path,
    ) -> Result<Self, EmulatorError> {
        Self::spawn(binary, log, true).await
    }

    async fn spawn(
        binary: &EmulatorBinary,
        log: &Path,
        detached: bool,
    ) -> Result<Self, EmulatorError> {
        // The port is free when probed; another process could take it before fakecloud binds,
        // so a start that fails early is tried again on a new port.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::spawn_once(binary, log, detached).await {
                Ok(emulator) => return Ok(emulator),
                Err(err @ EmulatorError::ExitedEarly { .. }) => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    async fn spawn_once(
        binary: &EmulatorBinary,
        log: &Path,
        detached: bool,
    ) -> Result<Self, EmulatorError> {
        let addr = free_port()?;
        let child = launch(&binary.path, addr, log, detached, false).await?;
        let pid = child.id();
        let front = if detached {
            None
        } else {
            match EmulatorFront::start(addr).await {
                Ok(front) => Some(front),
                Err(source) => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(EmulatorError::NoPort(source));
                }
            }
        };
        Ok(Self {
            addr,
            pid,
            child: (!detached).then_some(child),
            binary: binary.path.clone(),
            log: log.to_path_buf(),
            front,
        })
    }

    /// Kills the emulator and starts it again on the same address (its front, if any, stays),
    /// appending to the same log. fakecloud keeps its state in memory, so everything it held is
    /// gone afterwards: this is how tests make an emulator restart under a running command.
    pub async fn restart(&mut self) -> Result<(), EmulatorError> {
        let detached = self.child.is_none();
        match self.child.take() {
            Some(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                terminate(self.pid);
                let deadline = Instant::now() + Duration::from_secs(10);
                while process_alive(self.pid) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        // The old listener may take a moment to be released; a start that loses the race exits
        // early and is tried again.
        let mut attempts = 0;
        let child = loop {
            attempts += 1;
            match launch(&self.binary, self.addr, &self.log, detached, true).await {
                Ok(child) => break child,
                Err(EmulatorError::ExitedEarly { .. }) if attempts < 20 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        self.pid = child.id();
        self.child = (!detached).then_some(child);
        Ok(())
    }

    /// The address the emulator itself listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL to give AWS clients: every service is served on it (through the front,
    /// when there is one).
    pub fn endpoint_url(&self) -> String {
        match &self.front {
            Some(front) => front.endpoint_url(),
            None => self.direct_url(),
        }
    }

    /// The emulator's own URL, bypassing the front: for traffic that has no `BatchWriteItem`
    /// in it and should not pay for the extra hop (benchmarks of S3).
    pub fn direct_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file the emulator logs to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// What a later process needs to find this emulator.
    pub fn state(&self) -> EmulatorState {
        EmulatorState {
            addr: self.addr,
            pid: self.pid,
            version: FAKECLOUD_VERSION.to_owned(),
            log: self.log.clone(),
        }
    }

    /// Stops the emulator and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts fakecloud on `addr`, logging to `log` (appended to with `append`), and waits until it
/// answers its health check.
async fn launch(
    binary: &Path,
    addr: SocketAddr,
    log: &Path,
    detached: bool,
    append: bool,
) -> Result<Child, EmulatorError> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(|source| EmulatorError::Cache {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let log_file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .map_err(|source| EmulatorError::Cache {
            path: log.to_path_buf(),
            source,
        })?;
    let log_err = log_file
        .try_clone()
        .map_err(|source| EmulatorError::Cache {
            path: log.to_path_buf(),
            source,
        })?;
    let mut command = Command::new(binary);
    command
        .arg("--addr")
        .arg(addr.to_string())
        // Per-request logging at `info` competes with the code under test on 2 cores.
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    if detached {
        // Its own process group: a Ctrl-C in the terminal that started it does not stop it.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn().map_err(|source| EmulatorError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;

    let deadline = Instant::now() + READY_TIMEOUT;
    let http = reqwest::Client::new();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(EmulatorError::ExitedEarly {
                status: status.to_string(),
                log: log.to_path_buf(),
                tail: tail_of(log, 15),
            });
        }
        if answers_health(&http, addr).await {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EmulatorError::NotReady {
                addr,
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(super) fn free_port() -> Result<SocketAddr, EmulatorError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(EmulatorError::NoPort)?;
    listener.local_addr().map_err(EmulatorError::NoPort)
}

/// Whether an emulator answers its health endpoint at `addr`.
pub async fn is_healthy(addr: SocketAddr) -> bool {
    answers_health(&reqwest::Client::new(), addr).await
}

async fn answers_health(client: &reqwest::Client, addr: SocketAddr) -> bool {
    matches!(
        client
            .get(format!("http://{addr}/_fakecloud/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await,
        Ok(response) if response.status().is_success()
    )
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn process_alive(pid: u32) -> bool {
    // /proc/<pid> exists for live processes and zombies; a zombie has state Z.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(super) fn terminate(pid: u32) {
    // No libc dependency for one signal: the `kill` utility is on every Unix.
    let _ = Command::new("kill")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_on_loopback() {
        let addr = free_port().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn liveness_tracks_real_processes() {
        assert!(process_alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
