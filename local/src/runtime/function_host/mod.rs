//! Runs a Lambda function binary on this machine the way Lambda runs it: as a child process
//! with Lambda's environment, fetching its events from a [`RuntimeApi`] on 127.0.0.1.
//!
//! [`FunctionHost`] owns one execution environment (one process and its Runtime API) and
//! implements [`Invoker`]: one invocation at a time, the configured timeout enforced by
//! killing the process, a crashed or timed-out process replaced by a fresh one on the next
//! invocation, an init failure reported with the process's own words, and a rebuilt binary
//! picked up before the next invocation.
//!
//! Lines the process writes go to an [`OutputSink`] tagged with the request id of the
//! invocation in progress (or `init` before the first), like a function's log stream. Each
//! invocation has one request id, made when it starts: the `Lambda-Runtime-Aws-Request-Id` the
//! process receives, the tag of its output lines, and the id [`Invoker::invoke_reporting_id`]
//! reports (an invocation that fails before reaching the process, in a failed start, has one
//! too).
//!
//! The child runs in its own process group so that Ctrl-C in a terminal reaches the host,
//! which then stops it, rather than killing the function mid-invocation. It is killed when
//! the host drops it; should the host itself be killed outright, the child exits on its own
//! as soon as it next calls the Runtime API, which is gone.
//!
//! The host's state machine is here; the process it runs and the reading of its output are in
//! `process` and `output`, the function's configuration in `spec`.

mod output;
mod process;
mod spec;

pub use output::{OutputLine, OutputSink, OutputStream};
pub use spec::{FunctionSpec, DEFAULT_INIT_TIMEOUT};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::request_ids::{new_request_id, new_trace_id};
use crate::runtime::invoke::{InvokeOutcome, Invoked, Invoker};
use crate::runtime::runtime_api::{Completion, InitState, Invocation, RuntimeApi};
use output::Output;
use process::{check_binary, spawn_error, ExitReport, Process};

/// Back-off before restarting a process that crashed or failed to start, doubling per
/// consecutive failure up to [`MAX_RESTART_DELAY`], so a broken function does not spin.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

/// Why the host could not run the function.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the function binary {} does not exist: build it first (`cargo xtask build`)", path.display())]
    BinaryMissing { path: PathBuf },
    #[error("{} is not an executable file: point the host at the built function binary (`cargo xtask build` makes `bootstrap`)", path.display())]
    NotExecutable { path: PathBuf },
    #[error("could not start the function binary {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the function ARN {arn:?} cannot be sent in a Runtime API header: use a plain ARN such as arn:aws:lambda:us-east-1:000000000000:function:name")]
    InvalidArn { arn: String },
    #[error("could not listen for the Lambda Runtime API on 127.0.0.1")]
    Bind(#[source] io::Error),
}

/// How long a process took to start, measured from spawning it to its first
/// `/invocation/next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdStart {
    pub to_first_next: Duration,
}

/// Runs one function binary as Lambda would and invokes it; see the module documentation.
///
/// Outcomes beyond the function's own answer: a process that exits before asking for its
/// first event gives `FunctionError { error_type: "Runtime.ExitError" }` with its exit status
/// and last output lines; one that posts `/init/error` gives the error it posted; one that
/// takes longer than `init_timeout` to ask gives `TimedOut`. The process is then replaced on
/// the next invocation, after a back-off that grows while it keeps failing.
pub struct FunctionHost {
    spec: FunctionSpec,
    sink: OutputSink,
    // Held for a whole invocation: Lambda gives one environment one event at a time.
    current: tokio::sync::Mutex<Current>,
    // Readable while an invocation holds `current`.
    status: Mutex<Status>,
}

#[derive(Default)]
struct Current {
    environment: Option<Environment>,
    /// Crashes and failed starts since the last completed invocation; sets the back-off.
    failures: u32,
}

#[derive(Default)]
struct Status {
    pid: Option<u32>,
    cold_start: Option<ColdStart>,
}

impl FunctionHost {
    /// Starts the function with its output printed to stderr; see [`FunctionHost::start_with_output`].
    pub async fn start(spec: FunctionSpec) -> Result<FunctionHost, HostError> {
        FunctionHost::start_with_output(spec, OutputSink::default()).await
    }

    /// Checks the binary, starts its Runtime API and spawns it, sending its output to `sink`.
    ///
    /// Fails only when the function cannot be run at all; a function that fails to initialise
    /// is reported to the first invocation, as Lambda does.
    pub async fn start_with_output(
        mut spec: FunctionSpec,
        sink: OutputSink,
    ) -> Result<FunctionHost, HostError> {
        // The process runs in the binary's directory (Lambda's task root), so a relative path
        // would no longer name the binary there.
        spec.binary = std::path::absolute(&spec.binary)
            .map_err(|source| spawn_error(&spec.binary, source))?;
        check_binary(&spec.binary)?;
        if axum::http::HeaderValue::from_str(&spec.function_arn).is_err() {
            return Err(HostError::InvalidArn {
                arn: spec.function_arn,
            });
        }
        let environment = Environment::start(&spec, &sink).await?;
        let status = Status {
            pid: environment.process.pid,
            cold_start: None,
        };
        Ok(FunctionHost {
            spec,
            sink,
            current: tokio::sync::Mutex::new(Current {
                environment: Some(environment),
                failures: 0,
            }),
            status: Mutex::new(status),
        })
    }

