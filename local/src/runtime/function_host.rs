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
//! invocation in progress (or `init` before the first), like a function's log stream.
//!
//! The child runs in its own process group so that Ctrl-C in a terminal reaches the host,
//! which then stops it, rather than killing the function mid-invocation. It is killed when
//! the host drops it; should the host itself be killed outright, the child exits on its own
//! as soon as it next calls the Runtime API, which is gone.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::request_ids::{new_request_id, new_trace_id, random_u64};
use crate::runtime::invoke::{InvokeOutcome, Invoker};
use crate::runtime::runtime_api::{Completion, InitState, Invocation, RuntimeApi};

/// How long Lambda gives a runtime to initialise before it asks for its first event.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of the process's last output lines an exit report quotes.
const TAIL_LINES: usize = 10;
/// Longer lines are passed on in pieces, as Lambda splits long log lines.
const MAX_LINE_BYTES: u64 = 256 * 1024;
/// How long to wait, after the process exits, for its last output to be read.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Back-off before restarting a process that crashed or failed to start, doubling per
/// consecutive failure up to [`MAX_RESTART_DELAY`], so a broken function does not spin.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

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
    fn process_environment(&self, runtime_api: &str) -> BTreeMap<String, String> {
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

/// Why the host could not run the function.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the function binary {} does not exist: build it first (`cargo xtask build`)", path.display())]
    BinaryMissing { path: PathBuf },
    #[error("{} is not an executable file: point the host at the built function binary (`cargo xtask build` makes `bootstrap`)", path.display())]
    NotExecutable { path: PathBuf },
    #[error("could not start the function binary {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the function ARN {arn:?} cannot be sent in a Runtime API header: use a plain ARN such as arn:aws:lambda:us-east-1:000000000000:function:name")]
    InvalidArn { arn: String },
    #[error("could not listen for the Lambda Runtime API on 127.0.0.1: {0}")]
    Bind(#[source] io::Error),
}

/// Which stream a line of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// A line from the host itself about the function, such as Lambda's "Task timed out".
    Platform,
}

/// One line of the function's output.
#[derive(Clone, Copy, Debug)]
pub struct OutputLine<'a> {
    /// The invocation most recently handed to the process when the line was read (so a line
    /// written after an invocation ended still carries its id); `None` before the first.
    pub request_id: Option<&'a str>,
    pub stream: OutputStream,
    /// The line without its line ending.
    pub text: &'a str,
}

impl fmt::Display for OutputLine<'_> {
    /// `[<request id>] <text>`, or `[init] <text>` before the first invocation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.request_id.unwrap_or("init"), self.text)
    }
}

