//! The function to run and the configuration Lambda would run it with, and the environment
//! variables Lambda derives from that configuration for the process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::request_ids::random_u64;

/// How long Lambda gives a runtime to initialise before it asks for its first event.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The function to run and the configuration Lambda would run it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The executable, e.g. the built `bootstrap`.
    pub binary: PathBuf,
    pub function_name: String,
    /// Sent as `Lambda-Runtime-Invoked-Function-Arn`.
    pub function_arn: String,
    pub version: String,
    /// `Handler` of the function configuration, given to the process as `_HANDLER`.
    pub handler: String,
    pub memory_mb: u32,
    /// The function timeout, enforced per invocation.
    pub timeout: Duration,
    /// How long the process may take to ask for its first event.
    pub init_timeout: Duration,
    pub region: String,
    /// The function's `Environment.Variables`, plus whatever else the process needs from the
    /// caller: credentials (`AWS_ACCESS_KEY_ID`, …), `AWS_ENDPOINT_URL`, `RUST_LOG`.
    /// Variables Lambda reserves for itself (`AWS_REGION`, `AWS_LAMBDA_*`, …) are set from the
    /// other fields and win over these.
    pub environment: BTreeMap<String, String>,
    pub log_group: String,
    pub log_stream: String,
}

impl FunctionSpec {
    /// A spec with Lambda's defaults: version `$LATEST`, handler `bootstrap`, 128 MB, a 3 s
    /// timeout, `us-east-1`, and the ARN, log group and log stream derived from the name.
    pub fn new(binary: impl Into<PathBuf>, function_name: impl Into<String>) -> FunctionSpec {
        let function_name = function_name.into();
        let region = "us-east-1".to_owned();
        let version = "$LATEST".to_owned();
        FunctionSpec {
            binary: binary.into(),
            function_arn: format!("arn:aws:lambda:{region}:000000000000:function:{function_name}"),
            log_group: format!("/aws/lambda/{function_name}"),
            log_stream: format!("local/[{version}]{:016x}", random_u64()),
            function_name,
            version,
            handler: "bootstrap".to_owned(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            init_timeout: DEFAULT_INIT_TIMEOUT,
            region,
            environment: BTreeMap::new(),
        }
    }

    /// The environment Lambda gives a `provided.al2023` function, over `self.environment`.
    ///
    /// `AWS_EXECUTION_ENV` is left out on purpose: Lambda does not set it for OS-only runtimes.
    pub(super) fn process_environment(&self, runtime_api: &str) -> BTreeMap<String, String> {
        let task_root = self
            .binary
            .parent()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        let mut environment = self.environment.clone();
        let reserved = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", self.version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_LOG_GROUP_NAME", self.log_group.clone()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", self.log_stream.clone()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("_HANDLER", self.handler.clone()),
            ("LAMBDA_TASK_ROOT", task_root.clone()),
            ("LAMBDA_RUNTIME_DIR", task_root),
            ("TZ", ":UTC".to_owned()),
            ("LANG", "en_US.UTF-8".to_owned()),
            ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".to_owned()),
        ];
        for (name, value) in reserved {
            environment.insert(name.to_owned(), value);
        }
        environment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_variables_win_over_the_function_environment() {
        let mut spec = FunctionSpec::new("/opt/fn/bootstrap", "users");
        spec.environment
            .insert("AWS_REGION".into(), "eu-west-1".into());
        spec.environment.insert("BUCKET_NAME".into(), "b".into());
        let environment = spec.process_environment("127.0.0.1:9001");
        assert_eq!(environment["AWS_REGION"], "us-east-1");
        assert_eq!(environment["BUCKET_NAME"], "b");
        assert_eq!(environment["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(environment["LAMBDA_TASK_ROOT"], "/opt/fn");
        assert!(!environment.contains_key("AWS_EXECUTION_ENV"));
    }
}
