//! One check of the archive that goes to AWS: `bootstrap` built with cargo-lambda for Lambda
//! (purpose AWS, so its glibc is checked against Amazon Linux 2023's), then that very binary
//! run once under the local function host against the embedded emulator, with one INSERT
//! stream record, and its object looked for in the emulator's S3.
//!
//! `cargo xtask test` runs [`check`]; [`build_for_aws`] and [`run_once`] are its two halves.
//! Only the host's own architecture can be run here; [`skipped_architecture`] says why the
//! other one is not built.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::emulator::{EmulatorBinary, EmulatorError};
use crate::runtime::function_host::{FunctionHost, FunctionSpec, HostError, OutputSink};
use crate::runtime::invoke::{InvokeOutcome, Invoker};
use deployer::artifact::{
    self, gnu_target, target_installed, Architecture, Artifact, BuildError, BuildOptions,
    CargoLambda, Purpose, Toolchain, MAX_AWS_GLIBC,
};
use deployer::stack::{aws_error, StackError};
use deployer::target::{Target, DEFAULT_LOCAL_REGION};
use usersync_function::config::{vars, DEFAULT_OBJECT_NAME};
use usersync_function::key::user_keys;
use usersync_function::testing::{stream_event, stream_record};

/// The bucket the function writes to in the check's private emulator.
const BUCKET: &str = "usersync-lambda-check";
/// The user the INSERT record carries.
const USER: &str = "lambda-check";
/// How long the one invocation may take.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures of the check, by stage.
#[derive(Debug, thiserror::Error)]
pub enum LambdaCheckError {
    #[error("failed to build the AWS archive with cargo-lambda")]
    Build(#[from] BuildError),
    #[error("failed to start an async runtime for the run under the local host")]
    Runtime(#[source] std::io::Error),
    #[error("failed to start the embedded emulator for the run under the local host")]
    Emulator(#[from] EmulatorError),
    #[error("failed to prepare or read the emulator's bucket {BUCKET}")]
    Bucket(#[source] StackError),
    #[error("failed to start the cargo-lambda build under the local function host")]
    Host(#[from] HostError),
    #[error("the cargo-lambda build of bootstrap did not process the INSERT record under the local host ({outcome}); its output is above")]
    Invocation { outcome: String },
    #[error("the cargo-lambda build of bootstrap answered {response} under the local host but wrote no object {key} to bucket {BUCKET}; its output is above")]
    ObjectMissing { key: String, response: String },
}

/// What [`build_for_aws`] built.
#[derive(Clone, Debug)]
pub struct AwsBuild {
    /// The binary and its zip, checked for Lambda (ELF machine and glibc).
    pub artifact: Artifact,
    /// The cargo-lambda that built it.
    pub cargo_lambda: CargoLambda,
    /// The newest glibc the binary needs, at most [`MAX_AWS_GLIBC`]; `None` when it needs none.
    pub required_glibc: Option<(u32, u32)>,
    pub duration: Duration,
}

/// What [`run_once`] saw.
#[derive(Clone, Debug)]
pub struct RunOnce {
    pub bucket: String,
    /// The object the INSERT record wrote.
    pub key: String,
    /// Its size in bytes.
    pub size: usize,
    pub duration: Duration,
}

/// Both halves of the check.
#[derive(Clone, Debug)]
pub struct LambdaCheckReport {
    pub build: AwsBuild,
    pub run: RunOnce,
}

impl LambdaCheckReport {
    /// One line for people: what was built, with what, what it needs, and what the run did.
    pub fn summary(&self) -> String {
        let build = &self.build;
        let glibc = match build.required_glibc {
            Some((major, minor)) => format!(
                "needs GLIBC_{major}.{minor} ≤ {}.{}",
                MAX_AWS_GLIBC.0, MAX_AWS_GLIBC.1
            ),
            None => "needs no glibc".to_owned(),
        };
        format!(
            "built {} with cargo-lambda {} ({}, {glibc}) in {}s, ran it once under the local host: object {} written to {} ({} bytes, {:.1}s)",
            build.artifact.binary_path.display(),
            build.cargo_lambda.version,
            build.artifact.architecture,
            build.duration.as_secs(),
            self.run.key,
            self.run.bucket,
            self.run.size,
            self.run.duration.as_secs_f64(),
        )
    }
}

/// Builds the AWS archive and runs its binary once: [`build_for_aws`], then [`run_once`] on a
/// runtime of its own. Call it outside any async runtime.
pub fn check(
    cargo_lambda: &Path,
    emulator: &EmulatorBinary,
    architecture: Architecture,
    progress: &mut dyn FnMut(&str),
) -> Result<LambdaCheckReport, LambdaCheckError> {
    let build = build_for_aws(cargo_lambda, architecture, progress)?;
    progress(&format!(
        "running {} once under the local function host against a private emulator",
        build.artifact.binary_path.display()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LambdaCheckError::Runtime)?;
    let run = runtime.block_on(run_once(&build.artifact.binary_path, emulator))?;
    Ok(LambdaCheckReport { build, run })
}

/// Builds `bootstrap` for Lambda on `architecture` with the cargo-lambda at `cargo_lambda`
/// (what `cargo xtask build` does with `CARGO_LAMBDA` pointing at it): the artifact build,
/// which refuses a binary of another instruction set or one needing a glibc newer than
/// [`MAX_AWS_GLIBC`], and packages it.
pub fn build_for_aws(
    cargo_lambda: &Path,
    architecture: Architecture,
    progress: &mut dyn FnMut(&str),
) -> Result<AwsBuild, LambdaCheckError> {
    let started = Instant::now();
    let cargo_lambda = CargoLambda::at(cargo_lambda)?;
    let toolchain = Toolchain::detect_with(Some(cargo_lambda.clone()))?;
    let options = BuildOptions {
        architecture: Some(architecture),
        purpose: Purpose::Aws,
    };
    let artifact = artifact::build_with(&options, &toolchain, progress)?;
    let required_glibc = artifact::required_glibc(&artifact.binary_path)?;
    Ok(AwsBuild {
        artifact,
        cargo_lambda,
        required_glibc,
        duration: started.elapsed(),
    })
}

/// Runs `binary` once under the local function host, against a private embedded emulator
/// started from `emulator`: creates a bucket, invokes the function with one INSERT stream
/// record and checks that the user's object is in the bucket. The function's output goes to
/// standard error, tagged `[bootstrap]`.
pub async fn run_once(
    binary: &Path,
    emulator: &EmulatorBinary,
) -> Result<RunOnce, LambdaCheckError> {
    let started = Instant::now();
    let log = deployer::project::state_dir().join("lambda-check-fakecloud.log");
    let emulator = crate::emulator::Emulator::start(emulator, &log).await?;
    let target = Target::for_endpoint(&emulator.endpoint_url(), DEFAULT_LOCAL_REGION);
    let s3 = target.s3();
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .map_err(|err| {
            LambdaCheckError::Bucket(aws_error(format!("create bucket {BUCKET}"), err))
        })?;

    let host = FunctionHost::start_with_output(
        function_spec(binary, &emulator.endpoint_url()),
        OutputSink::new(|line| eprintln!("[bootstrap] {line}")),
    )
    .await?;
    let record = stream_record("INSERT", USER, 1, Some(json!({"plan": {"S": "pro"}})));
    let outcome = host.invoke(stream_event(vec![record])).await;
    host.shutdown().await;
    let response = match outcome {
        InvokeOutcome::Response(response) if no_item_failures(&response) => response,
        other => {
            return Err(LambdaCheckError::Invocation {
                outcome: format!("{other:?}"),
            })
        }
    };

    let key = user_keys("", USER, DEFAULT_OBJECT_NAME)
        .map(|keys| keys.object)
        .unwrap_or_else(|_| format!("{USER}/{DEFAULT_OBJECT_NAME}"));
    let size = match s3.get_object().bucket(BUCKET).key(&key).send().await {
        Ok(object) => object
            .body
            .collect()
            .await
            .map(|body| body.into_bytes().len())
            .unwrap_or_default(),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Err(LambdaCheckError::ObjectMissing {
                key,
                response: response.to_string(),
            })
        }
        Err(err) => {
            return Err(LambdaCheckError::Bucket(aws_error(
                format!("get object {key} from bucket {BUCKET}"),
                err,
            )))
        }
    };
    emulator.stop();
    Ok(RunOnce {
        bucket: BUCKET.to_owned(),
        key,
        size,
        duration: started.elapsed(),
    })
}

/// The function as a deployed stack configures it, writing to [`BUCKET`] at `endpoint_url`.
fn function_spec(binary: &Path, endpoint_url: &str) -> FunctionSpec {
    let mut spec = FunctionSpec::new(PathBuf::from(binary), "usersync-lambda-check");
    spec.region = DEFAULT_LOCAL_REGION.to_owned();
    spec.memory_mb = 256;
    spec.timeout = INVOKE_TIMEOUT;
    spec.environment = [
        (vars::BUCKET_NAME, BUCKET),
        (vars::S3_FORCE_PATH_STYLE, "true"),
        ("AWS_ENDPOINT_URL", endpoint_url),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    spec
}

/// Whether a response reports no failed records (`batchItemFailures` empty or absent).
fn no_item_failures(response: &Value) -> bool {
    response
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

/// Why [`check`] does not build `architecture` here, for a line in the output: an
/// architecture other than the host's cannot run under the local host, and needs its
/// standard library to be built at all.
pub fn skipped_architecture(architecture: Architecture) -> String {
    let target = gnu_target(architecture);
    if target_installed(&target) {
        format!(
            "{architecture}: not built by this check: its binary cannot run on this machine's local function host (`cargo xtask build --{}` builds it)",
            match architecture {
                Architecture::Arm64 => "arm64",
                Architecture::X86_64 => "x86-64",
            }
        )
    } else {
        format!(
            "{architecture}: skipped: cannot be built here, the {target} standard library is not installed (`rustup target add {target}`; cargo-lambda needs it even with zig)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_points_the_function_at_the_bucket_on_the_emulator() {
        let spec = function_spec(Path::new("/t/bootstrap"), "http://127.0.0.1:1");
        assert_eq!(spec.environment[vars::BUCKET_NAME], BUCKET);
        assert_eq!(spec.environment["AWS_ENDPOINT_URL"], "http://127.0.0.1:1");
        assert_eq!(spec.environment[vars::S3_FORCE_PATH_STYLE], "true");
    }

    #[test]
    fn only_a_response_without_item_failures_passes() {
        assert!(no_item_failures(&json!({"batchItemFailures": []})));
        assert!(no_item_failures(&json!({})));
        assert!(!no_item_failures(
            &json!({"batchItemFailures": [{"itemIdentifier": "1"}]})
        ));
    }
}
