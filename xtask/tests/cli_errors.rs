//! The real `xtask` binary given bad input: usage errors exit 2 with the parser's message; a
//! target that cannot be used exits 1 with one line naming the problem and the fix; and
//! nothing waits on the SDK's retries. Also: `synth` never writes credentials into a template.
//!
//! No AWS: the failing endpoints are a closed port and a stub on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// No failing command here may take longer than this (the SDK's retries would).
const QUICK: Duration = Duration::from_secs(5);

/// An empty settings file and a home without AWS profiles, so that neither the workspace's
/// `usersync.toml` nor the developer's `~/.aws` changes what these tests see.
fn isolated() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_errors");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    (config, home)
}

/// Runs `xtask` with `args`, no AWS settings from the environment but `env`.
fn xtask(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let (config, home) = isolated();
    let mut command = Command::new(XTASK);
    command.args(args).arg("--config").arg(&config);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied());
    let started = Instant::now();
    let output = command.output().expect("xtask runs");
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit code 2 and clap's `error: …` line containing every fragment.
fn assert_usage_error(args: &[&str], fragments: &[&str]) {
    let (output, _) = xtask(args, &[]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{args:?}: {text}");
    for fragment in fragments {
        assert!(
            first.contains(fragment),
            "{args:?}: {first:?} should contain {fragment:?}"
        );
    }
    assert!(output.stdout.is_empty(), "{args:?} printed a result");
}

/// Exit code 1, within [`QUICK`], and exactly one line, `error: …`, containing every fragment.
fn assert_one_line_failure(output: &Output, elapsed: Duration, fragments: &[&str]) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(elapsed < QUICK, "took {elapsed:?}: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not {}: {text}", lines.len());
    let line = lines[0];
    assert!(line.starts_with("error: failed to "), "{line}");
    for fragment in fragments {
        assert!(
            line.contains(fragment),
            "{line:?} should contain {fragment:?}"
        );
    }
    line.to_owned()
}

#[test]
fn an_unknown_flag_or_command_is_a_usage_error() {
    assert_usage_error(
        &["status", "--no-such-flag"],
        &["unexpected argument '--no-such-flag'"],
    );
    assert_usage_error(&["deploy", "--batchsize", "5"], &["'--batchsize'"]);
    assert_usage_error(&["frobnicate"], &["unrecognized subcommand 'frobnicate'"]);
}

#[test]
fn an_invalid_stack_name_is_a_usage_error_naming_the_rule() {
    const RULE: &str =
        "expected 1 to 57 characters of letters, digits and '-', starting with a letter";
    let too_long = "a".repeat(58);
    for (name, reason) in [
        ("1stack", "does not start with a letter"),
        (
            "my_stack",
            "holds a character other than a letter, digit or '-'",
        ),
        (too_long.as_str(), "longer than 57 characters"),
        ("", "empty"),
    ] {
        assert_usage_error(
            &["status", "--stack", name],
            &["--stack", "is not a valid stack name", reason, RULE],
        );
    }
}

#[test]
fn numbers_out_of_range_are_usage_errors_naming_the_range() {
    // A closed endpoint behind the flags: were a value accepted, the command would fail fast
    // with exit code 1 rather than build or deploy anything.
    let endpoint = closed_endpoint();
    for (flag, value, range) in [
        ("--batch-size", "0", "expected 1 to 10000"),
        ("--batch-size", "10001", "expected 1 to 10000"),
        ("--batch-size", "ten", "expected 1 to 10000"),
        ("--max-retries", "-2", "expected -1 to 10000"),
        ("--memory", "64", "expected 128 to 10240"),
    ] {
        assert_usage_error(
            &["deploy", "--endpoint-url", &endpoint, flag, value],
            &[flag, range],
        );
    }
}

#[test]
fn an_invalid_existing_table_or_bucket_is_a_usage_error_naming_the_rule() {
    let endpoint = closed_endpoint();
    for (flag, value, fragments) in [
        (
            "--existing-table",
            "ab",
            [
                "existing_table \"ab\" is invalid: shorter than 3 characters",
                "3 to 255 characters of letters, digits, '_', '.' and '-'",
            ],
        ),
        (
            "--existing-bucket",
            "Users_Mirror",
            [
                "existing_bucket \"Users_Mirror\" is invalid",
                "3 to 63 characters of a-z, 0-9, '.' and '-'",
            ],
        ),
    ] {
        assert_usage_error(
            &["deploy", "--endpoint-url", &endpoint, flag, value],
            &[flag, fragments[0], fragments[1]],
        );
    }
}

#[test]
fn an_endpoint_that_is_down_is_named_with_the_fix() {
    let endpoint = closed_endpoint();
    for command in ["status", "deploy", "teardown"] {
        let (output, elapsed) = xtask(&[command, "--endpoint-url", &endpoint, "--yes"], &[]);
        assert_one_line_failure(
            &output,
            elapsed,
            &[
                &format!("the endpoint {endpoint} is not reachable"),
                "connection refused",
                "--endpoint-url",
            ],
        );
    }
}

