//! Conformance of the local Lambda Runtime API host (`usersync_local::runtime::function_host` and
//! `runtime_api`): the real `bootstrap` and the purpose-built `test-function` run as child
//! processes on 127.0.0.1, through success, error response, timeout, crash and init error.
//!
//! Nothing here touches the network beyond loopback. The real `bootstrap` is built on first
//! use with `cargo build -p usersync-function --bin bootstrap` (a no-op when it is fresh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use usersync_local::runtime::function_host::{
    FunctionHost, FunctionSpec, HostError, OutputLine, OutputSink, OutputStream,
};
use usersync_local::runtime::invoke::{InvokeOutcome, Invoker};
use usersync_local::runtime::runtime_api::{
    Completion, ErrorReport, InitState, Invocation, RuntimeApi,
};

const TEST_FUNCTION: &str = env!("CARGO_BIN_EXE_test-function");

// ---------------------------------------------------------------------------------------
// The host with the test function
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn echo_round_trip_delivers_the_event_headers_and_lambda_environment() {
    let mut spec = test_spec(TEST_FUNCTION);
    spec.memory_mb = 256;
    spec.region = "eu-west-1".to_owned();
    spec.function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:echo".to_owned();
    spec.environment
        .insert("BUCKET_NAME".to_owned(), "from-config".to_owned());
    let (host, _output) = start(spec.clone()).await;

    let payload = json!({"behaviour": "echo", "nested": {"n": 1, "s": "ü"}});
    let before_ms = now_ms();
    let answer = expect_response(host.invoke(payload.clone()).await);
    let after_ms = now_ms();

    assert_eq!(answer["payload"], payload);
    let request_id = answer["request_id"].as_str().expect("a request id");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    let timeout_ms = 3_000;
    let deadline_ms = answer["deadline_ms"].as_u64().expect("a deadline");
    assert!(
        (before_ms + timeout_ms..=after_ms + timeout_ms).contains(&deadline_ms),
        "deadline {deadline_ms} is the timeout after the invocation ({before_ms}..{after_ms})"
    );
    assert_eq!(answer["invoked_function_arn"], spec.function_arn.as_str());
    let trace_id = answer["xray_trace_id"].as_str().expect("a trace id");
    assert!(trace_id.starts_with("Root=1-"), "{trace_id}");

    let environment: BTreeMap<String, String> =
        serde_json::from_value(answer["environment"].clone()).expect("the environment");
    let expected: BTreeMap<&str, &str> = [
        ("AWS_LAMBDA_FUNCTION_NAME", "echo"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/echo"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("_HANDLER", "bootstrap"),
        ("TZ", ":UTC"),
        ("BUCKET_NAME", "from-config"),
        ("_X_AMZN_TRACE_ID", trace_id),
    ]
    .into_iter()
    .collect();
    for (name, value) in expected {
        assert_eq!(
            environment.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(environment["AWS_LAMBDA_LOG_STREAM_NAME"], spec.log_stream);
    assert!(environment["AWS_LAMBDA_RUNTIME_API"].starts_with("127.0.0.1:"));
    let task_root = Path::new(TEST_FUNCTION).parent().expect("a directory");
    assert_eq!(Path::new(&environment["LAMBDA_TASK_ROOT"]), task_root);

    // Only Lambda's variables and the function's own: nothing leaks from the host.
    let names: BTreeSet<&str> = environment.keys().map(String::as_str).collect();
    let allowed: BTreeSet<&str> = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
        "LANG",
        "PATH",
        "BUCKET_NAME",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, allowed);

    // A stream-shaped event is passed through unchanged too.
    let stream_event = json!({"Records": [record("echo"), record("sleep:1")]});
    let answer = expect_response(host.invoke(stream_event.clone()).await);
    assert_eq!(answer["payload"], stream_event);
    assert_ne!(answer["request_id"].as_str(), Some(request_id));
    host.shutdown().await;
}

#[tokio::test]
async fn output_lines_are_tagged_with_the_request_id_or_init() {
    let (host, output) = start(test_spec(TEST_FUNCTION)).await;

    let answer = expect_response(host.invoke(json!({})).await);
    let request_id = answer["request_id"]
        .as_str()
        .expect("a request id")
        .to_owned();

    let handling = format!("test-function: handling {request_id}");
    output
        .wait_for(|line| {
            line.request_id.as_deref() == Some(&request_id)
                && line.stream == OutputStream::Stdout
                && line.text == handling
        })
        .await;
    output
        .wait_for(|line| line.request_id.is_none() && line.text == "test-function: initialising")
        .await;

    let shown = OutputLine {
        request_id: Some(&request_id),
        stream: OutputStream::Stdout,
        text: "hello",
    };
    assert_eq!(shown.to_string(), format!("[{request_id}] hello"));
    let shown = OutputLine {
        request_id: None,
        stream: OutputStream::Stderr,
        text: "starting",
    };
    assert_eq!(shown.to_string(), "[init] starting");
    host.shutdown().await;
}

#[tokio::test]
async fn error_response_becomes_a_function_error_and_the_process_is_kept() {
    let (host, _output) = start(test_spec(TEST_FUNCTION)).await;
    let pid = host.pid().expect("a running process");

    // Asked for by an attribute of a stream record, as the poller would deliver it.
    let outcome = host
        .invoke(json!({"Records": [record("echo"), record("fail")]}))
        .await;
    assert_eq!(
        outcome,
        InvokeOutcome::FunctionError {
            error_type: "TestFunctionFailure".to_owned(),
            message: "the event asked to fail".to_owned(),
        }
    );

    // An error response is an ordinary end to an invocation: the same process carries on.
    let answer = expect_response(host.invoke(json!({"behaviour": "echo"})).await);
    assert_eq!(answer["pid"], pid);
    assert_eq!(host.pid(), Some(pid));
    host.shutdown().await;
}

#[tokio::test]
async fn timeout_kills_the_process_and_the_next_invocation_gets_a_fresh_one() {
    let mut spec = test_spec(TEST_FUNCTION);
    spec.timeout = Duration::from_millis(700);
    let (host, output) = start(spec).await;
    let first = expect_response(host.invoke(json!({})).await);
    let first_pid = pid_of(&first);

    let started = Instant::now();
    let outcome = host.invoke(json!({"behaviour": "sleep:30000"})).await;
    let took = started.elapsed();
    assert_eq!(
        outcome,
        InvokeOutcome::TimedOut {
            after: Duration::from_millis(700)
        }
    );
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        process_is_gone(first_pid),
        "the timed-out process was killed and reaped"
    );
    output
        .wait_for(|line| {
            line.stream == OutputStream::Platform
                && line.text.contains("Task timed out after 0.70 seconds")
        })
        .await;

    let next = expect_response(host.invoke(json!({"behaviour": "echo"})).await);
    assert_ne!(pid_of(&next), first_pid);
    host.shutdown().await;
}

#[tokio::test]
async fn crash_is_reported_with_exit_status_and_last_output_then_the_next_invocation_works() {
    let (host, output) = start(test_spec(TEST_FUNCTION)).await;
    let first_pid = host.pid().expect("a running process");

    let outcome = host.invoke(json!({"behaviour": "crash"})).await;
    let InvokeOutcome::Crashed { message } = outcome else {
        panic!("expected a crash, got {outcome:?}");
    };
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        message.contains("test-function: crashing on purpose"),
        "{message}"
    );
    assert!(process_is_gone(first_pid));

    // The crash's stderr line is tagged with the crashed invocation's request id.
    let crashed_id = output
        .wait_for(|line| line.stream == OutputStream::Stderr && line.text.contains("crashing"))
        .await
        .request_id
        .expect("tagged with a request id");
    assert!(message.contains(&crashed_id), "{message}");

    let next = expect_response(host.invoke(json!({"behaviour": "echo"})).await);
    assert_ne!(pid_of(&next), first_pid);
    host.shutdown().await;
}