    /// The spec the host runs, with `binary` made absolute.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// The id of the function's process, if one is running or about to be reused.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.status).pid
    }

    /// The start-up time of the most recent process that reached its first `/invocation/next`.
    pub fn last_cold_start(&self) -> Option<ColdStart> {
        lock(&self.status).cold_start
    }

    /// Stops the function's process and waits until it has exited. A later invocation starts
    /// a fresh one (a cold start).
    pub async fn shutdown(&self) {
        let mut current = self.current.lock().await;
        if let Some(environment) = current.environment.take() {
            environment.stop().await;
        }
        lock(&self.status).pid = None;
    }

    async fn run(&self, payload: Value) -> Invoked {
        let request_id = new_request_id();
        let mut current = self.current.lock().await;
        let environment = match self.ready_environment(&mut current).await {
            Ok(environment) => environment,
            Err(outcome) => {
                return Invoked {
                    request_id,
                    outcome,
                }
            }
        };
        let (outcome, environment) = self.invoke_in(environment, &request_id, payload).await;
        match outcome {
            InvokeOutcome::Response(_) | InvokeOutcome::FunctionError { .. } => {
                current.failures = 0;
                current.environment = Some(environment);
            }
            InvokeOutcome::Crashed { .. } => {
                current.failures += 1;
                self.retire(environment).await;
            }
            InvokeOutcome::TimedOut { .. } => self.retire(environment).await,
        }
        Invoked {
            request_id,
            outcome,
        }
    }

    /// The environment for the next invocation, initialised: the current one if it is still
    /// usable, else a new one. A failure to initialise is the invocation's outcome.
    async fn ready_environment(&self, current: &mut Current) -> Result<Environment, InvokeOutcome> {
        let reusable = match current.environment.take() {
            Some(environment) if environment.binary_rebuilt(&self.spec.binary) => {
                environment.platform_line("the function binary was rebuilt; starting it afresh");
                environment.stop().await;
                None
            }
            // It died between invocations after initialising: like Lambda, start a new one
            // quietly. (One that died while initialising is reported below.)
            Some(environment)
                if environment.process.has_exited()
                    && matches!(environment.api.init_state(), InitState::Ready { .. }) =>
            {
                None
            }
            other => other,
        };
        let environment = match reusable {
            Some(environment) => environment,
            None => {
                tokio::time::sleep(restart_delay(current.failures)).await;
                match Environment::start(&self.spec, &self.sink).await {
                    Ok(environment) => environment,
                    Err(err) => {
                        current.failures += 1;
                        lock(&self.status).pid = None;
                        // Lambda's error when it cannot execute the bootstrap.
                        return Err(InvokeOutcome::FunctionError {
                            error_type: "Runtime.InvalidEntrypoint".to_owned(),
                            message: deployer::errors::chain(&err),
                        });
                    }
                }
            }
        };
        lock(&self.status).pid = environment.process.pid;

        enum Init {
            State(InitState),
            Exited(ExitReport),
            TimedOut,
        }
        let init = tokio::select! {
            // Checked first: a runtime that reports an init error exits right after, and the
            // report is the better explanation.
            biased;
            state = environment.api.initialised() => Init::State(state),
            exit = environment.process.exited() => Init::Exited(exit),
            _ = tokio::time::sleep(self.spec.init_timeout) => Init::TimedOut,
        };
        let failure = match init {
            Init::State(InitState::Ready { at }) => {
                if !environment.cold_start_recorded {
                    lock(&self.status).cold_start = Some(ColdStart {
                        to_first_next: at.saturating_duration_since(environment.spawned_at),
                    });
                }
                let mut environment = environment;
                environment.cold_start_recorded = true;
                return Ok(environment);
            }
            Init::State(InitState::Failed(report)) => InvokeOutcome::FunctionError {
                error_type: report.error_type,
                message: report.error_message,
            },
            // Still `Initialising` cannot come out of `initialised()`; treat it as a timeout.
            Init::State(InitState::Initialising) | Init::TimedOut => {
                environment.platform_line(&format!(
                    "Init timed out after {:.2} seconds",
                    self.spec.init_timeout.as_secs_f64()
                ));
                InvokeOutcome::TimedOut {
                    after: self.spec.init_timeout,
                }
            }
            // Lambda's error for a runtime that exits before asking for an event.
            Init::Exited(exit) => InvokeOutcome::FunctionError {
                error_type: "Runtime.ExitError".to_owned(),
                message: exit.to_string(),
            },
        };
        current.failures += 1;
        self.retire(environment).await;
        Err(failure)
    }

    /// Runs one invocation, as `request_id`, in an initialised environment and gives the
    /// environment back.
    async fn invoke_in(
        &self,
        environment: Environment,
        request_id: &str,
        payload: Value,
    ) -> (InvokeOutcome, Environment) {
        let timeout = self.spec.timeout;
        let deadline_ms = SystemTime::now()
            .checked_add(timeout)
            .and_then(|deadline| deadline.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since_epoch| {
                u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
            });
        environment.output.set_request_id(request_id);
        let invocation = Invocation {
            request_id: request_id.to_owned(),
            payload: serde_json::to_vec(&payload).unwrap_or_default().into(),
            deadline_ms,
            invoked_function_arn: self.spec.function_arn.clone(),
            trace_id: new_trace_id(),
            client_context: None,
            cognito_identity: None,
        };
        let pending = match environment.api.submit(invocation) {
            Ok(pending) => pending,
            // The ARN was checked at start and request ids are random, so this is a bug.
            Err(err) => {
                let outcome = InvokeOutcome::FunctionError {
                    error_type: "Runtime.HostError".to_owned(),
                    message: err.to_string(),
                };
                return (outcome, environment);
            }
        };

        let outcome = tokio::select! {
            // An answer that arrived just before an exit or the deadline still counts.
            biased;
            completion = pending.completion() => match completion {
                Some(Completion::Response(body)) => InvokeOutcome::Response(response_value(&body)),
                Some(Completion::Error(report)) => InvokeOutcome::FunctionError {
                    error_type: report.error_type,
                    message: report.error_message,
                },
                None => InvokeOutcome::Crashed {
                    message: format!("RequestId: {request_id} Error: the Runtime API closed"),
                },
            },
            exit = environment.process.exited() => {
                let message = format!("RequestId: {request_id} Error: {exit}");
                environment.platform_line(&message);
                InvokeOutcome::Crashed { message }
            }
            _ = tokio::time::sleep(timeout) => {
                environment.platform_line(&format!(
                    "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                    timeout.as_secs_f64()
                ));
                InvokeOutcome::TimedOut { after: timeout }
            }
        };
        (outcome, environment)
    }

    /// Stops a process that must not be used again.
    async fn retire(&self, environment: Environment) {
        environment.stop().await;
        lock(&self.status).pid = None;
    }
}

