//! What the fuzz targets share: an in-memory bucket, the configurations they try, and the
//! checks every target makes on what the function did.
//!
//! Every check panics on a violation, which libFuzzer reports as a crash with the input that
//! caused it (kept under `fuzz/artifacts/<target>/`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::value::RawValue;
use serde_json::Value;
use usersync_function::config::vars;
use usersync_function::key::{decode_name, encode_name, MAX_KEY_BYTES};
use usersync_function::metrics::metric;
use usersync_function::plan::{plan_records, Plan, Step};
use usersync_function::testing::{check_emf_line, CapturedMetrics, InjectedFailures, MemoryStore};
use usersync_function::{
    handle_payload, payload_records, process_records, Config, DeleteScope, MetricsOut, Mirror,
};

/// Metrics records of a batch whose summary is not checked: written nowhere.
fn no_metrics() -> MetricsOut {
    MetricsOut::to_writer("fuzz", std::io::sink())
}

/// Every S3 operation on a key holding this text fails in the failing store.
///
/// It has no `/`, so a user's object key holds it exactly when the user's prefix does: such a
/// user fails as a whole, and no other user is touched by it.
pub const FAIL_MARKER: &str = "FAIL";

/// Objects the bucket holds before every batch: an ordinary user, another object under that
/// user's prefix, and a key the rule never produces (which no record can ever reach).
pub const SEEDED: [(&str, &str); 4] = [
    ("alice/userdata", r#"{"name":"alice"}"#),
    ("alice/avatar.png", "png"),
    ("users/bob/userdata", r#"{"name":"bob"}"#),
    ("not a user key", "x"),
];

/// A bucket holding [`SEEDED`]; with `fail_marker`, every operation on a key holding it fails.
pub fn seeded_store(fail_marker: Option<&str>) -> MemoryStore {
    let store = MemoryStore::with_objects(&SEEDED);
    match fail_marker {
        Some(marker) => store.with_failures(InjectedFailures::Containing(marker.to_owned())),
        None => store,
    }
}

/// The configurations every batch is tried with: both delete scopes, with and without a key
/// prefix, and a key attribute other than the default.
pub fn configs() -> Vec<Config> {
    let settings: [(&str, &str, &str); 4] = [
        ("object", "", "name"),
        ("prefix", "", "name"),
        ("prefix", "users/", "name"),
        ("object", "users/", "id"),
    ];
    settings
        .into_iter()
        .map(|(scope, prefix, attribute)| {
            Config::from_lookup(|variable| {
                let value = match variable {
                    vars::BUCKET_NAME => "fuzz-bucket",
                    vars::DELETE_SCOPE => scope,
                    vars::KEY_PREFIX => prefix,
                    vars::KEY_ATTRIBUTE => attribute,
                    vars::MAX_CONCURRENCY => "3",
                    _ => return None,
                };
                Some(value.to_owned())
            })
            .expect("a valid fuzz configuration")
        })
        .collect()
}

/// Runs a future to completion on this thread's runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Checks that `key` is `<prefix><one encoded name>/<object_name>` and returns the name.
pub fn check_object_key(config: &Config, key: &str) -> String {
    let rest = key
        .strip_prefix(config.key_prefix.as_str())
        .unwrap_or_else(|| panic!("{key:?} is outside KEY_PREFIX"));
    let segment = rest
        .strip_suffix(config.object_name.as_str())
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{key:?} does not end in /{}", config.object_name));
    assert!(
        !segment.contains('/'),
        "{key:?}: a name became several segments"
    );
    assert!(
        segment != "." && segment != "..",
        "{key:?}: a relative path segment"
    );
    assert!(key.len() <= MAX_KEY_BYTES, "{key:?} is over S3's limit");
    decode_name(segment).unwrap_or_else(|| panic!("{key:?}: the segment does not decode"))
}

/// Checks a plan's bookkeeping and every user's keys and steps.
pub fn check_plan(plan: &Plan, records: usize, config: &Config) {
    assert_eq!(plan.records, records);
    let planned: usize = plan.users.iter().map(|user| user.records).sum();
    assert_eq!(
        planned + plan.skipped.len(),
        records,
        "every record is planned or skipped"
    );
    let mut names = BTreeSet::new();
    for user in &plan.users {
        assert!(!user.name.is_empty(), "an empty name was planned");
        assert!(
            names.insert(&user.name),
            "user {:?} planned twice",
            user.name
        );
        assert!(user.records >= 1);
        assert_eq!(check_object_key(config, &user.keys.object), user.name);
        assert_eq!(
            user.keys.prefix,
            format!("{}{}/", config.key_prefix, encode_name(&user.name))
        );
        assert!(user.keys.object.starts_with(&user.keys.prefix));
        match config.delete_scope {
            DeleteScope::Object => assert!(
                matches!(user.steps.as_slice(), [Step::Put(_)] | [Step::DeleteObject]),
                "{:?}",
                user.steps
            ),
            DeleteScope::Prefix => assert!(
                matches!(
                    user.steps.as_slice(),
                    [Step::DeletePrefix] | [Step::Put(_)] | [Step::DeletePrefix, Step::Put(_)]
                ),
                "{:?}",
                user.steps
            ),
        }
        for step in &user.steps {
            if let Step::Put(body) = step {
                let body: Value = serde_json::from_slice(body).expect("a put body is JSON");
                assert!(body.is_object(), "a put body is a JSON object");
            }
        }
    }
    assert!(plan.coalesced() <= planned);
    for skipped in &plan.skipped {
        assert!(!skipped.reason.to_string().is_empty());
    }
}

/// Plans `records` and checks the plan; planning twice gives the same plan.
pub fn check_planning(records: &[&RawValue], config: &Config) -> Plan {
    let plan = plan_records(records, config);
    check_plan(&plan, records.len(), config);
    assert_eq!(
        plan_records(records, config),
        plan,
        "planning is deterministic"
    );
    plan
}

/// The whole payload path, as `bootstrap` takes it (JSON text): a payload either is refused
/// with the documented message or is processed; nothing panics.
pub fn check_payload(payload: &RawValue) {
    let config = configs().swap_remove(1);
    let mirror = Mirror {
        store: seeded_store(None),
        config,
        metrics: no_metrics(),
    };
    match block_on(handle_payload(&mirror, payload)) {
        Ok(response) => assert!(response.batch_item_failures.is_empty()),
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.starts_with("the payload is not a DynamoDB Streams event: "),
                "{message}"
            );
            assert!(payload_records(payload).is_err());
        }
    }
}