#[tokio::test]
async fn init_failure_is_reported_with_the_process_message_without_spinning() {
    let mut spec = test_spec(TEST_FUNCTION);
    spec.environment
        .insert("TEST_FUNCTION_INIT".to_owned(), "fail".to_owned());
    let (host, output) = start(spec).await;

    for _ in 0..2 {
        let outcome = host.invoke(json!({})).await;
        let InvokeOutcome::FunctionError {
            error_type,
            message,
        } = outcome
        else {
            panic!("expected an init error, got {outcome:?}");
        };
        assert_eq!(error_type, "Runtime.ExitError");
        assert!(message.contains("exit status: 1"), "{message}");
        assert!(
            message.contains("TEST_FUNCTION_INIT=fail: failing initialisation on purpose"),
            "{message}"
        );
    }
    // One process per invocation: a broken function is not restarted in a loop.
    let starts = output
        .lines()
        .iter()
        .filter(|line| line.text == "test-function: initialising")
        .count();
    assert_eq!(starts, 2);
    assert_eq!(host.last_cold_start(), None, "it never reached /next");
    host.shutdown().await;
}

#[tokio::test]
async fn cold_start_is_measured_from_spawn_to_the_first_next() {
    let mut spec = test_spec(TEST_FUNCTION);
    spec.environment
        .insert("TEST_FUNCTION_INIT".to_owned(), "sleep:300".to_owned());
    let (host, _output) = start(spec).await;

    let started = Instant::now();
    expect_response(host.invoke(json!({})).await);
    let cold_start = host.last_cold_start().expect("measured");
    assert!(
        cold_start.to_first_next >= Duration::from_millis(300),
        "{cold_start:?}"
    );
    assert!(cold_start.to_first_next <= started.elapsed() + Duration::from_millis(300));

    // A warm invocation does not change it.
    expect_response(host.invoke(json!({})).await);
    assert_eq!(host.last_cold_start(), Some(cold_start));
    host.shutdown().await;
}

