//! The shared, detached emulator behind `--local` commands: it outlives the command that
//! started it and is found again by later ones through a state file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::install::ensure_binary;
use super::process::{is_healthy, process_alive, terminate, Emulator, EmulatorState};
use super::{EmulatorError, FAKECLOUD_VERSION};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::process::free_port;

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
