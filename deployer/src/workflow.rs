//! The whole `deploy`: check what the stack adopts, build the archive, upload it, synthesise the
//! template, deploy the stack.

use std::collections::BTreeMap;

use crate::artifact::{self, Artifact, BuildError, BuildOptions, Purpose};
use crate::console::Console;
use crate::settings::{ArtifactLocation, SettingsError, StackSettings};
use crate::stack::{self, AdoptedNames, AdoptionError, DeployOutcome, StackError};
use crate::target::Target;
use crate::template::{self, Adoption};

/// Failures of a deploy, by stage.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("failed to build the function")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Stack(#[from] StackError),
    /// An existing table or bucket the settings (or the deployed stack) name cannot be adopted.
    #[error(transparent)]
    Adoption(#[from] AdoptionError),
}

/// What a deploy did to the stack; serialised (`--output json`) as `up_to_date`, `created` or
/// `updated`, the same words [`DeployResult::as_str`] and `Display` give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    /// The stack already ran the template: nothing was executed.
    UpToDate,
    Created,
    Updated,
}

impl DeployResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployResult::UpToDate => "up_to_date",
            DeployResult::Created => "created",
            DeployResult::Updated => "updated",
        }
    }
}

impl std::fmt::Display for DeployResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `deploy` reports, as text or JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeployReport {
    pub stack_name: String,
    pub target: String,
    pub result: DeployResult,
    pub changes: Vec<String>,
    pub outputs: BTreeMap<String, String>,
    pub artifact_bucket: String,
    pub artifact_key: String,
    pub artifact_sha256: String,
    pub artifact_uploaded: bool,
    /// The existing table and bucket the stack adopted (`adopted_table`, `adopted_bucket`;
    /// `null` when it has its own).
    #[serde(flatten)]
    pub adopted: AdoptedNames,
}

/// How `deploy` builds the function; the default suits every target the deployer runs the
/// function for itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeployOptions {
    /// Where the deployed function will run. `None` lets the target decide: real AWS gets an
    /// AWS build, any other target a host build (the local function host runs it on this
    /// machine). `Some(Purpose::Aws)` asks for an Amazon Linux 2023 compatible build on an
    /// endpoint too, for emulators that run the function in Lambda's own `provided.al2023`
    /// image, such as LocalStack. Real AWS always gets an AWS build.
    pub purpose: Option<Purpose>,
}

/// Deploys `settings` to `target`, building the function as `options` say. The existing table
/// and bucket the stack adopts are checked first ([`stack::check_adoption`]); then, on real AWS,
/// the account and region are shown and confirmed through `console` before anything changes.
pub async fn deploy(
    target: &Target,
    settings: &StackSettings,
    options: &DeployOptions,
    console: &mut dyn Console,
) -> Result<DeployReport, DeployError> {
    settings.validate()?;
    let adoption = stack::check_adoption(target, settings, console).await?;
    confirm_deploy(target, settings, &adoption, console).await?;
    let build_options = build_options(target.is_aws(), settings, options);
    let built = tokio::task::block_in_place(|| {
        artifact::build(&build_options, &mut |line| console.line(line))
    })?;
    console.line(&format!(
        "built {} ({} bytes, sha256 {})",
        built.zip_path.display(),
        built.size,
        built.sha256
    ));
    deploy_artifact(target, settings, &adoption, &built, console).await
}

/// Deploys `settings` to `target` with an archive built beforehand, for callers that deploy
/// several stacks from one build (builds running side by side would race on the archive).
/// Checks what the stack adopts and confirms on real AWS, as [`deploy`] does.
pub async fn deploy_built(
    target: &Target,
    settings: &StackSettings,
    built: &Artifact,
    console: &mut dyn Console,
) -> Result<DeployReport, DeployError> {
    settings.validate()?;
    let adoption = stack::check_adoption(target, settings, console).await?;
    confirm_deploy(target, settings, &adoption, console).await?;
    deploy_artifact(target, settings, &adoption, built, console).await
}

async fn confirm_deploy(
    target: &Target,
    settings: &StackSettings,
    adoption: &Adoption,
    console: &mut dyn Console,
) -> Result<(), StackError> {
    stack::confirm_on_aws(target, console, &deploy_action(settings, adoption)).await
}

/// What a deploy will do, for its confirmation: "deploy stack S", with what it adopts.
fn deploy_action(settings: &StackSettings, adoption: &Adoption) -> String {
    let adopted = AdoptedNames::from(adoption);
    let mut names = Vec::new();
    if let Some(table) = &adopted.table {
        names.push(format!("table {table}"));
    }
    if let Some(bucket) = &adopted.bucket {
        names.push(format!("bucket {bucket}"));
    }
    let mut action = format!("deploy stack {}", settings.stack_name);
    if !names.is_empty() {
        action.push_str(&format!(" adopting the existing {}", names.join(" and ")));
    }
    action
}

