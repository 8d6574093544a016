//! Malformed invocations: bodies that are not JSON, events of other sources, payloads without
//! a `Records` array, and records of the wrong shape. Each ends as README's rules say: a
//! payload that is not a DynamoDB Streams event fails the invocation with
//! `the payload is not a DynamoDB Streams event: …`; a record that can never succeed is logged
//! at ERROR with its eventID, sequence number and reason, counted, and passed over. Nothing
//! panics. (`handler.rs` covers the basic cases; the real `bootstrap` fed a body that is not
//! JSON is in `itests/tests/runtime_host.rs`.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lambda_events::streams::DynamoDbEventResponse;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{config, fixture, sequence_number, stream_record, MemoryStore};
use usersync_function::metrics::metric;
use usersync_function::testing::{check_emf_line, CapturedMetrics};
use usersync_function::{handle_event, process_batch, DeleteScope, Mirror, NotAStreamsEvent};

fn mirror() -> Mirror<MemoryStore> {
    mirror_with_metrics().0
}

/// [`mirror`], and what it writes as its batches' summaries.
fn mirror_with_metrics() -> (Mirror<MemoryStore>, CapturedMetrics) {
    capture_logs();
    let metrics = CapturedMetrics::new();
    let mirror = Mirror {
        store: MemoryStore::with_objects(&[("carol/userdata", r#"{"name":"carol"}"#)]),
        config: config(DeleteScope::Prefix),
        metrics: metrics.out(),
    };
    (mirror, metrics)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// What `main.rs` does with an invocation body: lambda_runtime deserialises it as
/// `LambdaEvent<serde_json::Value>` (the first JSON document of the body; what follows it is
/// not read), so a body that is not JSON never reaches the handler: the runtime reports the
/// deserialisation error for that invocation and asks for the next.
fn invoke_body(mirror: &Mirror<MemoryStore>, body: &[u8]) -> Result<DynamoDbEventResponse, String> {
    use serde::Deserialize as _;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let payload = Value::deserialize(&mut deserializer).map_err(|err| {
        format!("failed to deserialize the incoming data into the function's payload type: {err}")
    })?;
    block_on(handle_event(mirror, payload)).map_err(|err| err.to_string())
}

/// The handler's refusal of `payload`, checked for the documented prefix, `fragment`, and the
/// error type Lambda reports; nothing in the bucket may have been touched.
fn assert_refused(payload: Value, fragment: &str) {
    let mirror = mirror();
    let before = mirror.store.snapshot();
    let err: NotAStreamsEvent = block_on(handle_event(&mirror, payload.clone()))
        .expect_err(&format!("{payload} must be refused"));
    let message = err.to_string();
    assert!(
        message.starts_with("the payload is not a DynamoDB Streams event: "),
        "{message}"
    );
    assert!(
        message.contains(fragment),
        "{message:?} should contain {fragment:?}"
    );
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "NotAStreamsEvent");
    assert_eq!(diagnostic.error_message, message);
    assert_eq!(
        mirror.store.snapshot(),
        before,
        "{payload}: the bucket changed"
    );
    assert!(mirror.store.calls().is_empty());
}

#[test]
fn bodies_that_are_not_json_never_reach_the_handler() {
    let mirror = mirror();
    for body in [
        &b""[..],
        b"not json",
        b"Records=[]",
        b"{\"Records\": [",
        b"\xff\xfe{\x00}",
        b"{'Records': []}",
    ] {
        let err = invoke_body(&mirror, body).expect_err("not JSON");
        assert!(
            err.starts_with("failed to deserialize the incoming data"),
            "{err}"
        );
    }
    assert!(mirror.store.calls().is_empty());
    // The same runtime path with a JSON body does reach it; like lambda_runtime, it reads the
    // first document only (Lambda itself only ever sends one).
    assert!(invoke_body(&mirror, br#"{"Records": []}"#).is_ok());
    assert!(invoke_body(&mirror, br#"{"Records": []} trailing"#).is_ok());
    assert_eq!(
        invoke_body(&mirror, b"[]").unwrap_err(),
        "the payload is not a DynamoDB Streams event: expected a JSON object, got an array"
    );
}

#[test]
fn events_of_other_sources_fail_the_invocation_naming_the_source() {
    assert_refused(fixture("sqs_event.json"), "records of \"aws:sqs\"");
    assert_refused(fixture("s3_event.json"), "records of \"aws:s3\"");
    assert_refused(fixture("eventbridge_event.json"), "no \"Records\" array");
    assert_refused(
        json!({"Records": [{"eventSource": "aws:kinesis", "kinesis": {"data": "e30="}}]}),
        "records of \"aws:kinesis\"",
    );
    // One foreign record refuses the whole payload: nothing of it is applied.
    assert_refused(
        json!({"Records": [
            stream_record("REMOVE", "carol", 1, None),
            {"eventSource": "aws:sns", "Sns": {"Message": "hi"}},
        ]}),
        "records of \"aws:sns\"",
    );
}

/// A record that is an array has no `eventSource`, whatever it holds: it is skipped as
/// malformed, and the payload's stream records are applied.
#[test]
fn an_array_among_the_records_is_skipped_not_taken_for_a_foreign_source() {
    let mirror = mirror();
    let payload = json!({"Records": [
        stream_record("INSERT", "dora", 1, Some(json!({}))),
        ["aws:sns"],
    ]});
    let response = block_on(handle_event(&mirror, payload)).expect("a streams event");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        mirror.store.json_body("dora/userdata"),
        Some(json!({"name": "dora"}))
    );
}

#[test]
fn payloads_without_a_records_array_say_what_they_are() {
    for (payload, fragment) in [
        (json!(null), "expected a JSON object, got null"),
        (json!(42), "expected a JSON object, got a number"),
        (json!(true), "expected a JSON object, got a boolean"),
        (
            json!([stream_record("INSERT", "a", 1, None)]),
            "got an array",
        ),
        (json!({}), "it has no \"Records\" array"),
        (json!({"records": []}), "it has no \"Records\" array"),
        (
            json!({"Records": null}),
            "\"Records\" is null, expected an array",
        ),
        (
            json!({"Records": "[]"}),
            "\"Records\" is a string, expected an array",
        ),
        (
            json!({"Records": 3}),
            "\"Records\" is a number, expected an array",
        ),
    ] {
        assert_refused(payload, fragment);
    }
}

/// Every log line of this test binary, as plain text without colours, each with the name of
/// the thread that wrote it (a test's thread is named after the test).
///
/// One global subscriber rather than a scoped one per test: tracing caches whether a call site
/// is enabled, and a test running without a subscriber at the same moment can leave a scoped
/// subscriber's call sites disabled.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn capture_logs() {
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(buffer.clone());
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(move || writer.clone())
            .init();
        buffer
    });
}

/// The log lines written so far on this thread.
fn logs_of_this_thread() -> Vec<String> {
    let name = std::thread::current()
        .name()
        .expect("a test thread has a name")
        .to_owned();
    let bytes = LOGS
        .get()
        .expect("capture_logs was called")
        .lock()
        .unwrap()
        .clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(&format!(" {name}:")) || line.contains(&format!(" {name} ")))
        .map(str::to_owned)
        .collect()
}

/// `stream_record` with `change` applied to its JSON.
fn altered(event_id: &str, sequence: u64, change: impl FnOnce(&mut Value)) -> Value {
    let mut value = stream_record(
        "INSERT",
        "dora",
        sequence,
        Some(json!({"plan": {"S": "pro"}})),
    );
    value["eventID"] = json!(event_id);
    change(&mut value);
    value
}

#[test]
fn records_of_the_wrong_shape_are_logged_skipped_and_the_rest_applied() {
    const MALFORMED: &str = "not a DynamoDB stream record";
    const NO_SEQUENCE: &str = "the record has no dynamodb.SequenceNumber";
    const NO_KEY: &str = "key attribute \"name\" is missing from the record";
    // (record, the eventID and sequence number its log line names, the reason it gives)
    let bad: Vec<(Value, &str, Option<u64>, &str)> = vec![
        (
            altered("event-name-number", 1, |r| r["eventName"] = json!(7)),
            "event-name-number",
            Some(1),
            MALFORMED,
        ),
        (
            altered("dynamodb-string", 2, |r| r["dynamodb"] = json!("name=dora")),
            "dynamodb-string",
            None,
            MALFORMED,
        ),
        (
            altered("dynamodb-null", 3, |r| r["dynamodb"] = Value::Null),
            "dynamodb-null",
            None,
            MALFORMED,
        ),
        (
            altered("dynamodb-missing", 4, |r| {
                r.as_object_mut().unwrap().remove("dynamodb");
            }),
            "dynamodb-missing",
            None,
            MALFORMED,
        ),
        (
            altered("keys-missing", 5, |r| {
                let d = r["dynamodb"].as_object_mut().unwrap();
                d.remove("Keys");
                d.remove("NewImage");
            }),
            "keys-missing",
            Some(5),
            NO_KEY,
        ),
        (
            altered("keys-null", 6, |r| {
                r["dynamodb"]["Keys"] = Value::Null;
                r["dynamodb"].as_object_mut().unwrap().remove("NewImage");
            }),
            "keys-null",
            Some(6),
            NO_KEY,
        ),
        (
            altered("keys-list", 7, |r| {
                r["dynamodb"]["Keys"] = json!(["name", "dora"])
            }),
            "keys-list",
            Some(7),
            MALFORMED,
        ),
        (
            altered("sequence-missing", 8, |r| {
                r["dynamodb"]
                    .as_object_mut()
                    .unwrap()
                    .remove("SequenceNumber");
            }),
            "sequence-missing",
            None,
            NO_SEQUENCE,
        ),
        (
            altered("sequence-number-type", 9, |r| {
                r["dynamodb"]["SequenceNumber"] = json!(9)
            }),
            "sequence-number-type",
            None,
            MALFORMED,
        ),
        (
            altered("image-s-number", 10, |r| {
                r["dynamodb"]["NewImage"]["plan"] = json!({"S": 5})
            }),
            "image-s-number",
            Some(10),
            MALFORMED,
        ),
        (
            altered("image-n-bool", 11, |r| {
                r["dynamodb"]["NewImage"]["plan"] = json!({"N": true})
            }),
            "image-n-bool",
            Some(11),
            MALFORMED,
        ),
        (
            altered("image-unknown-type", 12, |r| {
                r["dynamodb"]["NewImage"]["plan"] = json!({"Q": "1"})
            }),
            "image-unknown-type",
            Some(12),
            MALFORMED,
        ),
        (
            altered("image-two-types", 13, |r| {
                r["dynamodb"]["NewImage"]["plan"] = json!({"S": "a", "N": "1"})
            }),
            "image-two-types",
            Some(13),
            MALFORMED,
        ),
        (
            altered("image-untyped", 14, |r| {
                r["dynamodb"]["NewImage"]["plan"] = json!("pro")
            }),
            "image-untyped",
            Some(14),
            MALFORMED,
        ),
        (
            altered("image-list", 15, |r| {
                r["dynamodb"]["NewImage"] = json!([1, 2])
            }),
            "image-list",
            Some(15),
            MALFORMED,
        ),
        (
            altered("-", 16, |r| {
                r.as_object_mut().unwrap().remove("eventID");
            }),
            "-",
            Some(16),
            MALFORMED,
        ),
        (json!(7), "-", None, MALFORMED),
        (Value::Null, "-", None, MALFORMED),
        (json!("INSERT dora"), "-", None, MALFORMED),
        (json!([]), "-", None, MALFORMED),
        // An array is no record, even one whose first element reads like an event source.
        (json!(["aws:sns"]), "-", None, MALFORMED),
    ];
    let mut records = vec![stream_record("INSERT", "first", 100, Some(json!({})))];
    records.extend(bad.iter().map(|(record, ..)| record.clone()));
    records.push(stream_record(
        "MODIFY",
        "carol",
        101,
        Some(json!({"plan": {"S": "team"}})),
    ));

    let (mirror, metrics) = mirror_with_metrics();
    let (response, summary) = block_on(process_batch(&mirror, records));
    let logs = logs_of_this_thread();

    assert!(
        response.batch_item_failures.is_empty(),
        "records that can never succeed must not block the shard"
    );
    assert_eq!(summary.records, bad.len() + 2);
    assert_eq!(summary.skipped, bad.len());
    assert_eq!(summary.puts, 2);
    assert_eq!(
        mirror.store.json_body("first/userdata"),
        Some(json!({"name": "first"}))
    );
    assert_eq!(
        mirror.store.json_body("carol/userdata"),
        Some(json!({"name": "carol", "plan": "team"}))
    );
    assert_eq!(
        mirror.store.json_body("dora/userdata"),
        None,
        "no bad record was applied"
    );

    let skipped: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("skipped a record that can never succeed"))
        .collect();
    assert_eq!(skipped.len(), bad.len(), "{logs:#?}");
    for (line, (_, event_id, sequence, reason)) in skipped.iter().zip(&bad) {
        let sequence = sequence.map_or_else(|| "-".to_owned(), sequence_number);
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains(&format!("event_id=\"{event_id}\""))
                || line.contains(&format!("event_id={event_id}")),
            "{line} should name {event_id}"
        );
        assert!(
            line.contains(&format!("sequence_number={sequence}"))
                || line.contains(&format!("sequence_number=\"{sequence}\"")),
            "{line} should name {sequence}"
        );
        assert!(line.contains(reason), "{line} should give {reason:?}");
    }
    let summary_lines = metrics.lines();
    assert_eq!(
        summary_lines.len(),
        1,
        "one summary line: {summary_lines:#?}"
    );
    let summary_line = check_emf_line(&summary_lines[0]).expect("an EMF record");
    assert_eq!(summary_line["message"], "batch processed");
    assert_eq!(summary_line[metric::SKIPPED], bad.len(), "{summary_line:?}");
}

