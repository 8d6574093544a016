//! Every error chain is printed once.
//!
//! `main` prints a failure as one line, the error and each of its sources joined by `": "`
//! ([`crate::error_line`]). So an error's message leaves its source out: a message that also
//! interpolated its source (`#[error("failed to X: {source}")]` on a `#[source]` field) would
//! print the cause twice. Three checks keep it so:
//!
//! - a scan of the workspace's sources finds every `thiserror` type and fails on a message that
//!   interpolates a field thiserror takes as the source (`#[source]`, `#[from]`, or a field
//!   named `source`);
//! - [`TYPES`] lists every one of those types by name with representative errors, covering at
//!   least every variant that has a source, and the scan fails the test when a type or such a
//!   variant is missing from it (a new error type must be added here);
//! - each representative error is printed as `main` prints it, and no layer of the chain may
//!   contain the text of a layer below it.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use deployer::artifact::BuildError;
use deployer::reconcile::{
    DeployedMirrorError, MergeError, ReconcileError, StateError, UserRepairError,
};
use deployer::replay::{BatchReadError, MessageError, ReplayError};
use deployer::settings::SettingsError;
use deployer::stack::{Adoptable, AdoptionError, StackError};
use deployer::streams::reader::ReadError;
use deployer::streams::record::MissingSequenceNumber;
use deployer::target::TargetError;
use deployer::template::TemplateError;
use deployer::workflow::DeployError;
use itests::backend::BackendError;
use usersync_bench::cgroup::{CgroupError, Unusable};
use usersync_bench::lambda_sized::LambdaSkip;
use usersync_bench::BenchError;
use usersync_function::config::ConfigError;
use usersync_function::handler::NotAStreamsEvent;
use usersync_function::key::KeyTooLong;
use usersync_function::plan::SkipReason;
use usersync_function::store::StoreError;
use usersync_local::dev::DevError;
use usersync_local::emulator::proxy::{
    full_body, BoxFuture, Intercepted, Interceptor, PassThrough, ProxyBody, ReverseProxy, Upstream,
    UpstreamError,
};
use usersync_local::emulator::EmulatorError;
use usersync_local::lambda_check::LambdaCheckError;
use usersync_local::mapping::destination::DestinationError;
use usersync_local::mapping::pipeline::PipelineError;
use usersync_local::mapping::poller::PollerError;
use usersync_local::mapping::settings::MappingError;
use usersync_local::runtime::function_host::HostError;
use usersync_local::runtime::runtime_api::SubmitError;
use usersync_local::target::LocalTargetError;

use crate::error_line;
use crate::fuzz::FuzzError;
use crate::tools::ToolError;

