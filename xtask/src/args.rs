//! Flags every command shares: where to act, and how to talk.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use deployer::project::project_root;
use deployer::settings::{check_stack_name, SettingsError, StackSettings};
use deployer::target::{Target, TargetOptions};

/// The settings file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "usersync.toml";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `--stack`, `--region`, `--profile`, `--endpoint-url`, `--local`, `--yes`, `--output`, `--config`.
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// Stack name [default: from the config file, else "usersync"]
    #[arg(long, global = true, value_name = "NAME", value_parser = stack_name)]
    pub stack: Option<String>,
    /// AWS region [default: from the environment or profile; us-east-1 on emulators]
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile to take credentials and region from
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Any AWS-compatible endpoint, such as LocalStack's http://localhost:4566
    #[arg(long, global = true, value_name = "URL", conflicts_with = "local")]
    pub endpoint_url: Option<String>,
    /// The embedded emulator on 127.0.0.1, started (installed on first use) or reused
    #[arg(long, global = true)]
    pub local: bool,
    /// Answer yes to every confirmation (for scripts)
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Output format of the command's result
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Stack settings file [default: usersync.toml at the workspace root, when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl TargetArgs {
    /// Connects to the target the flags name (printing what connecting tells, such as the
    /// emulator being started).
    pub async fn connect(&self) -> Result<Target> {
        usersync_local::target::connect(&self.target_options(), self.local, &mut |line| {
            eprintln!("{line}")
        })
        .await
        .context("failed to reach the target")
    }

    pub fn target_options(&self) -> TargetOptions {
        TargetOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    /// Settings from the config file (if any), with `--stack` on top.
    pub fn settings(&self) -> Result<StackSettings> {
        let mut settings = match &self.config {
            Some(path) => {
                StackSettings::from_file(path).context("failed to load the stack settings")?
            }
            None => {
                let default = project_root().join(DEFAULT_CONFIG_FILE);
                if default.is_file() {
                    StackSettings::from_file(&default)
                        .context("failed to load the stack settings")?
                } else {
                    StackSettings::default()
                }
            }
        };
        if let Some(stack) = &self.stack {
            settings.stack_name = stack.clone();
        }
        settings.validate().context("invalid stack settings")?;
        Ok(settings)
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// `--stack`: refused while parsing (exit code 2) when it breaks the stack name rule.
fn stack_name(text: &str) -> Result<String, String> {
    match check_stack_name(text) {
        Ok(()) => Ok(text.to_owned()),
        Err(SettingsError::Invalid {
            reason, expected, ..
        }) => Err(format!(
            "{text:?} is not a valid stack name: {reason}; expected {expected}"
        )),
        Err(other) => Err(other.to_string()),
    }
}

/// A value parser for a whole number from `min` to `max`; the message names the range.
pub fn number_in<T>(
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |text| {
        let value: T = text
            .trim()
            .parse()
            .map_err(|_| format!("not a whole number: expected {min} to {max}"))?;
        if value < min || value > max {
            return Err(format!("{value} is out of range: expected {min} to {max}"));
        }
        Ok(value)
    }
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("failed to render the result as JSON")?
    );
    Ok(())
}
