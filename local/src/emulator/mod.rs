//! The embedded AWS emulator: fakecloud, run as a separate process on 127.0.0.1.
//!
//! fakecloud is AGPL-licensed, so it is never linked: it is installed with `cargo install`
//! into a cache outside the build tree (once; it takes a while) and started as a child process.
//! A `fakecloud` named by `FAKECLOUD_BIN`, or found on `PATH`, is used instead when present.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use deployer::project::cache_dir;
use front::EmulatorFront;

pub mod front;
pub mod proxy;

/// The fakecloud release usersync is tested against.
pub const FAKECLOUD_VERSION: &str = "0.51.0";

/// How long a freshly started emulator may take to answer its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Profile settings for the install: optimisation level 1 compiles in about two thirds of the
/// time of a full release build and serves the tests and benchmarks well (the emulator is not
/// what they measure).
const INSTALL_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_INCREMENTAL", "false"),
];

/// Failures of finding, installing, starting or stopping the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "FAKECLOUD_BIN points at {0}, which does not exist: fix the path or unset FAKECLOUD_BIN"
    )]
    BinaryMissing(PathBuf),
    #[error("failed to run `cargo install fakecloud --version {FAKECLOUD_VERSION}`: {0}; is cargo on PATH?")]
    InstallSpawn(#[source] std::io::Error),
    #[error(
        "`cargo install fakecloud --version {FAKECLOUD_VERSION}` failed ({status}); its last lines:\n{tail}\n\
         fix the cause (disk space, registry access) and run again: the build resumes where it stopped"
    )]
    InstallFailed { status: String, tail: String },
    #[error("failed to use the emulator cache at {path}: {source}; set USERSYNC_CACHE_DIR to a writable directory")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find a free port on 127.0.0.1: {0}")]
    NoPort(#[source] std::io::Error),
    #[error("failed to start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the emulator exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    ExitedEarly {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the emulator at {addr} did not become healthy within {READY_TIMEOUT:?}; see its log {log}"
    )]
    NotReady { addr: SocketAddr, log: PathBuf },
    #[error("failed to read or write the emulator state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the binary came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinarySource {
    /// `FAKECLOUD_BIN`.
    Environment,
    /// A `fakecloud` on `PATH`.
    Path,
    /// usersync's own install cache.
    Cache,
}

/// A fakecloud executable ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulatorBinary {
    pub path: PathBuf,
    pub source: BinarySource,
}

/// The install root of the pinned version inside the cache.
pub fn install_root() -> PathBuf {
    cache_dir().join("fakecloud").join(FAKECLOUD_VERSION)
}

fn cached_binary() -> PathBuf {
    install_root().join("bin").join("fakecloud")
}

/// Finds an installed emulator without installing one.
pub fn find_binary() -> Result<Option<EmulatorBinary>, EmulatorError> {
    if let Some(path) = std::env::var_os("FAKECLOUD_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(Some(EmulatorBinary {
                path,
                source: BinarySource::Environment,
            }))
        } else {
            Err(EmulatorError::BinaryMissing(path))
        };
    }
    if let Some(path) = find_on_path("fakecloud") {
        return Ok(Some(EmulatorBinary {
            path,
            source: BinarySource::Path,
        }));
    }
    let cached = cached_binary();
    Ok(cached.is_file().then_some(EmulatorBinary {
        path: cached,
        source: BinarySource::Cache,
    }))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Finds the emulator, installing the pinned version into the cache first if there is none.
///
/// `progress` receives one line per step of the install (cargo's `Compiling …` lines, with a
/// running count and the elapsed time), so callers can show that a long install is alive.
pub fn ensure_binary(progress: &mut dyn FnMut(&str)) -> Result<EmulatorBinary, EmulatorError> {
    if let Some(binary) = find_binary()? {
        return Ok(binary);
    }
    install(progress)?;
    Ok(EmulatorBinary {
        path: cached_binary(),
        source: BinarySource::Cache,
    })
}