/// How a listed error type is checked.
enum Coverage {
    /// Representative errors of the type: every variant that has a source, at least.
    Samples(fn() -> Vec<Sample>),
    /// A type private to its crate, which cannot be built here; allowed only while the scan
    /// finds no source in it. The text says where it is.
    Private(&'static str),
}

/// Every `thiserror` type in the workspace, by name.
const TYPES: &[(&str, Coverage)] = &[
    // xtask
    ("FuzzError", Coverage::Samples(fuzz_errors)),
    ("ToolError", Coverage::Samples(tool_errors)),
    // deployer
    ("StackError", Coverage::Samples(stack_errors)),
    ("DeployError", Coverage::Samples(deploy_errors)),
    ("AdoptionError", Coverage::Samples(adoption_errors)),
    ("MessageError", Coverage::Samples(message_errors)),
    ("ReplayError", Coverage::Samples(replay_errors)),
    ("BatchReadError", Coverage::Samples(batch_read_errors)),
    ("TargetError", Coverage::Samples(target_errors)),
    ("TemplateError", Coverage::Samples(template_errors)),
    ("BuildError", Coverage::Samples(build_errors)),
    ("SettingsError", Coverage::Samples(settings_errors)),
    ("ReadError", Coverage::Samples(read_errors)),
    (
        "DeployedMirrorError",
        Coverage::Samples(deployed_mirror_errors),
    ),
    ("UserRepairError", Coverage::Samples(user_repair_errors)),
    ("ReconcileError", Coverage::Samples(reconcile_errors)),
    ("StateError", Coverage::Samples(state_errors)),
    ("MergeError", Coverage::Samples(merge_errors)),
    (
        "MissingSequenceNumber",
        Coverage::Samples(missing_sequence_numbers),
    ),
    // usersync-function
    ("KeyTooLong", Coverage::Samples(key_too_long)),
    ("StoreError", Coverage::Samples(store_errors)),
    ("SkipReason", Coverage::Samples(skip_reasons)),
    ("ConfigError", Coverage::Samples(config_errors)),
    ("NotAStreamsEvent", Coverage::Samples(not_a_streams_event)),
    // usersync-local
    ("DevError", Coverage::Samples(dev_errors)),
    ("HostError", Coverage::Samples(host_errors)),
    ("SubmitError", Coverage::Samples(submit_errors)),
    ("EmulatorError", Coverage::Samples(emulator_errors)),
    ("UpstreamError", Coverage::Samples(upstream_errors)),
    (
        "ResetOnPurpose",
        Coverage::Private("local/src/emulator/proxy.rs: the proxy's reason to drop a connection"),
    ),
    ("DestinationError", Coverage::Samples(destination_errors)),
    ("PipelineError", Coverage::Samples(pipeline_errors)),
    ("PollerError", Coverage::Samples(poller_errors)),
    ("MappingError", Coverage::Samples(mapping_errors)),
    ("LocalTargetError", Coverage::Samples(local_target_errors)),
    ("LambdaCheckError", Coverage::Samples(lambda_check_errors)),
    // usersync-bench
    ("BenchError", Coverage::Samples(bench_errors)),
    ("Unusable", Coverage::Samples(cgroup_unusable)),
    ("CgroupError", Coverage::Samples(cgroup_errors)),
    ("LambdaSkip", Coverage::Samples(lambda_skips)),
    // itests
    ("BackendError", Coverage::Samples(backend_errors)),
];

/// One representative error and the variant it is (its `Debug` name).
struct Sample {
    variant: String,
    error: anyhow::Error,
}

fn sample<E>(error: E) -> Sample
where
    E: StdError + Debug + Send + Sync + 'static,
{
    let debug = format!("{error:?}");
    let variant = debug
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_owned();
    Sample {
        variant,
        error: anyhow::Error::new(error),
    }
}

/// An operating system's error, as `std` reports it: "No such file or directory (os error 2)".
fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

const ENOENT: i32 = 2;
const ENOEXEC: i32 = 8;
const EACCES: i32 = 13;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const EADDRINUSE: i32 = 98;

fn tool_spawn() -> ToolError {
    ToolError::Spawn {
        program: "python3".to_owned(),
        source: os_error(ENOENT),
        fix: "install Python 3 with the venv module",
    }
}

fn fuzz_errors() -> Vec<Sample> {
    vec![
        sample(FuzzError::Tool(tool_spawn())),
        sample(FuzzError::Corpus {
            path: PathBuf::from("/work/fuzz/corpus/batch_ops"),
            source: os_error(EACCES),
        }),
        sample(FuzzError::Spawn {
            program: "cargo-fuzz".to_owned(),
            source: os_error(ENOENT),
        }),
        sample(FuzzError::Build {
            command: "cargo fuzz build".to_owned(),
            status: "exit status: 1".to_owned(),
            tail: "error: linker `cc` not found".to_owned(),
        }),
    ]
}

fn tool_errors() -> Vec<Sample> {
    vec![
        sample(tool_spawn()),
        sample(ToolError::Failed {
            command: "pip install cfn-lint==1.0".to_owned(),
            status: "exit status: 1".to_owned(),
            output: "no matching distribution".to_owned(),
        }),
    ]
}

fn stack_artifact() -> StackError {
    StackError::Artifact {
        path: PathBuf::from("/work/target/lambda/function/bootstrap.zip"),
        source: os_error(ENOENT),
    }
}

fn stack_errors() -> Vec<Sample> {
    vec![
        sample(stack_artifact()),
        sample(StackError::Aws {
            action: "describe stack usersync".to_owned(),
            message: "service error".to_owned(),
        }),
    ]
}

fn build_spawn() -> BuildError {
    BuildError::Spawn {
        command: "/nonexistent/rustc -vV".to_owned(),
        source: os_error(ENOENT),
    }
}

fn settings_read() -> SettingsError {
    SettingsError::Read {
        path: PathBuf::from("/work/usersync.toml"),
        source: os_error(EACCES),
    }
}

fn deploy_errors() -> Vec<Sample> {
    vec![
        sample(DeployError::Build(build_spawn())),
        sample(DeployError::Settings(settings_read())),
        sample(DeployError::Stack(stack_artifact())),
        sample(DeployError::Adoption(
            AdoptionError::Stack(stack_artifact()),
        )),
    ]
}

fn adoption_errors() -> Vec<Sample> {
    vec![
        sample(AdoptionError::Stack(stack_artifact())),
        sample(AdoptionError::TableNotFound {
            table: "people".to_owned(),
            region: "eu-west-1".to_owned(),
        }),
        sample(AdoptionError::WrongViewType {
            table: "people".to_owned(),
            view_type: "KEYS_ONLY".to_owned(),
            region: "eu-west-1".to_owned(),
        }),
        sample(AdoptionError::BucketKeyAlias {
            bucket: "people-mirror".to_owned(),
            alias: "alias/people".to_owned(),
        }),
        sample(AdoptionError::OwnsItsOwn {
            stack: "usersync".to_owned(),
            kind: Adoptable::Bucket,
            own: "usersync-databucket-1".to_owned(),
            named: "people-mirror".to_owned(),
        }),
    ]
}

fn message_errors() -> Vec<Sample> {
    vec![
        sample(MessageError::NoBatchInfo),
        sample(MessageError::NotJson("expected value at line 1".to_owned())),
    ]
}

fn replay_errors() -> Vec<Sample> {
    vec![
        sample(ReplayError::Stack(stack_artifact())),
        sample(ReplayError::Mirror(DeployedMirrorError::NoStack {
            stack: "usersync".to_owned(),
            target: "AWS".to_owned(),
        })),
    ]
}

fn batch_read_errors() -> Vec<Sample> {
    vec![
        sample(BatchReadError::Read(ReadError::Transient {
            shard_id: "shardId-1".to_owned(),
            message: "throttled".to_owned(),
        })),
        sample(BatchReadError::Unfinished {
            shard_id: "shardId-1".to_owned(),
            end: "000000000000000000105".to_owned(),
            pages: 2000,
            seconds: 300,
        }),
    ]
}

fn target_errors() -> Vec<Sample> {
    vec![
        sample(TargetError::NoRegion),
        sample(TargetError::Unreachable {
            url: "http://127.0.0.1:4566".to_owned(),
            reason: "connection refused".to_owned(),
        }),
    ]
}

fn template_errors() -> Vec<Sample> {
    let yaml = serde_norway::from_str::<u32>("[").expect_err("`[` is not a number");
    vec![
        sample(TemplateError::Yaml(yaml)),
        sample(TemplateError::AmbiguousYaml {
            value: "yes".to_owned(),
        }),
    ]
}

fn build_errors() -> Vec<Sample> {
    vec![
        sample(build_spawn()),
        sample(BuildError::Io {
            action: "read",
            path: PathBuf::from("/work/target/lambda-artifact/bootstrap"),
            source: os_error(EACCES),
        }),
        sample(BuildError::Zip {
            path: PathBuf::from("/work/target/lambda/function/bootstrap.zip"),
            source: zip::result::ZipError::UnsupportedArchive("unsupported compression"),
        }),
        sample(BuildError::MissingBinary {
            command: "cargo build".to_owned(),
            expected: PathBuf::from("/work/target/release/bootstrap"),
        }),
    ]
}

fn settings_errors() -> Vec<Sample> {
    vec![
        sample(settings_read()),
        sample(SettingsError::InFile {
            path: PathBuf::from("/work/usersync.toml"),
            error: Box::new(SettingsError::OutOfRange {
                setting: "memory_mb",
                value: 64,
                expected: "128 to 10240",
            }),
        }),
        sample(SettingsError::InFile {
            path: PathBuf::from("/work/usersync.toml"),
            error: Box::new(SettingsError::Conflict {
                first: "alarm_email",
                second: "alarm_topic_arn",
                fix: "keep one",
            }),
        }),
    ]
}

fn read_errors() -> Vec<Sample> {
    vec![sample(ReadError::Transient {
        shard_id: "shardId-1".to_owned(),
        message: "throttled".to_owned(),
    })]
}

fn missing_sequence_numbers() -> Vec<Sample> {
    vec![sample(MissingSequenceNumber {
        event_id: "e1".to_owned(),
    })]
}

fn key_too_long() -> Vec<Sample> {
    vec![sample(KeyTooLong { bytes: 1100 })]
}

fn store_errors() -> Vec<Sample> {
    vec![sample(StoreError {
        operation: "put",
        key: "users/alice.json".to_owned(),
        message: "dispatch failure".to_owned(),
    })]
}

fn skip_reasons() -> Vec<Sample> {
    vec![
        sample(SkipReason::KeyTooLong(KeyTooLong { bytes: 1100 })),
        sample(SkipReason::MissingSequenceNumber),
    ]
}

fn config_errors() -> Vec<Sample> {
    vec![sample(ConfigError::Missing {
        variable: "BUCKET_NAME",
        expected: "the data bucket's name",
    })]
}

fn not_a_streams_event() -> Vec<Sample> {
    vec![sample(NotAStreamsEvent(
        "missing field `Records`".to_owned(),
    ))]
}

fn host_bind() -> HostError {
    HostError::Bind(os_error(EADDRINUSE))
}

fn host_spawn() -> HostError {
    HostError::Spawn {
        path: PathBuf::from("/work/target/debug/bootstrap"),
        source: os_error(ENOEXEC),
    }
}

fn dev_errors() -> Vec<Sample> {
    vec![
        sample(DevError::Emulator(EmulatorError::NoPort(os_error(
            EADDRINUSE,
        )))),
        sample(DevError::Deploy(DeployError::Build(build_spawn()))),
        sample(DevError::Build(build_spawn())),
        sample(DevError::Pipeline(PipelineError::Host(host_bind()))),
        sample(DevError::Target(TargetError::NoRegion)),
        sample(DevError::Stack(stack_artifact())),
        sample(DevError::MissingOutput("DataBucketName")),
        sample(DevError::FunctionSettings(DeployedMirrorError::Stack(
            stack_artifact(),
        ))),
        sample(DevError::MappingEnabled {
            stack: "usersync".to_owned(),
            uuid: "4b1c".to_owned(),
            state: "Enabled".to_owned(),
        }),
        sample(DevError::Reconcile(Box::new(ReconcileError::Aws(
            stack_artifact(),
        )))),
        sample(DevError::Restore {
            command: "aws lambda update-event-source-mapping --uuid 4b1c --enabled".to_owned(),
            source: stack_artifact(),
        }),
    ]
}

fn host_errors() -> Vec<Sample> {
    vec![
        sample(host_spawn()),
        sample(host_bind()),
        sample(HostError::BinaryMissing {
            path: PathBuf::from("/work/target/debug/bootstrap"),
        }),
    ]
}

fn submit_errors() -> Vec<Sample> {
    vec![sample(SubmitError::DuplicateRequestId("r1".to_owned()))]
}

fn emulator_spawn() -> EmulatorError {
    EmulatorError::Spawn {
        binary: PathBuf::from("/cache/fakecloud/bin/fakecloud"),
        source: os_error(ENOENT),
    }
}

fn emulator_errors() -> Vec<Sample> {
    vec![
        sample(EmulatorError::InstallSpawn(os_error(ENOENT))),
        sample(EmulatorError::Cache {
            path: PathBuf::from("/cache/fakecloud"),
            source: os_error(EROFS),
        }),
        sample(EmulatorError::NoPort(os_error(EADDRINUSE))),
        sample(emulator_spawn()),
        sample(EmulatorError::State {
            path: PathBuf::from("/work/target/usersync/emulator.json"),
            source: os_error(EACCES),
        }),
        sample(EmulatorError::BinaryMissing(PathBuf::from("/nonexistent"))),
    ]
}

/// A real [`UpstreamError`] (its fields are private): a proxy in front of a closed port.
/// Also checks that the proxy's 502 answer, which is the chain as text, names the cause once.
fn upstream_errors() -> Vec<Sample> {
    /// Sends each request upstream itself and keeps the error.
    struct Capture(Mutex<Option<UpstreamError>>);

    impl Interceptor for Capture {
        fn intercept<'a>(
            &'a self,
            request: http::Request<ProxyBody>,
            upstream: &'a Upstream,
        ) -> BoxFuture<'a, Intercepted> {
            Box::pin(async move {
                if let Err(err) = upstream.send(request).await {
                    *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                }
                Intercepted::Respond(http::Response::new(full_body("captured")))
            })
        }
    }

    async fn get(proxy: &ReverseProxy) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("the proxy listens");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n")
            .await
            .expect("the request is sent");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .expect("the proxy answers");
        String::from_utf8_lossy(&answer).into_owned()
    }

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (error, answer) = runtime.block_on(async {
        let capture = Arc::new(Capture(Mutex::new(None)));
        let proxy = ReverseProxy::start(closed, Arc::clone(&capture) as Arc<dyn Interceptor>)
            .await
            .expect("the proxy starts");
        get(&proxy).await;
        let error = capture
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("sending to a closed port fails");
        let passing = ReverseProxy::start(closed, Arc::new(PassThrough))
            .await
            .expect("the proxy starts");
        (error, get(&passing).await)
    });
    let refused = os_error(111).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 502") && answer.matches(&refused).count() == 1,
        "the proxy's answer should name {refused:?} once:\n{answer}"
    );
    vec![sample(error)]
}