#[test]
fn a_bad_record_between_good_ones_of_the_same_user_leaves_the_last_good_write() {
    let records = vec![
        stream_record("INSERT", "erin", 1, Some(json!({"v": {"N": "1"}}))),
        altered("bad", 2, |r| {
            r["dynamodb"]["Keys"]["name"] = json!({"S": "erin"});
            r["dynamodb"]["NewImage"] = json!({"name": {"S": "erin"}, "v": {"N": []}});
        }),
        stream_record("MODIFY", "erin", 3, Some(json!({"v": {"N": "3"}}))),
        altered("bad-remove", 4, |r| {
            r["eventName"] = json!("REMOVE");
            r["dynamodb"]["Keys"] = json!({"name": {"S": 4}});
        }),
    ];
    let mirror = mirror();
    let (response, summary) = block_on(process_batch(&mirror, records));
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.skipped, 2);
    assert_eq!(
        mirror.store.json_body("erin/userdata"),
        Some(json!({"name": "erin", "v": 3}))
    );
}

/// JSON that looks like stream records often enough to get past the first checks: objects
/// keyed by the fields the function reads, holding values of every kind.
fn stream_like_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "INSERT",
            "MODIFY",
            "REMOVE",
            "aws:dynamodb",
            "alice",
            "a/b",
            "..",
            "",
            "%",
            "1",
            "1e400",
            "-0",
            "AAEC",
            "NEW_AND_OLD_IMAGES",
        ])
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "eventID",
        "eventName",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "Keys",
        "NewImage",
        "OldImage",
        "SequenceNumber",
        "SizeBytes",
        "ApproximateCreationDateTime",
        "name",
        "S",
        "N",
        "B",
        "BOOL",
        "NULL",
        "M",
        "L",
        "SS",
        "NS",
        "BS",
    ]);
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|map| Value::Object(
                map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever the records hold, the handler answers: applied and skipped records add up, and
    /// nothing is reported as failed (the in-memory bucket never fails).
    #[test]
    fn no_record_makes_the_handler_panic(records in prop::collection::vec(stream_like_json(), 0..6)) {
        let mirror = mirror();
        let count = records.len();
        let payload = json!({ "Records": records });
        match block_on(handle_event(&mirror, payload.clone())) {
            Ok(response) => prop_assert!(response.batch_item_failures.is_empty()),
            Err(err) => prop_assert!(err.to_string().contains("records of"), "{err}"),
        }
        let records: Vec<Value> = payload["Records"].as_array().unwrap().clone();
        let (_, summary) = block_on(process_batch(&mirror, records));
        prop_assert_eq!(summary.records, count);
    }
}
