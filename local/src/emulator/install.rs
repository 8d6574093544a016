//! Finding the fakecloud binary, or installing the pinned version into usersync's cache.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{EmulatorError, FAKECLOUD_VERSION};
use deployer::project::cache_dir;

/// Profile settings for the install: optimisation level 1 compiles in about two thirds of the
/// time of a full release build and serves the tests and benchmarks well (the emulator is not
/// what they measure).
const INSTALL_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_INCREMENTAL", "false"),
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_root_is_versioned_inside_the_cache() {
        let root = install_root();
        assert!(root.ends_with(Path::new("fakecloud").join(FAKECLOUD_VERSION)));
        assert!(root.starts_with(cache_dir()));
    }
}