/// Uploads the archive, synthesises the template for its architecture and deploys the stack.
async fn deploy_artifact(
    target: &Target,
    settings: &StackSettings,
    adoption: &Adoption,
    built: &Artifact,
    console: &mut dyn Console,
) -> Result<DeployReport, DeployError> {
    let stack_name = settings.stack_name.as_str();
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
    let body = template::to_json_string(&template::synthesize_adopting(
        &settings, &location, adoption,
    ));
    let outcome = stack::deploy(target, stack_name, &body, console).await?;

    let (result, changes) = match &outcome {
        DeployOutcome::UpToDate { .. } => (DeployResult::UpToDate, Vec::new()),
        DeployOutcome::Deployed {
            created: true,
            changes,
            ..
        } => (DeployResult::Created, changes.clone()),
        DeployOutcome::Deployed { changes, .. } => (DeployResult::Updated, changes.clone()),
    };
    Ok(DeployReport {
        stack_name: stack_name.to_owned(),
        target: target.describe(),
        result,
        changes,
        outputs: outcome.outputs().clone(),
        artifact_bucket: uploaded.bucket,
        artifact_key: uploaded.key,
        artifact_sha256: built.sha256.clone(),
        artifact_uploaded: uploaded.uploaded,
        adopted: AdoptedNames::from(adoption),
    })
}

/// What to build for a deploy. Real AWS needs the requested architecture and an Amazon Linux
/// 2023 compatible binary. An emulator that runs Lambda's image needs such a binary too, but for
/// this machine's architecture, which its containers run without emulation. The local host
/// runs whatever this machine builds.
fn build_options(to_aws: bool, settings: &StackSettings, options: &DeployOptions) -> BuildOptions {
    if to_aws {
        return BuildOptions {
            architecture: Some(settings.architecture),
            purpose: Purpose::Aws,
        };
    }
    BuildOptions {
        architecture: None,
        purpose: options.purpose.unwrap_or(Purpose::Local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Architecture;

    #[test]
    fn a_deploy_report_keeps_its_json_field_names_and_values() {
        let report = DeployReport {
            stack_name: "usersync".to_owned(),
            target: "endpoint http://127.0.0.1:4566".to_owned(),
            result: DeployResult::UpToDate,
            changes: Vec::new(),
            outputs: BTreeMap::from([("TableName".to_owned(), "users".to_owned())]),
            artifact_bucket: "usersync-assets".to_owned(),
            artifact_key: "bootstrap-abc.zip".to_owned(),
            artifact_sha256: "abc".to_owned(),
            artifact_uploaded: false,
            adopted: AdoptedNames {
                table: Some("users".to_owned()),
                bucket: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "stack_name": "usersync",
                "target": "endpoint http://127.0.0.1:4566",
                "result": "up_to_date",
                "changes": [],
                "outputs": {"TableName": "users"},
                "artifact_bucket": "usersync-assets",
                "artifact_key": "bootstrap-abc.zip",
                "artifact_sha256": "abc",
                "artifact_uploaded": false,
                "adopted_table": "users",
                "adopted_bucket": null,
            })
        );
        for (result, text) in [
            (DeployResult::UpToDate, "up_to_date"),
            (DeployResult::Created, "created"),
            (DeployResult::Updated, "updated"),
        ] {
            assert_eq!(serde_json::to_value(result).unwrap(), text);
            assert_eq!(result.as_str(), text);
            assert_eq!(result.to_string(), text);
        }
    }

    #[test]
    fn the_confirmation_names_what_the_deploy_adopts() {
        use crate::template::{AdoptedBucket, AdoptedTable};

        let settings = StackSettings::default();
        assert_eq!(
            deploy_action(&settings, &Adoption::default()),
            "deploy stack usersync"
        );
        let adoption = Adoption {
            table: Some(AdoptedTable {
                name: "people".to_owned(),
                stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/people/stream/x"
                    .to_owned(),
                key_attribute: "id".to_owned(),
                kms_key_arn: None,
            }),
            bucket: Some(AdoptedBucket {
                name: "people-mirror".to_owned(),
                kms_key_arn: None,
            }),
        };
        assert_eq!(
            deploy_action(&settings, &adoption),
            "deploy stack usersync adopting the existing table people and bucket people-mirror"
        );
    }

    #[test]
    fn real_aws_always_gets_an_aws_build_of_the_settings_architecture() {
        let settings = StackSettings {
            architecture: Architecture::Arm64,
            ..StackSettings::default()
        };
        for purpose in [None, Some(Purpose::Local), Some(Purpose::Aws)] {
            assert_eq!(
                build_options(true, &settings, &DeployOptions { purpose }),
                BuildOptions {
                    architecture: Some(Architecture::Arm64),
                    purpose: Purpose::Aws,
                }
            );
        }
    }

    #[test]
    fn endpoints_get_a_host_build_unless_an_aws_build_is_asked_for() {
        let settings = StackSettings::default();
        assert_eq!(
            build_options(false, &settings, &DeployOptions::default()),
            BuildOptions {
                architecture: None,
                purpose: Purpose::Local,
            }
        );
        assert_eq!(
            build_options(
                false,
                &settings,
                &DeployOptions {
                    purpose: Some(Purpose::Aws)
                }
            ),
            BuildOptions {
                architecture: None,
                purpose: Purpose::Aws,
            }
        );
    }
}