/// Processes `records` with every configuration and checks what reached the bucket:
///
/// - the bucket after the batch is what processing its records one at a time leaves;
/// - every object the function wrote is at a key of the rule, for the user it decodes to;
/// - objects that are no user's are never touched (prefix deletes stay inside one user);
/// - with a store failing one user's keys, exactly those users are reported, by the sequence
///   number of their earliest record, in stream order, and everyone else's objects are as if
///   nothing had failed.
pub fn check_batch(records: &[&RawValue]) {
    for config in configs() {
        let plan = check_planning(records, &config);

        let metrics = CapturedMetrics::new();
        let batch = Mirror {
            store: seeded_store(None),
            config: config.clone(),
            metrics: metrics.out(),
        };
        let (response, summary) = block_on(process_records(&batch, records));
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(summary.records, records.len());
        assert_eq!(summary.skipped, plan.skipped.len());
        assert_eq!(summary.coalesced, plan.coalesced());
        // One summary line, a valid EMF record with the summary's counts.
        let lines = metrics.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = check_emf_line(&lines[0]).unwrap_or_else(|err| panic!("{err}: {}", lines[0]));
        assert_eq!(line[metric::RECORDS], records.len());
        assert_eq!(line[metric::SKIPPED], plan.skipped.len());
        let after = batch.store.snapshot();

        let one_by_one = Mirror {
            store: seeded_store(None),
            config: config.clone(),
            metrics: no_metrics(),
        };
        for record in records {
            let (response, _) =
                block_on(process_records(&one_by_one, std::slice::from_ref(record)));
            assert!(response.batch_item_failures.is_empty());
        }
        assert_eq!(
            after,
            one_by_one.store.snapshot(),
            "the batch differs from its records applied one by one"
        );

        for (key, body) in &after {
            let seeded = SEEDED.iter().find(|(k, _)| k == key);
            match seeded {
                Some((_, original)) if original.as_bytes() == body.as_slice() => {}
                _ => {
                    check_object_key(&config, key);
                }
            }
        }
        assert!(
            after.contains_key("not a user key"),
            "a key that is no user's was deleted"
        );

        let failing = Mirror {
            store: seeded_store(Some(FAIL_MARKER)),
            config: config.clone(),
            metrics: no_metrics(),
        };
        let (response, summary) = block_on(process_records(&failing, records));
        let reported: Vec<String> = response
            .batch_item_failures
            .iter()
            .map(|failure| failure.item_identifier.clone().expect("an item identifier"))
            .collect();
        let expected: Vec<String> = plan
            .users
            .iter()
            .filter(|user| user.keys.prefix.contains(FAIL_MARKER))
            .map(|user| user.first_sequence_number.clone())
            .collect();
        assert_eq!(reported, expected, "the failed users, in stream order");
        assert_eq!(summary.failed_users, expected.len());
        let healthy = |objects: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
            objects
                .into_iter()
                .filter(|(key, _)| !key.contains(FAIL_MARKER))
                .collect()
        };
        assert_eq!(
            healthy(failing.store.snapshot()),
            healthy(after.clone()),
            "a failing user changed what happened to the others"
        );
    }
}