#[tokio::test]
async fn a_slow_initialisation_times_out_and_is_killed() {
    let mut spec = test_spec(TEST_FUNCTION);
    spec.init_timeout = Duration::from_millis(300);
    spec.environment
        .insert("TEST_FUNCTION_INIT".to_owned(), "sleep:30000".to_owned());
    let (host, output) = start(spec).await;
    let pid = host.pid().expect("a running process");

    let outcome = host.invoke(json!({})).await;
    assert_eq!(
        outcome,
        InvokeOutcome::TimedOut {
            after: Duration::from_millis(300)
        }
    );
    assert!(process_is_gone(pid));
    output
        .wait_for(|line| {
            line.stream == OutputStream::Platform && line.text.contains("Init timed out")
        })
        .await;
    host.shutdown().await;
}

#[tokio::test]
async fn concurrent_invocations_run_one_at_a_time_in_one_process() {
    let (host, _output) = start(test_spec(TEST_FUNCTION)).await;
    let (first, second) = tokio::join!(
        host.invoke(json!({"behaviour": "sleep:300"})),
        host.invoke(json!({"behaviour": "sleep:300"})),
    );
    let (first, second) = (expect_response(first), expect_response(second));
    assert_eq!(pid_of(&first), pid_of(&second));
    let span = |answer: &Value| {
        (
            answer["started_ms"].as_u64().expect("started"),
            answer["finished_ms"].as_u64().expect("finished"),
        )
    };
    let (a, b) = (span(&first), span(&second));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "overlapping invocations {a:?} and {b:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_rebuilt_binary_is_picked_up_before_the_next_invocation() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let binary = dir.path().join("bootstrap");
    std::fs::copy(TEST_FUNCTION, &binary).expect("copy the test function");
    let (host, output) = start(test_spec(&binary)).await;
    let old_pid = pid_of(&expect_response(host.invoke(json!({})).await));

    // Replace it the way cargo does (a new file moved into place), with a later timestamp.
    let staged = dir.path().join("bootstrap.new");
    std::fs::copy(TEST_FUNCTION, &staged).expect("copy the test function");
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .and_then(|file| file.set_modified(SystemTime::now() + Duration::from_secs(5)))
        .expect("set the modification time");
    std::fs::rename(&staged, &binary).expect("move the new binary into place");

    let answer = expect_response(host.invoke(json!({})).await);
    assert_ne!(pid_of(&answer), old_pid);
    assert!(process_is_gone(old_pid));
    output
        .wait_for(|line| line.stream == OutputStream::Platform && line.text.contains("rebuilt"))
        .await;

    // Unchanged since: the same process serves the next one.
    let again = expect_response(host.invoke(json!({})).await);
    assert_eq!(pid_of(&again), pid_of(&answer));
    host.shutdown().await;
}