fn destination_errors() -> Vec<Sample> {
    vec![sample(DestinationError::NotAQueue(
        "arn:aws:sns:us-east-1:000000000000:topic".to_owned(),
    ))]
}

fn stream_gone() -> PollerError {
    PollerError::StreamGone {
        stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/1".to_owned(),
        message: "ResourceNotFoundException".to_owned(),
    }
}

fn pipeline_errors() -> Vec<Sample> {
    vec![
        sample(PipelineError::Host(host_spawn())),
        sample(PipelineError::Poller {
            uuid: "c0ffee".to_owned(),
            source: stream_gone(),
        }),
        sample(PipelineError::Mapping(MappingError::Missing("UUID"))),
        sample(PipelineError::Credentials("no credentials".to_owned())),
    ]
}

fn poller_errors() -> Vec<Sample> {
    vec![
        sample(stream_gone()),
        sample(PollerError::Destination(DestinationError::Send {
            arn: "arn:aws:sqs:us-east-1:000000000000:failures".to_owned(),
            message: "queue does not exist".to_owned(),
        })),
    ]
}

fn mapping_errors() -> Vec<Sample> {
    vec![sample(MappingError::BatchSize {
        uuid: "c0ffee".to_owned(),
        value: 0,
    })]
}

fn local_target_errors() -> Vec<Sample> {
    vec![
        sample(LocalTargetError::Emulator(emulator_spawn())),
        sample(LocalTargetError::Target(TargetError::NoRegion)),
        sample(LocalTargetError::Conflict),
    ]
}

