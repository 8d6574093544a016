//! Deploy times on the target, as `cargo xtask deploy` and `teardown` run them: a new stack,
//! a deploy with nothing changed, and a teardown.

use std::time::Instant;

use serde::Serialize;

use super::stats::Summary;
use super::BenchError;
use deployer::console::RecordingConsole;
use deployer::settings::StackSettings;
use deployer::stack;
use deployer::target::Target;
use deployer::workflow::{self, DeployOptions, DeployResult};

#[derive(Clone, Debug, Serialize)]
pub struct DeployRun {
    pub repetitions: usize,
    /// `deploy` of a stack that does not exist yet (build check, upload, change set, create).
    pub create_ms: Summary,
    /// `deploy` again with nothing changed: "up to date", nothing executed.
    pub noop_deploy_ms: Summary,
    /// `teardown`: empty the bucket, delete the stack, remove the archives.
    pub teardown_ms: Summary,
}

/// Runs `repetitions` create / no-op / teardown cycles on stacks named `<prefix>-<n>`.
pub async fn measure(
    target: &Target,
    repetitions: usize,
    prefix: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<DeployRun, BenchError> {
    let mut create = Vec::new();
    let mut noop = Vec::new();
    let mut teardown = Vec::new();
    for round in 0..repetitions {
        let settings = StackSettings {
            stack_name: format!("{prefix}-{round}"),
            ..StackSettings::default()
        };
        let mut console = RecordingConsole::agreeing();
        let options = DeployOptions::default();

        let started = Instant::now();
        let created = workflow::deploy(target, &settings, &options, &mut console).await?;
        create.push(started.elapsed().as_secs_f64() * 1000.0);
        if created.result != DeployResult::Created {
            return Err(BenchError::Unexpected(format!(
                "the first deploy of {} was {:?}, not a create",
                settings.stack_name,
                created.result.as_str()
            )));
        }

        let started = Instant::now();
        let again = workflow::deploy(target, &settings, &options, &mut console).await?;
        noop.push(started.elapsed().as_secs_f64() * 1000.0);
        if again.result != DeployResult::UpToDate {
            return Err(BenchError::Unexpected(format!(
                "the second deploy of {} was {:?}, not up to date",
                settings.stack_name,
                again.result.as_str()
            )));
        }

        let started = Instant::now();
        stack::teardown(target, &settings.stack_name, false, false, &mut console).await?;
        teardown.push(started.elapsed().as_secs_f64() * 1000.0);
        progress(&format!(
            "  round {}: create {:.0} ms, no-op deploy {:.0} ms, teardown {:.0} ms",
            round + 1,
            create[round],
            noop[round],
            teardown[round]
        ));
    }
    Ok(DeployRun {
        repetitions,
        create_ms: Summary::of(&create),
        noop_deploy_ms: Summary::of(&noop),
        teardown_ms: Summary::of(&teardown),
    })
}
