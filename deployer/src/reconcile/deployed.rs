//! The deployed mirror: the stack's table and bucket and the deployed function's settings, so
//! that a repair writes exactly what the function would.

use std::collections::HashMap;

use usersync_function::Config;

use crate::stack::{aws_error, describe_stack, outputs_of, StackError};
use crate::target::Target;
use crate::template::output;

/// The stack as a repair sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedMirror {
    pub stack_name: String,
    /// The users table (the stack's own, or an adopted one).
    pub table: String,
    /// The mirror function's name.
    pub function: String,
    /// The function's settings as its process reads them at cold start; `config.bucket` is the
    /// bucket it writes to, `config.key_attribute` the table's hash key.
    pub config: Config,
    /// Every output of the stack, for callers that need more (the failure queue, the mapping).
    pub outputs: std::collections::BTreeMap<String, String>,
}

/// Why the deployed mirror could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeployedMirrorError {
    #[error("stack {stack} does not exist on {target}: deploy it with `cargo xtask deploy` first")]
    NoStack { stack: String, target: String },
    #[error("stack {stack} has no {output} output: deploy it again with `cargo xtask deploy`")]
    MissingOutput { stack: String, output: &'static str },
    #[error("the deployed function {function} has an invalid configuration: {reason}; deploy the stack again with `cargo xtask deploy`")]
    FunctionConfig { function: String, reason: String },
    #[error(transparent)]
    Stack(#[from] StackError),
}

impl DeployedMirror {
    /// Reads the stack's outputs and the deployed function's configuration.
    pub async fn load(target: &Target, stack_name: &str) -> Result<Self, DeployedMirrorError> {
        let stack = describe_stack(target, stack_name).await?.ok_or_else(|| {
            DeployedMirrorError::NoStack {
                stack: stack_name.to_owned(),
                target: target.describe(),
            }
        })?;
        let outputs = outputs_of(&stack);
        let output = |name: &'static str| {
            outputs
                .get(name)
                .cloned()
                .ok_or(DeployedMirrorError::MissingOutput {
                    stack: stack_name.to_owned(),
                    output: name,
                })
        };
        let table = output(output::TABLE_NAME)?;
        let function = output(output::FUNCTION_NAME)?;
        let config = function_config(target, &function).await?;
        Ok(Self {
            stack_name: stack_name.to_owned(),
            table,
            function,
            config,
            outputs,
        })
    }

    /// The output `name`, or the error naming it.
    pub fn output(&self, name: &'static str) -> Result<&str, DeployedMirrorError> {
        self.outputs
            .get(name)
            .map(String::as_str)
            .ok_or(DeployedMirrorError::MissingOutput {
                stack: self.stack_name.clone(),
                output: name,
            })
    }

    /// The bucket the function writes to.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The function's own S3 client on `target`: its retries are what the function's requests
    /// get.
    pub fn s3_store(&self, target: &Target) -> usersync_function::S3Store {
        usersync_function::S3Store::new(
            usersync_function::s3_client_from(&target.sdk, !target.is_aws()),
            self.config.bucket.clone(),
        )
    }

    /// The table, read consistently by its hash key.
    pub fn table_reader(&self, target: &Target) -> super::DynamoTable {
        super::DynamoTable::new(
            target.dynamodb(),
            self.table.clone(),
            self.config.key_attribute.clone(),
        )
    }
}

/// The deployed function's settings, as its process would read them at cold start.
pub async fn function_config(
    target: &Target,
    function: &str,
) -> Result<Config, DeployedMirrorError> {
    let configuration = target
        .lambda()
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(|err| {
            aws_error(
                format!("read the configuration of function {function}"),
                err,
            )
        })?;
    let variables: HashMap<String, String> = configuration
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    Config::from_lookup(|name| variables.get(name).cloned()).map_err(|err| {
        DeployedMirrorError::FunctionConfig {
            function: function.to_owned(),
            reason: err.to_string(),
        }
    })
}