#[tokio::test]
async fn shutdown_and_drop_leave_no_process_behind() {
    let (host, _output) = start(test_spec(TEST_FUNCTION)).await;
    let pid = pid_of(&expect_response(host.invoke(json!({})).await));
    host.shutdown().await;
    assert!(
        process_is_gone(pid),
        "shutdown waits for the process to be reaped"
    );
    assert_eq!(host.pid(), None);

    // After a shutdown the next invocation cold-starts a new process.
    let pid = pid_of(&expect_response(host.invoke(json!({})).await));
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} outlived its host");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_binary_is_refused_with_the_path_and_the_fix() {
    let missing = PathBuf::from("/nonexistent/usersync/bootstrap");
    let Err(err) = FunctionHost::start(test_spec(&missing)).await else {
        panic!("a missing binary must not start");
    };
    assert!(matches!(err, HostError::BinaryMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/usersync/bootstrap"),
        "{message}"
    );
    assert!(message.contains("cargo xtask build"), "{message}");
}

// ---------------------------------------------------------------------------------------
// The host with the real `bootstrap`
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_without_bucket_name_reports_an_init_error_naming_it() {
    let mut spec = test_spec(bootstrap());
    spec.environment = offline_aws_environment();
    let (host, _output) = start(spec).await;

    let outcome = host.invoke(json!({"Records": []})).await;
    let InvokeOutcome::FunctionError {
        error_type,
        message,
    } = outcome
    else {
        panic!("expected an init error, got {outcome:?}");
    };
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(message.contains("BUCKET_NAME"), "{message}");
    assert!(message.contains("exit status: 1"), "{message}");
    host.shutdown().await;
}

#[tokio::test]
async fn bootstrap_rejects_a_payload_that_is_not_a_stream_event() {
    let mut spec = test_spec(bootstrap());
    spec.environment = offline_aws_environment();
    spec.environment
        .insert("BUCKET_NAME".to_owned(), "usersync-test-bucket".to_owned());
    let function_name = spec.function_name.clone();
    let (host, output) = start(spec).await;

    let outcome = host.invoke(json!({"hello": 1})).await;
    let InvokeOutcome::FunctionError {
        error_type,
        message,
    } = outcome
    else {
        panic!("expected a function error, got {outcome:?}");
    };
    assert_eq!(error_type, "NotAStreamsEvent");
    assert!(
        message.contains("not a DynamoDB Streams event"),
        "{message}"
    );

    // An empty batch needs no S3 call and succeeds with no failures.
    let answer = expect_response(host.invoke(json!({"Records": []})).await);
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert!(host.last_cold_start().is_some());

    // Its summary is one line on stdout: an EMF record naming the function and the request.
    let summary = output
        .wait_for(|line| line.stream == OutputStream::Stdout && line.text.contains("\"_aws\""))
        .await;
    let record = usersync_function::testing::check_emf_line(&summary.text)
        .unwrap_or_else(|err| panic!("{err}: {}", summary.text));
    assert_eq!(record["message"], "batch processed");
    assert_eq!(record["FunctionName"], function_name.as_str());
    assert_eq!(
        record["requestId"].as_str(),
        summary.request_id.as_deref(),
        "{record:?}"
    );
    assert_eq!(record["Records"], 0);
    let summaries = output
        .lines()
        .into_iter()
        .filter(|line| line.text.contains("batch processed"))
        .count();
    assert_eq!(summaries, 1, "one summary line: {:#?}", output.lines());
    host.shutdown().await;
}

