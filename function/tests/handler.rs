//! The handler over an in-memory bucket: behaviour, ordering, failures and bad input.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use support::{config, fixture, sequence_number, stream_record, MemoryStore};
use usersync_function::metrics::{metric, DIMENSION};
use usersync_function::testing::{
    check_emf_line, metrics::FUNCTION_NAME, string_value, CapturedMetrics, InjectedFailures,
    RecordBuilder,
};
use usersync_function::{
    handle_event, handle_invocation, handle_payload, process_batch, stream_records, DeleteScope,
    Mirror, NotAStreamsEvent,
};

fn mirror(store: MemoryStore, scope: DeleteScope) -> Mirror<MemoryStore> {
    mirror_with_metrics(store, scope).0
}

/// [`mirror`], and what it writes as its batches' summaries.
fn mirror_with_metrics(
    store: MemoryStore,
    scope: DeleteScope,
) -> (Mirror<MemoryStore>, CapturedMetrics) {
    let metrics = CapturedMetrics::new();
    let mirror = Mirror {
        store,
        config: config(scope),
        metrics: metrics.out(),
    };
    (mirror, metrics)
}

/// The one summary line `metrics` holds, checked against the EMF specification.
fn only_summary(metrics: &CapturedMetrics) -> Map<String, Value> {
    let lines = metrics.lines();
    assert_eq!(lines.len(), 1, "one summary line per batch: {lines:#?}");
    check_emf_line(&lines[0]).unwrap_or_else(|err| panic!("{err}: {}", lines[0]))
}

fn epoch_ms(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn failures(response: &aws_lambda_events::streams::DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn a_real_event_puts_modifies_and_deletes() {
    let mirror = mirror(
        MemoryStore::with_objects(&[("carol/userdata", "{}")]),
        DeleteScope::Object,
    );
    let response = handle_event(&mirror, fixture("insert_modify_remove.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        mirror.store.json_body("alice/userdata"),
        Some(json!({"name": "alice", "plan": "enterprise", "seats": 50}))
    );
    assert_eq!(
        mirror.store.json_body("bob/userdata"),
        Some(json!({"name": "bob", "plan": "free"}))
    );
    assert_eq!(mirror.store.snapshot().len(), 2, "carol's object is gone");
    // alice's INSERT and MODIFY were coalesced into one put.
    let calls = mirror.store.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.as_str() == "put alice/userdata")
            .count(),
        1
    );
}

#[tokio::test]
async fn keys_only_records_write_the_keys_and_ttl_removals_delete() {
    let mirror = mirror(
        MemoryStore::with_objects(&[("erin/userdata", "{}")]),
        DeleteScope::Object,
    );
    let response = handle_event(&mirror, fixture("ttl_expiry_keys_only.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        mirror.store.json_body("dave/userdata"),
        Some(json!({"name": "dave"}))
    );
    assert_eq!(mirror.store.json_body("erin/userdata"), None);
}

#[tokio::test]
async fn records_that_can_never_succeed_are_skipped_not_retried() {
    let mirror = mirror(MemoryStore::default(), DeleteScope::Object);
    let records = stream_records(fixture("poison_records.json")).unwrap();
    let (response, summary) = process_batch(&mirror, records).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "poison records must not block the shard"
    );
    assert_eq!(summary.records, 7);
    assert_eq!(summary.skipped, 6);
    assert_eq!(summary.puts, 1);
    assert_eq!(
        mirror.store.json_body("good/userdata"),
        Some(json!({"name": "good"}))
    );
}

#[tokio::test]
async fn a_key_over_the_s3_limit_is_skipped_and_later_records_still_apply() {
    let mirror = mirror(MemoryStore::default(), DeleteScope::Object);
    let long = "x".repeat(1020);
    let records = vec![
        stream_record("INSERT", &long, 1, Some(json!({}))),
        stream_record("INSERT", "after", 2, Some(json!({}))),
    ];
    let (response, summary) = process_batch(&mirror, records).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.skipped, 1);
    assert_eq!(
        mirror.store.snapshot().keys().collect::<Vec<_>>(),
        ["after/userdata"]
    );
}

