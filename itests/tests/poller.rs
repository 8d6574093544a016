//! The local event source mapping poller against a real DynamoDB stream (the embedded
//! emulator): batch size and window, retries then the on-failure message, bisection, resuming
//! after a partial failure, and records older than the maximum age.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use deployer::target::Target;
use itests::emulator::{start, REGION};
use serde_json::{json, Value};
use tokio::sync::watch;
use usersync_local::emulator::Emulator;
use usersync_local::mapping::batch::{BatchEvent, RetryBackoff};
use usersync_local::mapping::poller::{Poller, PollerEvent, PollerOptions};
use usersync_local::mapping::settings::{MappingSettings, StartingPosition};
use usersync_local::runtime::function_host::{FunctionHost, FunctionSpec, OutputSink};
use usersync_local::runtime::invoke::{InvokeOutcome, Invoked, Invoker};

/// A table with a stream and a queue, on a private emulator.
struct Fixture {
    _emulator: Emulator,
    target: Target,
    table: String,
    stream_arn: String,
    queue_url: String,
    queue_arn: String,
}

async fn fixture(label: &str) -> Fixture {
    let emulator = start().await;
    let target = Target::for_endpoint(&emulator.endpoint_url(), REGION);
    let table = format!("poller-{label}");
    let created = target
        .dynamodb()
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("name")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("name")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create the table");
    let stream_arn = created
        .table_description()
        .and_then(|t| t.latest_stream_arn())
        .expect("the table has a stream")
        .to_owned();
    let queue_url = target
        .sqs()
        .create_queue()
        .queue_name(format!("poller-{label}-failures"))
        .send()
        .await
        .expect("create the queue")
        .queue_url
        .expect("a queue URL");
    let queue_arn = target
        .sqs()
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("read the queue's ARN")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("the queue has an ARN")
        .clone();
    Fixture {
        _emulator: emulator,
        target,
        table,
        stream_arn,
        queue_url,
        queue_arn,
    }
}

impl Fixture {
    fn settings(&self) -> MappingSettings {
        MappingSettings {
            uuid: "test-mapping".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:test".into(),
            stream_arn: self.stream_arn.clone(),
            batch_size: 100,
            batching_window: Duration::ZERO,
            parallelization_factor: 1,
            starting_position: StartingPosition::TrimHorizon,
            max_retry_attempts: Some(2),
            max_record_age: None,
            bisect_on_error: false,
            report_batch_item_failures: true,
            enabled: true,
            on_failure_destination: Some(self.queue_arn.clone()),
            has_filter_criteria: false,
        }
    }

    async fn put(&self, name: &str, extra: &[(&str, &str)]) {
        let mut request = self
            .target
            .dynamodb()
            .put_item()
            .table_name(&self.table)
            .item("name", AttributeValue::S(name.into()));
        for (k, v) in extra {
            request = request.item(*k, AttributeValue::S((*v).into()));
        }
        request.send().await.expect("put an item");
    }

    /// Starts a poller over `invoker`; the returned handle stops it.
    async fn run<I: Invoker + 'static>(
        &self,
        settings: MappingSettings,
        invoker: Arc<I>,
    ) -> RunningPoller {
        let events = Arc::new(Mutex::new(Vec::new()));
        let observed = Arc::clone(&events);
        let poller = Poller::new(
            settings,
            self.target.dynamodb_streams(),
            self.target.sqs(),
            invoker,
            PollerOptions {
                poll_interval: Duration::from_millis(50),
                discovery_interval: Duration::from_millis(500),
                retry_backoff: RetryBackoff {
                    first: Duration::from_millis(10),
                    max: Duration::from_millis(50),
                },
            },
            Arc::new(move |event| observed.lock().unwrap().push(event)),
        )
        .await
        .expect("create the poller");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(poller.run(stopped));
        RunningPoller { events, stop, task }
    }

    /// Every message in the failure queue, parsed.
    async fn failure_messages(&self) -> Vec<Value> {
        let mut messages = Vec::new();
        for _ in 0..5 {
            let received = self
                .target
                .sqs()
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("read the queue");
            if received.messages().is_empty() {
                break;
            }
            for message in received.messages() {
                messages.push(serde_json::from_str(message.body().unwrap_or("null")).unwrap());
            }
        }
        messages
    }
}

struct RunningPoller {
    events: Arc<Mutex<Vec<PollerEvent>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), usersync_local::mapping::poller::PollerError>>,
}

impl RunningPoller {
    async fn stop(self) -> Vec<PollerEvent> {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().expect("the poller ends cleanly");
        Arc::try_unwrap(self.events).unwrap().into_inner().unwrap()
    }
}

/// One record as the function saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    name: String,
    event: String,
    sequence: String,
}

/// An in-process function: records every invocation and answers from a script (or with
/// success once the script is used up).
type Answer = Box<dyn Fn(&[Seen]) -> InvokeOutcome + Send>;

#[derive(Default)]
struct RecordingFunction {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<(Instant, Vec<Seen>)>>,
}