/// Lambda only delivers JSON, but a body that is not JSON (or not even UTF-8) must cost the
/// real `bootstrap` one failed invocation, not the process: lambda_runtime reports the
/// deserialisation error and asks for the next event. Driven through the Runtime API directly,
/// since the host sends JSON only.
#[tokio::test]
async fn bootstrap_survives_malformed_payloads() {
    let api = RuntimeApi::bind().await.expect("bind");
    let mut process = tokio::process::Command::new(bootstrap())
        .env_clear()
        .envs(offline_aws_environment())
        .env("BUCKET_NAME", "usersync-test-bucket")
        .env("AWS_LAMBDA_RUNTIME_API", api.address().to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "malformed")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("bootstrap starts");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), api.initialised()).await,
        Ok(InitState::Ready { .. })
    ));

    let bodies: [(&str, &'static [u8]); 4] = [
        ("not-json", b"not json"),
        ("empty", b""),
        ("truncated", b"{\"Records\": ["),
        ("not-utf8", b"\xff\xfe{\"Records\": []}"),
    ];
    for (request_id, body) in bodies {
        let pending = api.submit(invocation(request_id, body)).expect("submit");
        let completion = tokio::time::timeout(Duration::from_secs(10), pending.completion())
            .await
            .unwrap_or_else(|_| panic!("{request_id}: no answer"));
        let Some(Completion::Error(report)) = completion else {
            panic!("{request_id}: expected an error, got {completion:?}");
        };
        assert!(
            report.error_type.contains("DeserializeError"),
            "{request_id}: {report:?}"
        );
        assert!(
            report
                .error_message
                .contains("failed to deserialize the incoming data"),
            "{request_id}: {report:?}"
        );
        assert!(
            process.try_wait().expect("status").is_none(),
            "{request_id}: bootstrap exited"
        );
    }

    // The same process still serves a real event.
    let pending = api
        .submit(invocation("valid", br#"{"Records": []}"#))
        .expect("submit");
    let completion = tokio::time::timeout(Duration::from_secs(10), pending.completion())
        .await
        .expect("an answer");
    let Some(Completion::Response(body)) = completion else {
        panic!("expected a response, got {completion:?}");
    };
    let answer: Value = serde_json::from_slice(&body).expect("a JSON response");
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert!(process.try_wait().expect("status").is_none());
    process.kill().await.expect("kill");
}

// ---------------------------------------------------------------------------------------
// The Runtime API on its own, driven like a runtime would
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn runtime_api_hands_out_events_and_accepts_one_answer_per_invocation() {
    let api = RuntimeApi::bind().await.expect("bind");
    let base = format!("http://{}/2018-06-01/runtime", api.address());
    let client = reqwest::Client::new();

    // /next blocks until there is an event.
    let next = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/invocation/next");
        async move { client.get(url).send().await }
    });
    wait_until(|| matches!(api.init_state(), InitState::Ready { .. })).await;
    assert!(!next.is_finished());

    let unknown = client
        .post(format!("{base}/invocation/no-such-id/response"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_invalid_request_id(unknown).await;

    let pending = api
        .submit(invocation("req-1", br#"{"a":1}"#))
        .expect("submit");
    assert_eq!(pending.request_id(), "req-1");
    let event = next.await.expect("join").expect("next");
    assert_eq!(event.status(), 200);
    let header = |name: &str| {
        event
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("lambda-runtime-aws-request-id").as_deref(),
        Some("req-1")
    );
    assert_eq!(
        header("lambda-runtime-deadline-ms").as_deref(),
        Some("1700000000000")
    );
    assert_eq!(
        header("lambda-runtime-invoked-function-arn").as_deref(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:f")
    );
    assert_eq!(
        header("lambda-runtime-trace-id").as_deref(),
        Some("Root=1-x")
    );
    assert_eq!(header("lambda-runtime-client-context"), None);
    assert_eq!(event.bytes().await.expect("body").as_ref(), br#"{"a":1}"#);

    let url = format!("{base}/invocation/req-1/response");
    let accepted = client
        .post(&url)
        .body(r#"{"ok":true}"#)
        .send()
        .await
        .expect("response");
    assert_eq!(accepted.status(), 202);
    assert_eq!(
        accepted.json::<Value>().await.expect("json"),
        json!({"status": "OK"})
    );
    let again = client.post(&url).body("{}").send().await.expect("response");
    assert_invalid_request_id(again).await;
    assert_eq!(
        pending.completion().await,
        Some(Completion::Response(r#"{"ok":true}"#.into()))
    );

    // An answer to an invocation still queued (not handed out) is refused too.
    let queued = api.submit(invocation("req-2", b"{}")).expect("submit");
    let early = client
        .post(format!("{base}/invocation/req-2/response"))
        .body("{}")
        .send()
        .await
        .expect("response");
    assert_invalid_request_id(early).await;
    assert!(
        api.submit(invocation("req-2", b"{}")).is_err(),
        "duplicate id"
    );

    // Initialisation is over: an init error now is a state error.
    let late = client
        .post(format!("{base}/init/error"))
        .body("{}")
        .send()
        .await
        .expect("init error");
    assert_eq!(late.status(), 403);

    drop(queued);
}

#[tokio::test]
async fn dropping_the_runtime_api_answers_a_waiting_next_with_a_container_error() {
    let api = RuntimeApi::bind().await.expect("bind");
    let url = format!(
        "http://{}/2018-06-01/runtime/invocation/next",
        api.address()
    );
    let waiting = tokio::spawn(async move { reqwest::Client::new().get(url).send().await });
    // The first /next marks the runtime ready: the long-poll is now in the handler.
    wait_until(|| matches!(api.init_state(), InitState::Ready { .. })).await;
    drop(api);
    let response = waiting
        .await
        .expect("join")
        .expect("an answer, not a dropped connection");
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["errorType"], "Runtime.ContainerError");
}

#[tokio::test]
async fn runtime_api_reports_init_and_invocation_errors_in_lambda_format() {
    let api = RuntimeApi::bind().await.expect("bind");
    let base = format!("http://{}/2018-06-01/runtime", api.address());
    let client = reqwest::Client::new();

    // The error format lambda_runtime posts to /init/error.
    let init = client
        .post(format!("{base}/init/error"))
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .body(r#"{"errorType":"ConfigError","errorMessage":"BUCKET_NAME is not set"}"#)
        .send()
        .await
        .expect("init error");
    assert_eq!(init.status(), 202);
    assert_eq!(
        api.initialised().await,
        InitState::Failed(ErrorReport {
            error_type: "ConfigError".to_owned(),
            error_message: "BUCKET_NAME is not set".to_owned(),
        })
    );
    let twice = client
        .post(format!("{base}/init/error"))
        .body("{}")
        .send()
        .await
        .expect("init error");
    assert_eq!(twice.status(), 403);

    // An error response without a readable body takes its type from the header.
    let pending = api.submit(invocation("req-e", b"{}")).expect("submit");
    let next = client
        .get(format!("{base}/invocation/next"))
        .send()
        .await
        .expect("next");
    assert_eq!(next.status(), 200);
    let posted = client
        .post(format!("{base}/invocation/req-e/error"))
        .header("lambda-runtime-function-error-type", "Unhandled")
        .body("boom")
        .send()
        .await
        .expect("error");
    assert_eq!(posted.status(), 202);
    assert_eq!(
        pending.completion().await,
        Some(Completion::Error(ErrorReport {
            error_type: "Unhandled".to_owned(),
            error_message: "boom".to_owned(),
        }))
    );

    // A response over Lambda's 6 MB limit fails the invocation as Lambda does.
    let pending = api.submit(invocation("req-big", b"{}")).expect("submit");
    client
        .get(format!("{base}/invocation/next"))
        .send()
        .await
        .expect("next");
    let big = client
        .post(format!("{base}/invocation/req-big/response"))
        .body(vec![b' '; 7 * 1024 * 1024])
        .send()
        .await
        .expect("response");
    assert_eq!(big.status(), 413);
    let Some(Completion::Error(report)) = pending.completion().await else {
        panic!("an oversized response is an error");
    };
    assert_eq!(report.error_type, "Function.ResponseSizeTooLarge");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A line the function wrote, as the sink received it.
#[derive(Clone, Debug)]
struct Line {
    request_id: Option<String>,
    stream: OutputStream,
    text: String,
}

/// Collects the function's output (and echoes it to the test's stderr, for failures).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Line>>>);

impl Captured {
    fn sink(&self) -> OutputSink {
        let lines = self.0.clone();
        OutputSink::new(move |line| {
            eprintln!("{line}");
            lines
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Line {
                    request_id: line.request_id.map(str::to_owned),
                    stream: line.stream,
                    text: line.text.to_owned(),
                });
        })
    }

    fn lines(&self) -> Vec<Line> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The first line matching `wanted`, waiting a bounded time for it to be read.
    async fn wait_for(&self, wanted: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| wanted(line)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such output line in {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn test_spec(binary: impl Into<PathBuf>) -> FunctionSpec {
    let mut spec = FunctionSpec::new(binary, "echo");
    spec.timeout = Duration::from_secs(3);
    spec
}

async fn start(spec: FunctionSpec) -> (FunctionHost, Captured) {
    let output = Captured::default();
    let host = FunctionHost::start_with_output(spec, output.sink())
        .await
        .expect("the function starts");
    (host, output)
}

fn expect_response(outcome: InvokeOutcome) -> Value {
    match outcome {
        InvokeOutcome::Response(value) => value,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn pid_of(answer: &Value) -> u32 {
    answer["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("the test function reports its pid")
}

/// Whether no process has this id any more (exited and reaped).
fn process_is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn record(behaviour: &str) -> Value {
    json!({
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"name": {"S": "ada"}},
            "NewImage": {"name": {"S": "ada"}, "behaviour": {"S": behaviour}},
        },
    })
}

fn invocation(request_id: &str, payload: &'static [u8]) -> Invocation {
    Invocation {
        request_id: request_id.to_owned(),
        payload: payload.into(),
        deadline_ms: 1_700_000_000_000,
        invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".to_owned(),
        trace_id: "Root=1-x".to_owned(),
        client_context: None,
        cognito_identity: None,
    }
}

async fn assert_invalid_request_id(response: reqwest::Response) {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["errorType"], "InvalidRequestID");
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .expect("after the epoch")
}

/// Credentials, region and an endpoint nothing listens on: the function can build its S3
/// client but never reaches a real service.
fn offline_aws_environment() -> BTreeMap<String, String> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// The real `bootstrap`, built with the same profile as these tests on first use.
fn bootstrap() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_bootstrap) {
        Ok(path) => path.clone(),
        Err(err) => panic!("{err}"),
    }
}

fn build_bootstrap() -> Result<PathBuf, String> {
    // Cargo puts every binary of a profile in one directory: where the test function is.
    let profile_dir = Path::new(TEST_FUNCTION)
        .parent()
        .ok_or("the test function has no directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or("the profile directory has no name")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "-p",
        "usersync-function",
        "--bin",
        "bootstrap",
    ]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command
        .status()
        .map_err(|err| format!("could not run cargo to build bootstrap: {err}"))?;
    if !status.success() {
        return Err(format!("building bootstrap failed: {status}"));
    }
    let binary = profile_dir.join("bootstrap");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "cargo built bootstrap, but not at {}",
            binary.display()
        ))
    }
}