#[tokio::test]
async fn a_failed_user_is_reported_by_its_earliest_sequence_number() {
    let store = MemoryStore::failing(&["bob/userdata"]);
    let mirror = mirror(store, DeleteScope::Object);
    let records = vec![
        stream_record("INSERT", "alice", 10, Some(json!({}))),
        stream_record("INSERT", "bob", 11, Some(json!({"v": {"N": "1"}}))),
        stream_record("INSERT", "carol", 12, Some(json!({}))),
        stream_record("MODIFY", "bob", 13, Some(json!({"v": {"N": "2"}}))),
    ];
    let (response, summary) = process_batch(&mirror, records).await;
    assert_eq!(failures(&response), [sequence_number(11)]);
    assert_eq!(summary.failed_users, 1);
    let keys: Vec<String> = mirror.store.snapshot().into_keys().collect();
    assert_eq!(keys, ["alice/userdata", "carol/userdata"]);
}

#[tokio::test]
async fn several_failed_users_are_reported_in_stream_order() {
    let store = MemoryStore::failing(&["c/userdata", "a/userdata"]);
    let mirror = mirror(store, DeleteScope::Object);
    let records = (0..6)
        .map(|i| stream_record("INSERT", ["a", "b", "c"][i % 3], i as u64, Some(json!({}))))
        .collect();
    let (response, _) = process_batch(&mirror, records).await;
    assert_eq!(
        failures(&response),
        [sequence_number(0), sequence_number(2)]
    );
}

#[tokio::test]
async fn a_batchs_removals_go_in_one_delete_and_a_failed_key_fails_only_its_user() {
    let store = MemoryStore::with_objects(&[
        ("a/userdata", "{}"),
        ("b/userdata", "{}"),
        ("c/userdata", "{}"),
        ("d/userdata", "{}"),
    ])
    .with_failures(InjectedFailures::Keys(["c/userdata".to_owned()].into()));
    let mirror = mirror(store, DeleteScope::Object);
    let records = vec![
        stream_record("REMOVE", "a", 1, None),
        stream_record("INSERT", "e", 2, Some(json!({}))),
        stream_record("REMOVE", "c", 3, None),
        stream_record("INSERT", "d", 4, Some(json!({}))),
        stream_record("REMOVE", "d", 5, None),
        stream_record("REMOVE", "b", 6, None),
    ];
    let (response, summary) = process_batch(&mirror, records).await;
    assert_eq!(failures(&response), [sequence_number(3)], "only c failed");
    assert_eq!((summary.puts, summary.deletes), (1, 4));
    let calls = mirror.store.calls();
    let deletes: Vec<&String> = calls.iter().filter(|c| c.starts_with("delete")).collect();
    assert_eq!(
        deletes,
        ["delete_many a/userdata c/userdata d/userdata b/userdata"],
        "one request for the four removals, in stream order"
    );
    let keys: Vec<String> = mirror.store.snapshot().into_keys().collect();
    assert_eq!(keys, ["c/userdata", "e/userdata"]);
}

#[tokio::test]
async fn a_failed_prefix_delete_stops_the_users_later_put() {
    let store = MemoryStore::failing(&["alice/"]);
    let mirror = mirror(store, DeleteScope::Prefix);
    let records = vec![
        stream_record("REMOVE", "alice", 1, None),
        stream_record("INSERT", "alice", 2, Some(json!({}))),
    ];
    let (response, _) = process_batch(&mirror, records).await;
    assert_eq!(failures(&response), [sequence_number(1)]);
    assert!(
        mirror.store.snapshot().is_empty(),
        "the put must not overtake the failed delete"
    );
}

#[tokio::test]
async fn insert_then_remove_in_one_batch_leaves_nothing() {
    let mirror = mirror(MemoryStore::default(), DeleteScope::Object);
    let records = vec![
        stream_record("INSERT", "alice", 1, Some(json!({}))),
        stream_record("REMOVE", "alice", 2, None),
    ];
    let (response, summary) = process_batch(&mirror, records).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (summary.puts, summary.deletes, summary.coalesced),
        (0, 1, 1)
    );
    assert!(mirror.store.snapshot().is_empty());
}

#[tokio::test]
async fn prefix_scope_removes_everything_under_the_user_only() {
    let store = MemoryStore::with_objects(&[
        ("alice/userdata", "{}"),
        ("alice/avatar.png", "png"),
        ("alice2/userdata", "{}"),
        ("alicex/userdata", "{}"),
    ]);
    let mirror = mirror(store, DeleteScope::Prefix);
    let (response, _) =
        process_batch(&mirror, vec![stream_record("REMOVE", "alice", 1, None)]).await;
    assert!(response.batch_item_failures.is_empty());
    let keys: Vec<String> = mirror.store.snapshot().into_keys().collect();
    assert_eq!(keys, ["alice2/userdata", "alicex/userdata"]);
}