fn lambda_check_errors() -> Vec<Sample> {
    vec![
        sample(LambdaCheckError::Build(build_spawn())),
        sample(LambdaCheckError::Runtime(os_error(EACCES))),
        sample(LambdaCheckError::Emulator(emulator_spawn())),
        sample(LambdaCheckError::Bucket(StackError::Aws {
            action: "create bucket usersync-lambda-check".to_owned(),
            message: "dispatch failure".to_owned(),
        })),
        sample(LambdaCheckError::Host(host_spawn())),
        sample(LambdaCheckError::Invocation {
            outcome: "Crashed { message: \"exit status: 1\" }".to_owned(),
        }),
    ]
}

fn bench_errors() -> Vec<Sample> {
    vec![
        sample(BenchError::Emulator(EmulatorError::InstallSpawn(os_error(
            ENOENT,
        )))),
        sample(BenchError::Build(build_spawn())),
        sample(BenchError::Host(host_bind())),
        sample(BenchError::Deploy(DeployError::Build(build_spawn()))),
        sample(BenchError::Stack(stack_artifact())),
        sample(BenchError::Write {
            path: PathBuf::from("/work/target/bench/report.json"),
            source: os_error(ENOSPC),
        }),
        sample(BenchError::FunctionGone),
        sample(BenchError::Mirror(DeployedMirrorError::Stack(
            stack_artifact(),
        ))),
        sample(BenchError::Spawn {
            program: PathBuf::from("/work/target/release/usersync-bench-reconcile"),
            source: os_error(ENOENT),
        }),
        sample(BenchError::ReconcileGone),
        sample(BenchError::Cgroup(cgroup_create())),
        sample(BenchError::Proxy(os_error(EADDRINUSE))),
    ]
}

const EBUSY: i32 = 16;

fn cgroup_create() -> CgroupError {
    CgroupError::Create {
        path: PathBuf::from("/sys/fs/cgroup/cpu/usersync-bench-42-128mb-0"),
        source: os_error(EACCES),
    }
}

fn cgroup_unusable() -> Vec<Sample> {
    vec![
        sample(Unusable::NotRoot { euid: 1000 }),
        sample(Unusable::V1Missing {
            controller: "cpu",
            mounted: "memory; name=systemd".to_owned(),
        }),
        sample(Unusable::V2NotDelegated {
            dir: PathBuf::from("/sys/fs/cgroup/user.slice"),
            controllers: "cpu and memory".to_owned(),
            source: os_error(EBUSY),
        }),
        sample(Unusable::Read {
            path: PathBuf::from("/proc/self/mountinfo"),
            source: os_error(ENOENT),
        }),
        sample(Unusable::Trial(cgroup_create())),
    ]
}

