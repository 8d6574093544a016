//! The function's process: spawning it with only Lambda's environment, the task that waits
//! for it (and kills it when asked, or when the handle is dropped), and the report of how it
//! ended with its last output lines.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::output::{pump, Output, OutputStream};
use super::HostError;

/// How long to wait, after the process exits, for its last output to be read.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// The running child process.
pub(super) struct Process {
    pub(super) pid: Option<u32>,
    exit: watch::Receiver<Option<ExitReport>>,
    // Sending, or dropping it with the `Process`, makes the waiter task kill the child.
    kill: oneshot::Sender<()>,
    waiter: JoinHandle<()>,
}

/// How a process ended, with its last output lines.
#[derive(Clone, Debug)]
pub(super) struct ExitReport {
    status: String,
    tail: Vec<String>,
}

impl fmt::Display for ExitReport {
    /// Lambda's wording, then the process's own last words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Runtime exited with error: {}", self.status)?;
        if !self.tail.is_empty() {
            write!(f, "\nLast output:")?;
            for line in &self.tail {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl Process {
    pub(super) fn spawn(
        binary: &Path,
        environment: &BTreeMap<String, String>,
        output: Arc<Output>,
    ) -> Result<Process, HostError> {
        let mut command = Command::new(binary);
        // Lambda starts the function with its own environment only, not the host's: this
        // keeps a developer's AWS_PROFILE and friends from leaking into the function.
        command
            .env_clear()
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = binary.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            command.current_dir(dir);
        }
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|source| spawn_error(binary, source))?;

        let pid = child.id();
        let readers = [
            child
                .stdout
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, OutputStream::Stdout, output.clone()))),
            child
                .stderr
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, OutputStream::Stderr, output.clone()))),
        ];
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        let waiter = tokio::spawn(async move {
            let status = wait_or_kill(&mut child, kill_rx).await;
            // Let the readers take in what the process wrote before it ended, so the report
            // carries its last words; bounded because a grandchild may hold the pipes open.
            for reader in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, reader).await;
            }
            let _ = exit_tx.send(Some(ExitReport {
                status,
                tail: output.tail(),
            }));
        });
        Ok(Process {
            pid,
            exit,
            kill,
            waiter,
        })
    }

    pub(super) fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits until the process has exited and its output has been read.
    pub(super) async fn exited(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        loop {
            if let Some(report) = exit.borrow_and_update().clone() {
                return report;
            }
            if exit.changed().await.is_err() {
                // The waiter task is gone without reporting: the runtime is shutting down.
                return ExitReport {
                    status: "unknown (the host is shutting down)".to_owned(),
                    tail: Vec::new(),
                };
            }
        }
    }

    /// Kills the process and waits until it has been reaped.
    pub(super) async fn stop(self) {
        let _ = self.kill.send(());
        let _ = self.waiter.await;
    }
}

/// Waits for the child to exit, killing it first if `kill` fires or is dropped. Returns the
/// exit status as Lambda words it ("exit status: 3", "signal: 9 (SIGKILL)").
async fn wait_or_kill(child: &mut Child, kill: oneshot::Receiver<()>) -> String {
    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = kill => None,
    };
    let status = match exited {
        Some(status) => status,
        None => {
            // Fails only if it has already exited, which `wait` then reports.
            let _ = child.start_kill();
            child.wait().await
        }
    };
    match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("unknown ({err})"),
    }
}

pub(super) fn check_binary(binary: &Path) -> Result<(), HostError> {
    let metadata = match std::fs::metadata(binary) {
        Ok(metadata) => metadata,
        Err(source) => return Err(spawn_error(binary, source)),
    };
    if !metadata.is_file() {
        return Err(HostError::NotExecutable {
            path: binary.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(HostError::NotExecutable {
                path: binary.to_owned(),
            });
        }
    }
    Ok(())
}

pub(super) fn spawn_error(binary: &Path, source: io::Error) -> HostError {
    let path = binary.to_owned();
    match source.kind() {
        io::ErrorKind::NotFound => HostError::BinaryMissing { path },
        io::ErrorKind::PermissionDenied => HostError::NotExecutable { path },
        _ => HostError::Spawn { path, source },
    }
}