#[tokio::test]
async fn names_cannot_reach_another_users_objects() {
    let store = MemoryStore::with_objects(&[("bob/userdata", "{}"), ("bob/secret", "s")]);
    let mirror = mirror(store, DeleteScope::Prefix);
    let records = vec![
        stream_record("REMOVE", "bob/..", 1, None),
        stream_record("REMOVE", "..", 2, None),
        stream_record("INSERT", "bob/userdata", 3, Some(json!({}))),
    ];
    let (response, _) = process_batch(&mirror, records).await;
    assert!(response.batch_item_failures.is_empty());
    let keys: Vec<String> = mirror.store.snapshot().into_keys().collect();
    assert_eq!(
        keys,
        ["bob%2Fuserdata/userdata", "bob/secret", "bob/userdata"]
    );
}

#[tokio::test]
async fn payloads_that_are_not_stream_events_fail_the_invocation_clearly() {
    let mirror = mirror(MemoryStore::default(), DeleteScope::Object);
    let cases: Vec<(Value, &str)> = vec![
        (json!("hello"), "expected a JSON object, got a string"),
        (json!({"detail": {}}), "no \"Records\" array"),
        (json!({"Records": {}}), "\"Records\" is an object"),
        (
            json!({"Records": [{"eventSource": "aws:sqs", "body": "x"}]}),
            "records of \"aws:sqs\"",
        ),
    ];
    for (payload, fragment) in cases {
        let err: NotAStreamsEvent = handle_event(&mirror, payload).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("the payload is not a DynamoDB Streams event"),
            "{message}"
        );
        assert!(
            message.contains(fragment),
            "{message:?} should contain {fragment:?}"
        );
    }
    let response = handle_event(&mirror, json!({"Records": []})).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn a_batch_writes_one_emf_summary_with_its_counts_and_lag() {
    let store = MemoryStore::with_objects(&[("bob/userdata", "{}")])
        .with_failures(InjectedFailures::Keys(["carol/userdata".to_owned()].into()));
    let (mirror, metrics) = mirror_with_metrics(store, DeleteScope::Object);
    let now_s = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let user = |event, sequence, name: &str| {
        RecordBuilder::new(event, sequence).key("name", string_value(name))
    };
    let records = vec![
        user("INSERT", 1, "alice")
            .new_image_with_keys(json!({}))
            .creation_time(now_s - 30)
            .build(),
        user("MODIFY", 2, "alice")
            .new_image_with_keys(json!({"plan": string_value("pro")}))
            .creation_time(now_s - 20)
            .build(),
        user("REMOVE", 3, "bob").creation_time(now_s - 10).build(),
        user("INSERT", 4, "carol")
            .new_image_with_keys(json!({}))
            .without_creation_time()
            .build(),
        // No key attribute: skipped.
        RecordBuilder::new("INSERT", 5)
            .creation_time(now_s - 5)
            .build(),
    ];

    let before = SystemTime::now();
    let (response, summary) = process_batch(&mirror, records).await;
    let after = SystemTime::now();
    assert_eq!(failures(&response), [sequence_number(4)]);

    let line = only_summary(&metrics);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "batch processed");
    assert_eq!(line[DIMENSION], FUNCTION_NAME);
    assert_eq!(line["users"], 3);
    assert!(line["ms"].is_u64());
    let counts: Vec<(&str, u64)> = [
        metric::RECORDS,
        metric::PUTS,
        metric::DELETES,
        metric::COALESCED,
        metric::SKIPPED,
        metric::FAILED_USERS,
    ]
    .into_iter()
    .map(|name| (name, line[name].as_u64().unwrap()))
    .collect();
    assert_eq!(
        counts,
        [
            (metric::RECORDS, 5),
            (metric::PUTS, 2),
            (metric::DELETES, 1),
            (metric::COALESCED, 1),
            (metric::SKIPPED, 1),
            (metric::FAILED_USERS, 1),
        ]
    );

    // The oldest record's age when the batch was done, which the record's timestamp says.
    let oldest_ms = u64::try_from(now_s - 30).unwrap() * 1000;
    let lag = line[metric::LAG_MS].as_u64().expect("a lag");
    let at = line["_aws"]["Timestamp"].as_u64().unwrap();
    assert!((epoch_ms(before)..=epoch_ms(after)).contains(&at), "{at}");
    assert_eq!(lag, at - oldest_ms);
    assert_eq!(summary.lag_ms, Some(lag));
    assert_eq!(
        (summary.records, summary.users, summary.failed_users),
        (5, 3, 1)
    );
}