/// Installs the pinned fakecloud into the cache with `cargo install`.
///
/// Several processes may ask at once (parallel test binaries): a lock file makes the others wait
/// for the first one's install instead of building it twice. The build directory is kept in the
/// cache until the install succeeds, so an interrupted install resumes rather than restarts.
pub fn install(progress: &mut dyn FnMut(&str)) -> Result<(), EmulatorError> {
    let root = install_root();
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmulatorError::Cache { path, source }
    };
    fs::create_dir_all(&root).map_err(cache_err(&root))?;
    let lock_path = root.join("install.lock");
    let lock = File::create(&lock_path).map_err(cache_err(&lock_path))?;
    if lock.try_lock().is_err() {
        progress("another process is installing fakecloud; waiting for it to finish");
        lock.lock().map_err(cache_err(&lock_path))?;
    }
    if cached_binary().is_file() {
        return Ok(());
    }

    let build_dir = root.join("build");
    progress(&format!(
        "installing fakecloud {FAKECLOUD_VERSION} into {} (once per machine; about 20-30 minutes on 2 cores)",
        root.display()
    ));
    let mut command = deployer::project::cargo_command();
    command
        .args([
            "install",
            "fakecloud",
            "--locked",
            "--version",
            FAKECLOUD_VERSION,
            "--root",
        ])
        .arg(&root)
        .arg("--target-dir")
        .arg(&build_dir)
        .envs(INSTALL_PROFILE.iter().copied())
        // The caller may be running inside another cargo build; its settings must not leak in.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(EmulatorError::InstallSpawn)?;

    let started = Instant::now();
    let mut compiled = 0usize;
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = line.trim().to_owned();
            if line.starts_with("Compiling") {
                compiled += 1;
                let elapsed = started.elapsed().as_secs();
                progress(&format!(
                    "[{compiled} crates, {}m{:02}s] {line}",
                    elapsed / 60,
                    elapsed % 60
                ));
            }
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(EmulatorError::InstallSpawn)?;
    if !status.success() || !cached_binary().is_file() {
        return Err(EmulatorError::InstallFailed {
            status: status.to_string(),
            tail: tail.join("\n"),
        });
    }
    // Several GiB of intermediate artifacts; the binary is all that is needed from now on.
    let _ = fs::remove_dir_all(&build_dir);
    let elapsed = started.elapsed().as_secs();
    progress(&format!(
        "installed fakecloud {FAKECLOUD_VERSION} in {}m{:02}s",
        elapsed / 60,
        elapsed % 60
    ));
    Ok(())
}

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

/// What later commands need to find a detached emulator again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorState {
    pub addr: SocketAddr,
    pub pid: u32,
    pub version: String,
    pub log: PathBuf,
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

fn free_port() -> Result<SocketAddr, EmulatorError> {
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

/// The state file of the detached emulator used by `--local` commands.
pub fn state_file() -> PathBuf {
    deployer::project::state_dir().join("local-emulator.json")
}

/// Reads the state file; `None` when there is none or its emulator no longer answers.
pub async fn running_detached(state_path: &Path) -> Result<Option<EmulatorState>, EmulatorError> {
    let text = match fs::read_to_string(state_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EmulatorError::State {
                path: state_path.to_path_buf(),
                source,
            })
        }
    };
    // A state file from another version, or one that does not parse, is stale.
    let Ok(state) = serde_json::from_str::<EmulatorState>(&text) else {
        return Ok(None);
    };
    if state.version != FAKECLOUD_VERSION
        || !process_alive(state.pid)
        || !is_healthy(state.addr).await
    {
        return Ok(None);
    }
    Ok(Some(state))
}

/// Reuses the detached emulator named by `state_path`, or starts one and records it there.
pub async fn start_or_reuse(
    state_path: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(EmulatorState, bool), EmulatorError> {
    if let Some(state) = running_detached(state_path).await? {
        return Ok((state, false));
    }
    let binary = ensure_binary(progress)?;
    let log = state_path.with_file_name("fakecloud.log");
    let emulator = Emulator::start_detached(&binary, &log).await?;
    let state = emulator.state();
    let state_err = |source| EmulatorError::State {
        path: state_path.to_path_buf(),
        source,
    };
    if let Some(dir) = state_path.parent() {
        fs::create_dir_all(dir).map_err(state_err)?;
    }
    let json = serde_json::to_string_pretty(&state).expect("the state always serializes");
    fs::write(state_path, json).map_err(|source| EmulatorError::State {
        path: state_path.to_path_buf(),
        source,
    })?;
    Ok((state, true))
}

/// Stops the detached emulator recorded in `state_path`, if it runs; removes the state file.
/// Returns the state of the emulator that was stopped.
pub async fn stop_detached(state_path: &Path) -> Result<Option<EmulatorState>, EmulatorError> {
    let running = running_detached(state_path).await?;
    if let Some(state) = &running {
        terminate(state.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(state.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    match fs::remove_file(state_path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EmulatorError::State {
                path: state_path.to_path_buf(),
                source,
            })
        }
    }
    Ok(running)
}

fn process_alive(pid: u32) -> bool {
    // /proc/<pid> exists for live processes and zombies; a zombie has state Z.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn terminate(pid: u32) {
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
    fn install_root_is_versioned_inside_the_cache() {
        let root = install_root();
        assert!(root.ends_with(Path::new("fakecloud").join(FAKECLOUD_VERSION)));
        assert!(root.starts_with(cache_dir()));
    }

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

    #[tokio::test]
    async fn a_missing_or_stale_state_file_means_no_running_emulator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(running_detached(&path).await.unwrap(), None);
        fs::write(&path, "not json").unwrap();
        assert_eq!(running_detached(&path).await.unwrap(), None);
        let stale = EmulatorState {
            addr: free_port().unwrap(),
            pid: std::process::id(),
            version: FAKECLOUD_VERSION.to_owned(),
            log: dir.path().join("log"),
        };
        fs::write(&path, serde_json::to_string(&stale).unwrap()).unwrap();
        assert_eq!(
            running_detached(&path).await.unwrap(),
            None,
            "nothing answers on that port"
        );
        assert_eq!(stop_detached(&path).await.unwrap(), None);
        assert!(!path.exists(), "the stale state file is removed");
    }
}
