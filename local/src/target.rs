//! `--local`: the embedded emulator as a command's target, started (installing it first if
//! needed) or reused, then handed to the core as an address.

use deployer::target::{Target, TargetError, TargetOptions};

use crate::emulator::{self, EmulatorError};

/// Failures of resolving the target flags when `--local` is among them.
#[derive(Debug, thiserror::Error)]
pub enum LocalTargetError {
    #[error("--local and --endpoint-url exclude each other: choose one")]
    Conflict,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("failed to start the embedded emulator")]
    Emulator(#[source] EmulatorError),
}

/// Resolves the target flags: with `local`, the shared embedded emulator (started or reused,
/// `progress` told about each step); otherwise whatever [`Target::connect`] resolves, its
/// notices told to `progress`.
pub async fn connect(
    options: &TargetOptions,
    local: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Target, LocalTargetError> {
    if !local {
        let target = Target::connect(options).await?;
        // Endpoint overrides that were ignored, such as a leftover AWS_ENDPOINT_URL.
        for notice in &target.notices {
            progress(&format!("notice: {notice}"));
        }
        return Ok(target);
    }
    if options.endpoint_url.is_some() {
        return Err(LocalTargetError::Conflict);
    }
    let (state, started) = emulator::start_or_reuse(&emulator::state_file(), progress)
        .await
        .map_err(LocalTargetError::Emulator)?;
    if started {
        progress(&format!(
            "started the embedded emulator at http://{} (pid {})",
            state.addr, state.pid
        ));
    }
    Ok(Target::local_emulator(state.addr, options).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_and_an_endpoint_exclude_each_other_before_anything_starts() {
        let options = TargetOptions {
            endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..TargetOptions::default()
        };
        let err = connect(&options, true, &mut |line| {
            panic!("started something: {line}")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, LocalTargetError::Conflict), "{err:?}");
        assert_eq!(
            err.to_string(),
            "--local and --endpoint-url exclude each other: choose one"
        );
    }
}