#[tokio::test]
async fn a_batch_without_creation_times_reports_no_lag_rather_than_zero() {
    let (mirror, metrics) = mirror_with_metrics(MemoryStore::default(), DeleteScope::Object);
    let records = vec![RecordBuilder::new("INSERT", 1)
        .key("name", string_value("alice"))
        .without_creation_time()
        .build()];
    let (_, summary) = process_batch(&mirror, records).await;
    assert_eq!(summary.lag_ms, None);
    let line = only_summary(&metrics);
    assert!(!line.contains_key(metric::LAG_MS), "{line:?}");
    assert_eq!(line[metric::RECORDS], 1);

    let (mirror, metrics) = mirror_with_metrics(MemoryStore::default(), DeleteScope::Object);
    handle_event(&mirror, json!({"Records": []})).await.unwrap();
    let line = only_summary(&metrics);
    assert_eq!(line[metric::RECORDS], 0);
    assert!(!line.contains_key(metric::LAG_MS), "{line:?}");
}

#[tokio::test]
async fn an_invocation_s_summary_names_its_request() {
    let payload = serde_json::value::to_raw_value(&fixture("insert_modify_remove.json")).unwrap();

    let (mirror, metrics) = mirror_with_metrics(MemoryStore::default(), DeleteScope::Object);
    handle_invocation(&mirror, &payload, "req-7").await.unwrap();
    assert_eq!(only_summary(&metrics)["requestId"], "req-7");

    let (mirror, metrics) = mirror_with_metrics(MemoryStore::default(), DeleteScope::Object);
    handle_payload(&mirror, &payload).await.unwrap();
    assert!(!only_summary(&metrics).contains_key("requestId"));
}

#[tokio::test]
async fn a_refused_payload_writes_no_summary() {
    let (mirror, metrics) = mirror_with_metrics(MemoryStore::default(), DeleteScope::Object);
    handle_event(&mirror, json!({"detail": {}}))
        .await
        .unwrap_err();
    assert!(metrics.lines().is_empty());
}

#[test]
fn the_response_serializes_as_lambda_expects() {
    let mut failure = aws_lambda_events::streams::DynamoDbBatchItemFailure::default();
    failure.item_identifier = Some("42".to_owned());
    let mut response = aws_lambda_events::streams::DynamoDbEventResponse::default();
    response.batch_item_failures.push(failure);
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": "42"}]})
    );
}

#[derive(Clone, Debug)]
enum Op {
    Write(u8),
    Remove,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => (0u8..4).prop_map(Op::Write), 2 => Just(Op::Remove)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The bucket after a batch equals applying its records one by one, whatever the
    /// interleaving of users, the delete scope and the concurrency.
    #[test]
    fn a_batch_equals_its_records_applied_in_order(
        ops in prop::collection::vec((0usize..4, op()), 0..40),
        prefix_scope in any::<bool>(),
        extras in prop::collection::vec(0usize..4, 0..4),
        concurrency in 1usize..8,
    ) {
        let users = ["ann", "ben", "cy", "ann2"];
        let scope = if prefix_scope { DeleteScope::Prefix } else { DeleteScope::Object };
        let initial: Vec<(String, String)> = extras.iter().map(|&u| (format!("{}/extra", users[u]), "x".to_owned())).collect();

        let mut expected = std::collections::BTreeMap::new();
        for (key, value) in &initial {
            expected.insert(key.clone(), value.as_bytes().to_vec());
        }
        let mut records = Vec::new();
        for (seq, (user, op)) in ops.iter().enumerate() {
            let name = users[*user];
            let object = format!("{name}/userdata");
            match op {
                Op::Write(v) => {
                    let event = if seq % 2 == 0 { "INSERT" } else { "MODIFY" };
                    records.push(stream_record(event, name, seq as u64, Some(json!({"v": {"N": v.to_string()}}))));
                    expected.insert(object, serde_json::to_vec(&json!({"name": name, "v": v})).unwrap());
                }
                Op::Remove => {
                    records.push(stream_record("REMOVE", name, seq as u64, None));
                    if prefix_scope {
                        expected.retain(|k, _| !k.starts_with(&format!("{name}/")));
                    } else {
                        expected.remove(&object);
                    }
                }
            }
        }

        let initial_refs: Vec<(&str, &str)> = initial.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut mirror = mirror(MemoryStore::with_objects(&initial_refs), scope);
        mirror.config.max_concurrency = std::num::NonZeroUsize::new(concurrency).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (response, summary) = runtime.block_on(process_batch(&mirror, records));
        prop_assert!(response.batch_item_failures.is_empty());
        prop_assert_eq!(summary.records, ops.len());
        prop_assert_eq!(mirror.store.snapshot(), expected);
    }
}
