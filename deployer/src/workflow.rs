//! The whole `deploy`: build the archive, upload it, synthesise the template, deploy the stack.

use std::collections::BTreeMap;

use crate::artifact::{self, BuildError, BuildOptions, Purpose};
use crate::console::Console;
use crate::settings::{ArtifactLocation, SettingsError, StackSettings};
use crate::stack::{self, DeployOutcome, StackError};
use crate::target::Target;
use crate::template;

/// Failures of a deploy, by stage.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("failed to build the function: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Stack(#[from] StackError),
}

/// What `deploy` reports, as text or JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeployReport {
    pub stack_name: String,
    pub target: String,
    /// `up_to_date`, `created` or `updated`.
    pub result: &'static str,
    pub changes: Vec<String>,
    pub outputs: BTreeMap<String, String>,
    pub artifact_bucket: String,
    pub artifact_key: String,
    pub artifact_sha256: String,
    pub artifact_uploaded: bool,
}

/// Deploys `settings` to `target`. On real AWS the account and region are shown and confirmed
/// through `console` before anything changes.
pub async fn deploy(
    target: &Target,
    settings: &StackSettings,
    console: &mut dyn Console,
) -> Result<DeployReport, DeployError> {
    settings.validate()?;
    let stack_name = settings.stack_name.as_str();
    if target.is_aws() {
        let account = stack::account_id(target).await?;
        let question = format!(
            "deploy stack {stack_name} to AWS account {account} in {}?",
            target.region()
        );
        if !console.confirm(&question) {
            return Err(StackError::Declined(format!("deploy of stack {stack_name}")).into());
        }
    }

    // Real AWS needs the requested architecture and an Amazon Linux 2023 compatible binary; the
    // local host runs whatever this machine builds.
    let options = if target.is_aws() {
        BuildOptions {
            architecture: Some(settings.architecture),
            purpose: Purpose::Aws,
        }
    } else {
        BuildOptions {
            architecture: None,
            purpose: Purpose::Local,
        }
    };
    let built =
        tokio::task::block_in_place(|| artifact::build(&options, &mut |line| console.line(line)))?;
    console.line(&format!(
        "built {} ({} bytes, sha256 {})",
        built.zip_path.display(),
        built.size,
        built.sha256
    ));

    let uploaded = stack::upload_artifact(
        target,
        stack_name,
        &built.zip_path,
        &format!("bootstrap-{}.zip", built.sha256),
        console,
    )
    .await?;
    let mut settings = settings.clone();
    settings.architecture = built.architecture;
    let location = ArtifactLocation {
        bucket: uploaded.bucket.clone(),
        key: uploaded.key.clone(),
    };
    let body = template::to_json_string(&template::synthesize(&settings, &location));
    let outcome = stack::deploy(target, stack_name, &body, console).await?;

    let (result, changes) = match &outcome {
        DeployOutcome::UpToDate { .. } => ("up_to_date", Vec::new()),
        DeployOutcome::Deployed {
            created: true,
            changes,
            ..
        } => ("created", changes.clone()),
        DeployOutcome::Deployed { changes, .. } => ("updated", changes.clone()),
    };
    Ok(DeployReport {
        stack_name: stack_name.to_owned(),
        target: target.describe(),
        result,
        changes,
        outputs: outcome.outputs().clone(),
        artifact_bucket: uploaded.bucket,
        artifact_key: uploaded.key,
        artifact_sha256: built.sha256,
        artifact_uploaded: uploaded.uploaded,
    })
}