/// Where the function's output goes. Called from the tasks reading the process's pipes, so it
/// should be quick.
#[derive(Clone)]
pub struct OutputSink(Arc<dyn Fn(&OutputLine<'_>) + Send + Sync>);

impl OutputSink {
    pub fn new(sink: impl Fn(&OutputLine<'_>) + Send + Sync + 'static) -> OutputSink {
        OutputSink(Arc::new(sink))
    }

    /// Prints each line to this process's stderr as `[<request id>] <text>`.
    pub fn stderr() -> OutputSink {
        OutputSink::new(|line| eprintln!("{line}"))
    }

    /// Emits each line as a `tracing` event with target `function`.
    pub fn tracing() -> OutputSink {
        OutputSink::new(|line| {
            tracing::info!(
                target: "function",
                request_id = line.request_id.unwrap_or("init"),
                stream = ?line.stream,
                "{}",
                line.text
            )
        })
    }

    fn emit(&self, line: &OutputLine<'_>) {
        (self.0)(line)
    }
}

impl Default for OutputSink {
    fn default() -> OutputSink {
        OutputSink::stderr()
    }
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputSink")
    }
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

    async fn run(&self, payload: Value) -> InvokeOutcome {
        let mut current = self.current.lock().await;
        let environment = match self.ready_environment(&mut current).await {
            Ok(environment) => environment,
            Err(outcome) => return outcome,
        };
        let (outcome, environment) = self.invoke_in(environment, payload).await;
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
        outcome
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
                            message: err.to_string(),
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

    /// Runs one invocation in an initialised environment and gives the environment back.
    async fn invoke_in(
        &self,
        environment: Environment,
        payload: Value,
    ) -> (InvokeOutcome, Environment) {
        let request_id = new_request_id();
        let timeout = self.spec.timeout;
        let deadline_ms = SystemTime::now()
            .checked_add(timeout)
            .and_then(|deadline| deadline.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since_epoch| {
                u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
            });
        environment.output.set_request_id(&request_id);
        let invocation = Invocation {
            request_id: request_id.clone(),
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
    fn invoke(&self, payload: Value) -> impl std::future::Future<Output = InvokeOutcome> + Send {
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

/// The process's output: tags lines with the current request id, keeps the last few for exit
/// reports, and passes them to the sink.
struct Output {
    sink: OutputSink,
    request_id: Mutex<Option<String>>,
    tail: Mutex<VecDeque<String>>,
}

impl Output {
    fn new(sink: OutputSink) -> Output {
        Output {
            sink,
            request_id: Mutex::new(None),
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
        }
    }

    fn set_request_id(&self, request_id: &str) {
        *lock(&self.request_id) = Some(request_id.to_owned());
    }

    fn emit(&self, stream: OutputStream, text: &str) {
        if stream != OutputStream::Platform {
            let mut tail = lock(&self.tail);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            // Exit reports are read as plain text; colour codes from the function's logger
            // would only get in the way there.
            tail.push_back(strip_ansi(text));
        }
        let request_id = lock(&self.request_id).clone();
        self.sink.emit(&OutputLine {
            request_id: request_id.as_deref(),
            stream,
            text,
        });
    }

    fn tail(&self) -> Vec<String> {
        lock(&self.tail).iter().cloned().collect()
    }
}

/// The running child process.
struct Process {
    pid: Option<u32>,
    exit: watch::Receiver<Option<ExitReport>>,
    // Sending, or dropping it with the `Process`, makes the waiter task kill the child.
    kill: oneshot::Sender<()>,
    waiter: JoinHandle<()>,
}

/// How a process ended, with its last output lines.
#[derive(Clone, Debug)]
struct ExitReport {
    status: String,
    tail: Vec<String>,
}

impl fmt::Display for ExitReport {
    /// Lambda's wording, then the process's own last words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Runtime exited with error: {}", self.status)?;
        if !self.tail.is_empty() {
            write!(f, "\nLast output:")?;
            for line in &self.tail {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl Process {
    fn spawn(
        binary: &Path,
        environment: &BTreeMap<String, String>,
        output: Arc<Output>,
    ) -> Result<Process, HostError> {
        let mut command = Command::new(binary);
        // Lambda starts the function with its own environment only, not the host's: this
        // keeps a developer's AWS_PROFILE and friends from leaking into the function.
        command
            .env_clear()
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = binary.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            command.current_dir(dir);
        }
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|source| spawn_error(binary, source))?;

        let pid = child.id();
        let readers = [
            child
                .stdout
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, OutputStream::Stdout, output.clone()))),
            child
                .stderr
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, OutputStream::Stderr, output.clone()))),
        ];
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        let waiter = tokio::spawn(async move {
            let status = wait_or_kill(&mut child, kill_rx).await;
            // Let the readers take in what the process wrote before it ended, so the report
            // carries its last words; bounded because a grandchild may hold the pipes open.
            for reader in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, reader).await;
            }
            let _ = exit_tx.send(Some(ExitReport {
                status,
                tail: output.tail(),
            }));
        });
        Ok(Process {
            pid,
            exit,
            kill,
            waiter,
        })
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits until the process has exited and its output has been read.
    async fn exited(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        loop {
            if let Some(report) = exit.borrow_and_update().clone() {
                return report;
            }
            if exit.changed().await.is_err() {
                // The waiter task is gone without reporting: the runtime is shutting down.
                return ExitReport {
                    status: "unknown (the host is shutting down)".to_owned(),
                    tail: Vec::new(),
                };
            }
        }
    }

    /// Kills the process and waits until it has been reaped.
    async fn stop(self) {
        let _ = self.kill.send(());
        let _ = self.waiter.await;
    }
}

/// Waits for the child to exit, killing it first if `kill` fires or is dropped. Returns the
/// exit status as Lambda words it ("exit status: 3", "signal: 9 (SIGKILL)").
async fn wait_or_kill(child: &mut Child, kill: oneshot::Receiver<()>) -> String {
    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = kill => None,
    };
    let status = match exited {
        Some(status) => status,
        None => {
            // Fails only if it has already exited, which `wait` then reports.
            let _ = child.start_kill();
            child.wait().await
        }
    };
    match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("unknown ({err})"),
    }
}

/// Reads `pipe` line by line into `output` until the process closes it.
async fn pump(pipe: impl AsyncRead + Unpin, stream: OutputStream, output: Arc<Output>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                output.emit(stream, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

fn check_binary(binary: &Path) -> Result<(), HostError> {
    let metadata = match std::fs::metadata(binary) {
        Ok(metadata) => metadata,
        Err(source) => return Err(spawn_error(binary, source)),
    };
    if !metadata.is_file() {
        return Err(HostError::NotExecutable {
            path: binary.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(HostError::NotExecutable {
                path: binary.to_owned(),
            });
        }
    }
    Ok(())
}

fn spawn_error(binary: &Path, source: io::Error) -> HostError {
    let path = binary.to_owned();
    match source.kind() {
        io::ErrorKind::NotFound => HostError::BinaryMissing { path },
        io::ErrorKind::PermissionDenied => HostError::NotExecutable { path },
        _ => HostError::Spawn { path, source },
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

/// Removes ANSI escape sequences (colours, cursor moves) from `text`.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        // CSI sequences (`ESC [ … final`) end at a byte in '@'..='~'; other escapes are
        // two characters long.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
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
    fn strip_ansi_removes_colours_only() {
        assert_eq!(
            strip_ansi("\u{1b}[31mERROR\u{1b}[0m bucket \u{1b}[2mx\u{1b}[0m"),
            "ERROR bucket x"
        );
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
    }

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