impl RecordingFunction {
    fn scripted(script: Vec<Answer>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<Vec<Seen>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, seen)| seen.clone())
            .collect()
    }

    fn records_seen(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.len())
            .sum()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Invoker for RecordingFunction {
    fn invoke_reporting_id(&self, payload: Value) -> impl Future<Output = Invoked> + Send {
        let seen: Vec<Seen> = payload["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Seen {
                name: r["dynamodb"]["Keys"]["name"]["S"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                event: r["eventName"].as_str().unwrap().to_owned(),
                sequence: r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned(),
            })
            .collect();
        let answer = self.script.lock().unwrap().pop_front();
        let outcome = answer.map_or(
            InvokeOutcome::Response(json!({"batchItemFailures": []})),
            |f| f(&seen),
        );
        let request_id = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), seen));
            format!("recorded-{}", calls.len())
        };
        async move {
            Invoked {
                request_id,
                outcome,
            }
        }
    }
}

fn function_error() -> Answer {
    Box::new(|_| InvokeOutcome::FunctionError {
        error_type: "Boom".into(),
        message: "failing on purpose".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_records_in_lambdas_shape_in_batches_of_the_batch_size() {
    let fx = fixture("batches").await;
    for i in 0..25 {
        fx.put(&format!("user-{i:02}"), &[("plan", "free")]).await;
    }
    let mut settings = fx.settings();
    settings.batch_size = 10;
    let function = RecordingFunction::scripted(vec![]);
    let poller = fx.run(settings, Arc::clone(&function)).await;
    function
        .wait_for("25 records", |f| f.records_seen() >= 25)
        .await;
    let events = poller.stop().await;

    let sizes: Vec<usize> = function.calls().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5], "batch sizes");
    let names: Vec<String> = function
        .calls()
        .concat()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("user-{i:02}")).collect();
    assert_eq!(names, expected, "stream order is kept");
    assert!(events
        .iter()
        .any(|e| matches!(e, PollerEvent::ShardStarted { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batching_window_gathers_records_written_over_time() {
    let fx = fixture("window").await;
    let mut settings = fx.settings();
    settings.batching_window = Duration::from_secs(2);
    let function = RecordingFunction::scripted(vec![]);
    let poller = fx.run(settings, Arc::clone(&function)).await;
    // Five writes spread over about a second: one batch, sent when the window closes.
    let first_write = Instant::now();
    for i in 0..5 {
        fx.put(&format!("w-{i}"), &[]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    function
        .wait_for("5 records", |f| f.records_seen() >= 5)
        .await;
    let invoked_after = {
        let calls = function.calls.lock().unwrap();
        calls[0].0.duration_since(first_write)
    };
    poller.stop().await;
    assert_eq!(function.calls().len(), 1, "{:?}", function.calls());
    assert!(
        invoked_after >= Duration::from_millis(1500),
        "the batch waited for its window: {invoked_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_send_the_batch_to_the_failure_queue_and_the_shard_moves_on() {
    let fx = fixture("retries").await;
    fx.put("doomed-1", &[]).await;
    fx.put("doomed-2", &[]).await;
    let mut settings = fx.settings();
    settings.max_retry_attempts = Some(2);
    let function =
        RecordingFunction::scripted(vec![function_error(), function_error(), function_error()]);
    let poller = fx.run(settings, Arc::clone(&function)).await;
    function
        .wait_for("three attempts", |f| f.calls().len() >= 3)
        .await;
    // A later record still goes through: the shard was not blocked.
    fx.put("after", &[]).await;
    function
        .wait_for("the record after the discarded batch", |f| {
            f.calls().iter().flatten().any(|s| s.name == "after")
        })
        .await;
    let events = poller.stop().await;

    let calls = function.calls();
    assert_eq!(calls[0], calls[1]);
    assert_eq!(calls[1], calls[2]);
    assert_eq!(calls[0].len(), 2);
    let messages = fx.failure_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(
        message["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(message["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        message["requestContext"]["requestId"], "recorded-3",
        "the last failed invocation's own request id"
    );
    let info = &message["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 2);
    assert_eq!(
        info["startSequenceNumber"].as_str(),
        Some(calls[0][0].sequence.as_str())
    );
    assert_eq!(
        info["endSequenceNumber"].as_str(),
        Some(calls[0][1].sequence.as_str())
    );
    assert_eq!(info["streamArn"].as_str(), Some(fx.stream_arn.as_str()));
    assert!(info["shardId"].as_str().is_some_and(|s| !s.is_empty()));
    for field in [
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
    ] {
        let at = info[field].as_str().unwrap_or_default();
        assert!(has_milliseconds(at), "{field}: {at:?}");
    }
    let at = message["timestamp"].as_str().unwrap_or_default();
    assert!(has_milliseconds(at), "timestamp: {at:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, PollerEvent::Batch(BatchEvent::Discarded(d)) if d.records == 2)));
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: RFC 3339 in UTC with exactly three fractional digits.
fn has_milliseconds(at: &str) -> bool {
    let shape = "0000-00-00T00:00:00.000Z";
    at.len() == shape.len()
        && at.bytes().zip(shape.bytes()).all(|(c, s)| {
            if s == b'0' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_resumes_from_the_reported_record_without_losing_or_reordering() {
    let fx = fixture("partial").await;
    // Three users, three writes each, interleaved.
    for round in 0..3 {
        for user in ["ann", "ben", "cat"] {
            fx.put(user, &[("round", &round.to_string())]).await;
        }
    }
    // The first invocation reports ben's first record as failed (its earliest in the batch).
    let answer: Answer = Box::new(|seen| {
        let ben = seen.iter().find(|s| s.name == "ben").unwrap();
        InvokeOutcome::Response(json!({"batchItemFailures": [{"itemIdentifier": ben.sequence}]}))
    });
    let function = RecordingFunction::scripted(vec![answer]);
    let poller = fx.run(fx.settings(), Arc::clone(&function)).await;
    function
        .wait_for("the retry", |f| f.calls().len() >= 2)
        .await;
    poller.stop().await;

    let calls = function.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let all = &calls[0];
    assert_eq!(all.len(), 9);
    let ben_first = all.iter().position(|s| s.name == "ben").unwrap();
    assert_eq!(
        calls[1],
        all[ben_first..].to_vec(),
        "the retry starts at ben's first record and keeps the rest in order"
    );
    // What was applied, in order: the first call up to ben's record, then the whole retry.
    let mut applied: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for seen in all[..ben_first].iter().chain(&calls[1]) {
        applied
            .entry(seen.name.clone())
            .or_default()
            .push(seen.sequence.clone());
    }
    for (user, sequences) in &applied {
        assert_eq!(sequences.len(), 3, "{user}: every record applied once");
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{user}: in stream order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_isolates_the_record_the_real_function_fails_on() {
    let fx = fixture("bisect").await;
    for i in 0..8 {
        let behaviour = if i == 5 { "fail" } else { "echo" };
        fx.put(&format!("b-{i}"), &[("behaviour", behaviour)]).await;
    }
    let mut spec = FunctionSpec::new(env!("CARGO_BIN_EXE_test-function"), "test-function");
    spec.timeout = Duration::from_secs(10);
    // The function's log lines, by the request id they are tagged with.
    let lines: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = Arc::clone(&lines);
    let host = Arc::new(
        FunctionHost::start_with_output(
            spec,
            OutputSink::new(move |line| {
                if let Some(id) = line.request_id {
                    log.lock()
                        .unwrap()
                        .push((id.to_owned(), line.text.to_owned()));
                }
            }),
        )
        .await
        .expect("start the test function"),
    );
    let mut settings = fx.settings();
    settings.bisect_on_error = true;
    settings.max_retry_attempts = Some(4);
    let poller = fx.run(settings, Arc::clone(&host)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let messages = fx.failure_messages().await;
        if !messages.is_empty() || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events = poller.stop().await;
    host.shutdown().await;

    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0]["DDBStreamBatchInfo"]["batchSize"], 1,
        "only the failing record is discarded: {messages:?}"
    );
    // The message names the failed invocation the function logged: the request id the
    // function was given (it prints `handling <id>`), and its log lines' tag.
    let request_id = messages[0]["requestContext"]["requestId"]
        .as_str()
        .expect("a request id")
        .to_owned();
    let logged = lines.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|(id, text)| id == &request_id
                && text.contains(&format!("handling {request_id}"))),
        "no log line of invocation {request_id}: {logged:?}"
    );
    // The last invocation, of the failing record alone.
    let last_failed = events.iter().rev().find_map(|e| match e {
        PollerEvent::Batch(BatchEvent::Invoked(r))
            if r.records == 1 && r.verdict != usersync_local::mapping::batch::Verdict::Success =>
        {
            Some(r.request_id.clone())
        }
        _ => None,
    });
    assert_eq!(last_failed.as_deref(), Some(request_id.as_str()));
    let invoked: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|e| match e {
            PollerEvent::Batch(BatchEvent::Invoked(r)) => Some((
                r.records,
                r.verdict == usersync_local::mapping::batch::Verdict::Success,
            )),
            _ => None,
        })
        .collect();
    let applied: usize = invoked.iter().filter(|(_, ok)| *ok).map(|(n, _)| n).sum();
    assert_eq!(applied, 7, "every other record was applied: {invoked:?}");
    assert_eq!(
        invoked[0],
        (8, false),
        "the whole batch failed first: {invoked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_maximum_age_go_to_the_failure_queue_unseen() {
    let fx = fixture("age").await;
    fx.put("old-1", &[]).await;
    fx.put("old-2", &[]).await;
    // Stream timestamps have whole-second precision: wait well past the age limit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut settings = fx.settings();
    settings.max_record_age = Some(Duration::from_secs(1));
    let function = RecordingFunction::scripted(vec![]);
    let poller = fx.run(settings, Arc::clone(&function)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let messages = loop {
        let messages = fx.failure_messages().await;
        if !messages.is_empty() || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    poller.stop().await;
    assert!(function.calls().is_empty(), "{:?}", function.calls());
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0]["requestContext"]["condition"],
        "RecordAgeExceeded"
    );
    assert_eq!(messages[0]["DDBStreamBatchInfo"]["batchSize"], 2);
}