impl Invoker for FunctionHost {
    fn invoke_reporting_id(
        &self,
        payload: Value,
    ) -> impl std::future::Future<Output = Invoked> + Send {
        self.run(payload)
    }
}

/// One execution environment: a process and the Runtime API it talks to.
struct Environment {
    api: RuntimeApi,
    process: Process,
    output: Arc<Output>,
    spawned_at: Instant,
    binary_modified: Option<SystemTime>,
    cold_start_recorded: bool,
}

impl Environment {
    async fn start(spec: &FunctionSpec, sink: &OutputSink) -> Result<Environment, HostError> {
        let api = RuntimeApi::bind().await.map_err(HostError::Bind)?;
        let output = Arc::new(Output::new(sink.clone()));
        let binary_modified = modified(&spec.binary);
        let spawned_at = Instant::now();
        let environment = spec.process_environment(&api.address().to_string());
        let process = Process::spawn(&spec.binary, &environment, output.clone())?;
        Ok(Environment {
            api,
            process,
            output,
            spawned_at,
            binary_modified,
            cold_start_recorded: false,
        })
    }

    /// Whether the binary on disk is not the one this process runs. A binary that is missing
    /// right now (mid-rebuild) does not count: the running process is still good.
    fn binary_rebuilt(&self, binary: &Path) -> bool {
        match modified(binary) {
            Some(now) => self.binary_modified != Some(now),
            None => false,
        }
    }

    fn platform_line(&self, text: &str) {
        self.output.emit(OutputStream::Platform, text);
    }

    /// Kills the process, waits for it to exit, then drops the Runtime API.
    async fn stop(self) {
        self.process.stop().await;
    }
}

fn modified(binary: &Path) -> Option<SystemTime> {
    std::fs::metadata(binary).and_then(|m| m.modified()).ok()
}

/// How long to wait before starting a process after `failures` consecutive failures.
fn restart_delay(failures: u32) -> Duration {
    match failures.checked_sub(1) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_RESTART_DELAY
            .saturating_mul(1 << doublings.min(16))
            .min(MAX_RESTART_DELAY),
    }
}

/// The invocation's response body as JSON: `null` when empty, a string when not JSON.
fn response_value(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Locks `mutex`, carrying on after a panic elsewhere: every critical section leaves the data
/// consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_value_keeps_json_and_wraps_the_rest() {
        assert_eq!(response_value(b""), Value::Null);
        assert_eq!(response_value(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(
            response_value(b"not json"),
            Value::String("not json".into())
        );
    }

    #[test]
    fn restart_delay_doubles_per_failure_up_to_the_cap() {
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(4), Duration::from_millis(800));
        assert_eq!(restart_delay(9), MAX_RESTART_DELAY);
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }
}