fn cgroup_errors() -> Vec<Sample> {
    let path = || PathBuf::from("/sys/fs/cgroup/cpu/usersync-bench-42-128mb-0/cpu.cfs_quota_us");
    vec![
        sample(cgroup_create()),
        sample(CgroupError::Write {
            path: path(),
            value: "7235".to_owned(),
            source: os_error(EROFS),
        }),
        sample(CgroupError::Read {
            path: path(),
            source: os_error(ENOENT),
        }),
        sample(CgroupError::Parse {
            path: path(),
            text: "max".to_owned(),
        }),
        sample(CgroupError::Remove {
            path: PathBuf::from("/sys/fs/cgroup/cpu/usersync-bench-42-128mb-0"),
            source: os_error(EBUSY),
        }),
    ]
}

fn lambda_skips() -> Vec<Sample> {
    vec![
        sample(LambdaSkip::Cgroups(Unusable::NotRoot { euid: 1000 })),
        sample(LambdaSkip::NotHttp {
            url: "https://s3.eu-west-1.amazonaws.com".to_owned(),
        }),
        sample(LambdaSkip::Unresolved {
            url: "http://minio:9000".to_owned(),
            source: os_error(ENOENT),
        }),
    ]
}

fn backend_errors() -> Vec<Sample> {
    let docker = || Box::new(testcontainers::TestcontainersError::other("no such image"));
    vec![
        sample(BackendError::LocalStackStart {
            image: "localstack/localstack:4.14".to_owned(),
            source: docker(),
        }),
        sample(BackendError::LocalStackContainer {
            image: "localstack/localstack:4.14".to_owned(),
            action: "reading its logs",
            source: docker(),
        }),
        sample(BackendError::LocalStackLog {
            path: PathBuf::from("/work/target/itests/localstack.log"),
            source: os_error(ENOSPC),
        }),
        sample(BackendError::MissingEndpointUrl),
    ]
}

fn deployed_mirror_errors() -> Vec<Sample> {
    vec![
        sample(DeployedMirrorError::Stack(stack_artifact())),
        sample(DeployedMirrorError::NoStack {
            stack: "usersync".to_owned(),
            target: "AWS us-east-1".to_owned(),
        }),
        sample(DeployedMirrorError::FunctionConfig {
            function: "usersync-mirror".to_owned(),
            reason: "BUCKET_NAME is not set".to_owned(),
        }),
    ]
}

fn user_repair_errors() -> Vec<Sample> {
    vec![
        sample(UserRepairError::Table(stack_artifact())),
        sample(UserRepairError::Store(StoreError {
            operation: "put",
            key: "alice/userdata".to_owned(),
            message: "dispatch failure".to_owned(),
        })),
        sample(UserRepairError::StillChanging {
            name: "alice".to_owned(),
            rounds: 5,
        }),
        sample(UserRepairError::Batch(std::sync::Arc::new(
            UserRepairError::Table(stack_artifact()),
        ))),
    ]
}

fn state_database() -> StateError {
    StateError::Database {
        action: "open",
        path: PathBuf::from("/work/target/usersync/reconcile/usersync/index.redb"),
        source: Box::new(redb::Error::Io(os_error(EACCES))),
    }
}

fn reconcile_errors() -> Vec<Sample> {
    vec![
        sample(ReconcileError::Options(
            "--segments 0 is out of range: expected 1 to 1000000".to_owned(),
        )),
        sample(ReconcileError::Mirror(DeployedMirrorError::Stack(
            stack_artifact(),
        ))),
        sample(ReconcileError::Aws(stack_artifact())),
        sample(ReconcileError::Read(UserRepairError::Table(
            stack_artifact(),
        ))),
        sample(ReconcileError::State(state_database())),
        sample(ReconcileError::Cursor { segment: 3 }),
        sample(ReconcileError::Report {
            path: PathBuf::from("/work/target/usersync/reconcile/usersync/report.json"),
            source: os_error(ENOSPC),
        }),
    ]
}

fn state_errors() -> Vec<Sample> {
    vec![
        sample(state_database()),
        sample(StateError::Busy {
            path: PathBuf::from("/work/target/usersync/reconcile/usersync/index.redb"),
        }),
        sample(StateError::ParametersChanged {
            dir: PathBuf::from("/work/target/usersync/reconcile/usersync"),
            changes: "segments: 4 → 8".to_owned(),
        }),
        sample(StateError::Io {
            action: "create the state directory",
            path: PathBuf::from("/work/target/usersync/reconcile/usersync"),
            source: os_error(EROFS),
        }),
    ]
}

fn merge_errors() -> Vec<Sample> {
    let json = serde_json::from_str::<u32>("{").expect_err("`{` is not a number");
    vec![
        sample(MergeError::Read {
            path: PathBuf::from("share-0.json"),
            source: os_error(ENOENT),
        }),
        sample(MergeError::Parse {
            path: PathBuf::from("share-0.json"),
            source: json,
        }),
        sample(MergeError::Shares {
            found: "0/3, 1/3".to_owned(),
            missing: "2/3".to_owned(),
        }),
    ]
}