#[test]
fn expired_or_invalid_credentials_are_named_with_the_fix_without_retrying() {
    for (code, message) in [
        (
            "ExpiredToken",
            "The security token included in the request is expired",
        ),
        (
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
    ] {
        let stub = AwsErrorStub::start(403, code, message);
        let (output, elapsed) = xtask(&["status", "--endpoint-url", &stub.url], &[]);
        let line = assert_one_line_failure(
            &output,
            elapsed,
            &[
                "failed to describe stack usersync",
                "credentials as expired or invalid",
                &format!("{code}: {message}"),
                "aws sso login",
                "AWS_SESSION_TOKEN",
                "--profile",
            ],
        );
        assert_eq!(
            stub.requests(),
            1,
            "refused credentials are not retried: {line}"
        );
    }
}

#[test]
fn a_missing_toolchain_is_named_once_with_the_fix() {
    let (output, elapsed) = xtask(
        &["build"],
        &[
            ("CARGO", "/nonexistent/cargo"),
            ("RUSTC", "/nonexistent/rustc"),
        ],
    );
    let line = assert_one_line_failure(
        &output,
        elapsed,
        &[
            "failed to build the function",
            "/nonexistent/rustc",
            "set CARGO / RUSTC",
        ],
    );
    // The OS error is the chain's last layer: printed once, not also inside the message.
    let cause = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(line.matches(&cause).count(), 1, "{line}");
    assert!(line.ends_with(&format!("): {cause}")), "{line}");
}

#[test]
fn exit_code_zero_on_success() {
    let (output, _) = xtask(&["synth"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (output, _) = xtask(&["--help"], &[]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn synth_never_writes_credentials_from_the_environment_into_the_template() {
    // AWS's documented example keys: they look real to every scanner.
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue"),
    ];
    for args in [&["synth"][..], &["synth", "--yaml"]] {
        let (output, _) = xtask(args, &secrets);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("AWS::Lambda::Function"), "{text}");
        for (name, value) in secrets {
            assert!(!text.contains(value), "{name}'s value is in the template");
            assert!(
                !stderr(&output).contains(value),
                "{name}'s value was printed"
            );
        }
    }
}

/// `http://127.0.0.1:<port>` where nothing listens (a port just released by the OS).
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// An HTTP server on 127.0.0.1 that answers every request with one AWS error, in the shape
/// the request's protocol expects: the query protocol's XML (CloudFormation, STS) or the JSON
/// protocols' `__type` body.
struct AwsErrorStub {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl AwsErrorStub {
    fn start(status: u16, code: &'static str, message: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &counter, status, code, message);
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers one HTTP request on `stream`; counts it in `requests` (a connection that sends no
/// request, such as the target's reachability check, is not one).
fn answer(
    stream: TcpStream,
    requests: &AtomicUsize,
    status: u16,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mut content_length = 0;
    let mut json = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            content_length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("content-type:") && lower.contains("json") {
            json = true;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;

    let request_id = "4d7b2c1e-0000-4000-8000-000000000000";
    let (content_type, extra, body) = if json {
        (
            "application/x-amz-json-1.0",
            format!("x-amzn-query-error: {code};Sender\r\n"),
            format!(r#"{{"__type":"{code}","message":"{message}"}}"#),
        )
    } else {
        (
            "text/xml",
            String::new(),
            format!(
                "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\">\
                 <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>{request_id}</RequestId></ErrorResponse>"
            ),
        )
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Forbidden\r\nContent-Type: {content_type}\r\n\
         x-amzn-RequestId: {request_id}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[test]
fn synth_of_an_adopting_stack_reads_the_target_and_names_it_when_down() {
    // The template of an adopting stack holds the table's current stream ARN, so synth must
    // read it from the target, as deploy does, instead of printing a table of its own.
    let (_, home) = isolated();
    let config = home.join("adopting.toml");
    std::fs::write(&config, "existing_table = \"users\"\n").unwrap();
    let endpoint = closed_endpoint();
    let started = Instant::now();
    let output = Command::new(XTASK)
        .args(["synth", "--endpoint-url", &endpoint, "--config"])
        .arg(&config)
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("xtask runs");
    let line = assert_one_line_failure(
        &output,
        started.elapsed(),
        &[&format!("the endpoint {endpoint} is not reachable")],
    );
    assert!(output.stdout.is_empty(), "printed a template: {line}");
}

#[test]
fn a_settings_file_with_both_alarm_targets_is_refused_naming_both_and_the_file() {
    let (_, home) = isolated();
    let config = home.join("two-alarm-targets.toml");
    std::fs::write(
        &config,
        "alarm_email = \"ops@example.com\"\n\
         alarm_topic_arn = \"arn:aws:sns:eu-west-1:123456789012:ops-alarms\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let output = Command::new(XTASK)
        .args(["synth", "--config"])
        .arg(&config)
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("xtask runs");
    let line = assert_one_line_failure(
        &output,
        started.elapsed(),
        &[
            &format!("invalid settings in {}", config.display()),
            "alarm_email and alarm_topic_arn are both set: keep alarm_email for a topic the \
             stack creates",
        ],
    );
    assert!(output.stdout.is_empty(), "printed a template: {line}");
}