/// What is wrong with how `main` prints `sample`, if anything.
fn printed_twice(type_name: &str, sample: &Sample) -> Option<String> {
    let layers: Vec<String> = sample.error.chain().map(ToString::to_string).collect();
    let line = error_line(&sample.error);
    let what = format!("{type_name}::{}", sample.variant);
    if line != format!("error: {}", layers.join(": ")) {
        return Some(format!(
            "{what}: main does not print the chain as its layers: {line}"
        ));
    }
    for (depth, outer) in layers.iter().enumerate() {
        if outer.trim().is_empty() {
            return Some(format!("{what}: layer {depth} is empty: {line}"));
        }
        if let Some(inner) = layers[depth + 1..]
            .iter()
            .find(|inner| outer.contains(inner.as_str()))
        {
            return Some(format!(
                "{what}: {outer:?} repeats its cause {inner:?}, so the line prints it twice: {line}"
            ));
        }
    }
    None
}

#[test]
fn every_chain_prints_each_cause_once() {
    let found = workspace_error_types();
    let mut failures = Vec::new();
    for (name, coverage) in TYPES {
        let Coverage::Samples(samples) = coverage else {
            continue;
        };
        let samples = samples();
        let sampled: BTreeSet<&str> = samples.iter().map(|s| s.variant.as_str()).collect();
        for sample in &samples {
            failures.extend(printed_twice(name, sample));
        }
        // Every variant with a source must be among the samples.
        for variant in found.get(*name).into_iter().flatten() {
            if variant.has_source() && !sampled.contains(variant.name.as_str()) {
                failures.push(format!(
                    "{name}::{} has a source but no sample in error_chains.rs",
                    variant.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_error_type_in_the_workspace_is_listed() {
    let found = workspace_error_types();
    assert!(
        found.len() >= 25,
        "the scan found only {} thiserror types: {:?}; it is broken",
        found.len(),
        found.keys()
    );
    let listed: BTreeSet<&str> = TYPES.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed.len(), TYPES.len(), "a type is listed twice");
    let unlisted: Vec<&String> = found
        .keys()
        .filter(|name| !listed.contains(name.as_str()))
        .collect();
    let gone: Vec<&&str> = listed
        .iter()
        .filter(|name| !found.contains_key(**name))
        .collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "TYPES in xtask/src/error_chains.rs is out of date: add {unlisted:?} (with samples of \
         every variant that has a source), remove {gone:?}"
    );
    for (name, coverage) in TYPES {
        if let Coverage::Private(location) = coverage {
            let sourced: Vec<&str> = found[*name]
                .iter()
                .filter(|variant| variant.has_source())
                .map(|variant| variant.name.as_str())
                .collect();
            assert!(
                sourced.is_empty(),
                "{name} ({location}) now has a source in {sourced:?}: make it reachable and \
                 give it samples"
            );
        }
    }
}

#[test]
fn no_message_interpolates_its_source() {
    let mut failures = Vec::new();
    for (name, variants) in workspace_error_types() {
        for variant in variants {
            if !variant.repeated.is_empty() {
                failures.push(format!(
                    "{}: {name}::{}: the message interpolates {:?}, which is its source; \
                     leave it out (the chain prints it after a colon)",
                    variant.file.display(),
                    variant.name,
                    variant.repeated
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_missing_toolchain_is_named_once() {
    // `cargo xtask build` with CARGO and RUSTC pointing at nothing, as `main` prints it.
    let err = anyhow::Error::new(build_spawn()).context("failed to build the function");
    assert_eq!(
        error_line(&err),
        "error: failed to build the function: failed to run `/nonexistent/rustc -vV` (check \
         that cargo and rustc are installed and on PATH, or set CARGO / RUSTC): No such file or \
         directory (os error 2)"
    );
}

// ---- The scan ----

/// A variant of a `thiserror` enum, or a `thiserror` struct (named as the struct).
#[derive(Debug)]
struct Variant {
    name: String,
    file: PathBuf,
    transparent: bool,
    /// The fields thiserror takes as the source: `#[source]`, `#[from]` or named `source`.
    sources: Vec<String>,
    /// Those of them the message interpolates.
    repeated: Vec<String>,
}

impl Variant {
    /// Whether the variant's chain has a layer below it of its own (`transparent` forwards).
    fn has_source(&self) -> bool {
        !self.transparent && !self.sources.is_empty()
    }
}

/// Every `thiserror` type in the workspace (its members and `fuzz/`), by name, with its variants.
fn workspace_error_types() -> BTreeMap<String, Vec<Variant>> {
    let root = deployer::project::project_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut types: BTreeMap<String, Vec<Variant>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("failed to read {}: {err}", file.display()));
        let relative = file.strip_prefix(&root).unwrap_or(&file);
        for (name, variants) in scan(&text, relative) {
            types.entry(name).or_default().extend(variants);
        }
    }
    types
}

/// Every `.rs` file under `dir`, skipping `target/` and hidden directories.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("failed to list {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// The `thiserror` types in one file's `text`.
fn scan(text: &str, file: &Path) -> Vec<(String, Vec<Variant>)> {
    let code = mask(text);
    let imports_error = find_all(&code, b"use thiserror::").any(|at| {
        let end = find_from(&code, at, b";").unwrap_or(code.len());
        words(&code[at..end]).any(|word| word == "Error")
    });
    let mut types = Vec::new();
    for at in find_all(&code, b"#[derive(") {
        let open = at + b"#[derive".len();
        let close = matching(&code, open);
        let derives =
            String::from_utf8_lossy(&code[open + 1..close]).replace(char::is_whitespace, "");
        let is_error = derives
            .split(',')
            .any(|d| d == "thiserror::Error" || (d == "Error" && imports_error));
        if !is_error {
            continue;
        }
        let mut i = close + 2;
        let mut type_error = None;
        // Further attributes: a struct's `#[error(...)]` is among them.
        loop {
            i = skip_space(&code, i);
            if !code[i..].starts_with(b"#[") {
                break;
            }
            let end = matching(&code, i + 1);
            type_error = type_error.or(error_attribute(&code, i + 2, end));
            i = end + 1;
        }
        i = skip_visibility(&code, i);
        let is_enum = code[i..].starts_with(b"enum");
        if !is_enum && !code[i..].starts_with(b"struct") {
            continue;
        }
        i = skip_space(&code, i + if is_enum { 4 } else { 6 });
        let (name, after) = ident(&code, i);
        let Some(group) = (after..code.len()).find(|&j| matches!(code[j], b'{' | b'(' | b';'))
        else {
            continue;
        };
        let mut variants = Vec::new();
        if is_enum {
            let end = matching(&code, group);
            for (start, stop) in split_top(&code, group + 1, end, false) {
                let mut j = start;
                let mut error = None;
                loop {
                    j = skip_space(&code, j);
                    if !code[j..stop].starts_with(b"#[") {
                        break;
                    }
                    let end = matching(&code, j + 1);
                    error = error.or(error_attribute(&code, j + 2, end));
                    j = end + 1;
                }
                let (variant, after) = ident(&code, j);
                if variant.is_empty() {
                    continue;
                }
                let fields = fields(&code, skip_space(&code, after), stop);
                variants.push(variant_of(text, &code, file, variant, error, fields));
            }
        } else {
            let fields = fields(&code, group, code.len());
            variants.push(variant_of(
                text,
                &code,
                file,
                name.clone(),
                type_error,
                fields,
            ));
        }
        types.push((name, variants));
    }
    types
}

/// The span of an `#[error(...)]` attribute's arguments, given the attribute's contents.
fn error_attribute(code: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    let start = skip_space(code, start);
    let open = start + b"error".len();
    (code[start..end].starts_with(b"error") && code.get(open) == Some(&b'('))
        .then(|| (open + 1, matching(code, open)))
}

/// A group of fields starting at `at` (if `at` opens one before `stop`): each field's name
/// (its index in a tuple) and whether thiserror takes it as the source.
fn fields(code: &[u8], at: usize, stop: usize) -> Vec<(String, bool)> {
    if at >= stop || !matches!(code[at], b'{' | b'(') {
        return Vec::new();
    }
    let named = code[at] == b'{';
    let end = matching(code, at);
    let mut found = Vec::new();
    for (index, (start, stop)) in split_top(code, at + 1, end, true).into_iter().enumerate() {
        let mut j = start;
        let mut source = false;
        loop {
            j = skip_space(code, j);
            if !code[j..stop].starts_with(b"#[") {
                break;
            }
            let end = matching(code, j + 1);
            let attribute = String::from_utf8_lossy(&code[j + 2..end]);
            let attribute = attribute.trim();
            source |= attribute == "source" || attribute == "from";
            j = end + 1;
        }
        let name = if named {
            ident(code, skip_visibility(code, j)).0
        } else {
            index.to_string()
        };
        source |= name == "source";
        found.push((name, source));
    }
    found
}

fn variant_of(
    text: &str,
    code: &[u8],
    file: &Path,
    name: String,
    error: Option<(usize, usize)>,
    fields: Vec<(String, bool)>,
) -> Variant {
    let sources: Vec<String> = fields
        .into_iter()
        .filter_map(|(field, source)| source.then_some(field))
        .collect();
    let mut transparent = false;
    let mut repeated = Vec::new();
    if let Some((start, end)) = error {
        let start = skip_space(code, start);
        transparent = code[start..end].starts_with(b"transparent");
        // The format string, from the source text; the arguments after it.
        let attribute = &code[..end];
        let literal_end = find_from(attribute, start, b"\"")
            .and_then(|open| find_from(attribute, open + 1, b"\""))
            .map_or(start, |close| close + 1);
        let message = &text[start..literal_end];
        let arguments = String::from_utf8_lossy(&code[literal_end..end]);
        for field in &sources {
            let inline = message.contains(&format!("{{{field}}}"))
                || message.contains(&format!("{{{field}:"));
            let argument = arguments
                .match_indices(&format!(".{field}"))
                .any(|(at, m)| {
                    !arguments[at + m.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                });
            if inline || argument {
                repeated.push(field.clone());
            }
        }
    }
    Variant {
        name,
        file: file.to_owned(),
        transparent,
        sources,
        repeated,
    }
}

/// `text` with comments blanked and the insides of string and character literals replaced by
/// `_`, byte for byte, so that brackets are structure and offsets are the text's.
fn mask(text: &str) -> Vec<u8> {
    let src = text.as_bytes();
    let mut out = src.to_vec();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < src.len() {
        let next = src.get(i + 1).copied();
        match src[i] {
            b'/' if next == Some(b'/') => {
                while i < src.len() && src[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let mut depth = 0;
                while i < src.len() {
                    if src[i..].starts_with(b"/*") {
                        depth += 1;
                        out[i..i + 2].fill(b' ');
                        i += 2;
                    } else if src[i..].starts_with(b"*/") {
                        depth -= 1;
                        out[i..i + 2].fill(b' ');
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if src[i] != b'\n' {
                            out[i] = b' ';
                        }
                        i += 1;
                    }
                }
            }
            // A raw string, r"…" or r#"…"# (or br…), not a raw identifier.
            b'r' if (i == 0
                || !is_ident(src[i - 1])
                || (src[i - 1] == b'b' && (i < 2 || !is_ident(src[i - 2]))))
                && matches!(next, Some(b'"' | b'#')) =>
            {
                let mut j = i + 1;
                while src.get(j) == Some(&b'#') {
                    j += 1;
                }
                if src.get(j) != Some(&b'"') {
                    i = j;
                    continue;
                }
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', j - i - 1));
                j += 1;
                while j < src.len() && !src[j..].starts_with(&close) {
                    out[j] = b'_';
                    j += 1;
                }
                i = j + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < src.len() && src[j] != b'"' {
                    let width = if src[j] == b'\\' { 2 } else { 1 };
                    let stop = (j + width).min(src.len());
                    out[j..stop].fill(b'_');
                    j = stop;
                }
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', 'é'), else a lifetime ('a, 'static).
                let end = if next == Some(b'\\') {
                    find_from(src, i + 3, b"'")
                } else {
                    let width = match next {
                        Some(b) if b >= 0xF0 => 4,
                        Some(b) if b >= 0xE0 => 3,
                        Some(b) if b >= 0xC0 => 2,
                        _ => 1,
                    };
                    (src.get(i + 1 + width) == Some(&b'\'')).then_some(i + 1 + width)
                };
                match end {
                    Some(end) => {
                        out[i + 1..end].fill(b'_');
                        i = end + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn find_from(code: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    code.get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

fn find_all<'a>(code: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = find_from(code, from, needle)?;
        from = at + needle.len();
        Some(at)
    })
}

fn words(code: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(code)
        .unwrap_or_default()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
}

fn skip_space(code: &[u8], mut i: usize) -> usize {
    while i < code.len() && code[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Past `pub`, `pub(crate)` and the like.
fn skip_visibility(code: &[u8], i: usize) -> usize {
    let i = skip_space(code, i);
    if !code[i..].starts_with(b"pub") || code.get(i + 3).is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return i;
    }
    let j = skip_space(code, i + 3);
    if code.get(j) == Some(&b'(') {
        skip_space(code, matching(code, j) + 1)
    } else {
        j
    }
}

fn ident(code: &[u8], i: usize) -> (String, usize) {
    let end = (i..code.len())
        .find(|&j| !(code[j].is_ascii_alphanumeric() || code[j] == b'_'))
        .unwrap_or(code.len());
    (String::from_utf8_lossy(&code[i..end]).into_owned(), end)
}

/// The bracket closing the one at `open`.
fn matching(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets from byte {open}")
}

/// The spans between the commas of `code[start..end]` outside brackets (and, with `angle`,
/// outside `<…>`), blank ones left out.
fn split_top(code: &[u8], start: usize, end: usize, angle: bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut depth = 0i32;
    let mut from = start;
    for j in start..end {
        match code[j] {
            b'(' | b'[' | b'{' => depth += 1,
            b'<' if angle => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'>' if angle && code[j - 1] != b'-' => depth -= 1,
            b',' if depth == 0 => {
                spans.push((from, j));
                from = j + 1;
            }
            _ => {}
        }
    }
    spans.push((from, end));
    spans.retain(|&(a, b)| !code[a..b].iter().all(u8::is_ascii_whitespace));
    spans
}

#[test]
fn the_scan_finds_a_message_that_interpolates_its_source() {
    let text = r##"
        //! A file.
        use std::io;

        /// Says "hi" // and { then } http://example.com
        #[derive(Debug, thiserror::Error)]
        pub enum Sample {
            /// Reading failed.
            #[error("failed to read {path}: {source}")]
            Read { path: String, source: io::Error },
            #[error("failed to bind: {0}; is the port free?")]
            Bind(#[from] io::Error),
            #[error("failed at {}: {}", .path, .inner)]
            Args { path: String, #[source] inner: io::Error },
            #[error("the value {0:?} is not a number: {1}")]
            NotANumber(String, String),
            #[error("failed to write {path} (check '{{' and the disk)")]
            Write { path: String, #[source] source: Box<dyn std::error::Error + Send + Sync> },
            #[error(transparent)]
            Other(#[from] std::fmt::Error),
            Plain,
        }

        #[derive(Debug, thiserror::Error, PartialEq)]
        #[error("a {name} '{c}' {}", r#"raw "text" {source}"#)]
        pub(crate) struct Chars { name: &'static str, c: char, quote: Vec<(u8, char)> }
    "##;
    /// A variant's name, whether it is transparent, its sources and the repeated ones.
    type Found = (String, bool, Vec<String>, Vec<String>);
    let types = scan(text, Path::new("sample.rs"));
    let summary: Vec<(String, Vec<Found>)> = types
        .into_iter()
        .map(|(name, variants)| {
            let variants = variants
                .into_iter()
                .map(|v| (v.name, v.transparent, v.sources, v.repeated))
                .collect();
            (name, variants)
        })
        .collect();
    let v = |name: &str, transparent, sources: &[&str], repeated: &[&str]| {
        (
            name.to_owned(),
            transparent,
            sources.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            repeated.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        summary,
        vec![
            (
                "Sample".to_owned(),
                vec![
                    v("Read", false, &["source"], &["source"]),
                    v("Bind", false, &["0"], &["0"]),
                    v("Args", false, &["inner"], &["inner"]),
                    v("NotANumber", false, &[], &[]),
                    v("Write", false, &["source"], &[]),
                    v("Other", true, &["0"], &[]),
                    v("Plain", false, &[], &[]),
                ]
            ),
            ("Chars".to_owned(), vec![v("Chars", false, &[], &[])]),
        ]
    );
}
