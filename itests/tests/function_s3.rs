//! The function's handler against a real S3 API: the embedded emulator.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use itests::emulator::{s3_client, start, unique_bucket};
use serde_json::{json, Value};
use usersync_function::testing::{sequence_number, stream_event, stream_record};
use usersync_function::{handle_event, Config, DeleteScope, MetricsOut, Mirror, S3Store};
use usersync_local::emulator::Emulator;

struct Fixture {
    // Keeps the emulator alive for the test; dropped (stopped) with it.
    _emulator: Emulator,
    client: Client,
    bucket: String,
}

async fn fixture(label: &str, create_bucket: bool) -> Fixture {
    let emulator = start().await;
    let client = s3_client(&emulator);
    let bucket = unique_bucket(label);
    if create_bucket {
        client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create the test bucket");
    }
    Fixture {
        _emulator: emulator,
        client,
        bucket,
    }
}

impl Fixture {
    fn mirror(&self, scope: DeleteScope) -> Mirror<S3Store> {
        let bucket = self.bucket.clone();
        let mut config =
            Config::from_lookup(|name| (name == "BUCKET_NAME").then(|| bucket.clone())).unwrap();
        config.delete_scope = scope;
        config.force_path_style = true;
        Mirror {
            store: S3Store::new(self.client.clone(), self.bucket.clone()),
            config,
            metrics: MetricsOut::to_writer("function-s3", std::io::sink()),
        }
    }

    /// Every object in the bucket with its body.
    async fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let mut objects = BTreeMap::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.expect("list the bucket").contents() {
                let key = object.key().unwrap().to_owned();
                let body = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                objects.insert(key, body.body.collect().await.unwrap().to_vec());
            }
        }
        objects
    }

    async fn json(&self, key: &str) -> Value {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(object.content_type(), Some("application/json"));
        serde_json::from_slice(&object.body.collect().await.unwrap().to_vec()).unwrap()
    }

    async fn put_raw(&self, key: &str, body: &str) {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
}

fn keys(objects: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
    objects.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn puts_modifies_and_deletes_user_objects() {
    let fx = fixture("crud", true).await;
    let mirror = fx.mirror(DeleteScope::Object);
    let event = stream_event(vec![
        stream_record("INSERT", "alice", 1, Some(json!({"plan": {"S": "pro"}}))),
        stream_record(
            "INSERT",
            "bob",
            2,
            Some(json!({"plan": {"S": "free"}, "seats": {"N": "2"}})),
        ),
    ]);
    let response = handle_event(&mirror, event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        keys(&fx.objects().await),
        ["alice/userdata", "bob/userdata"]
    );
    assert_eq!(
        fx.json("alice/userdata").await,
        json!({"name": "alice", "plan": "pro"})
    );
    assert_eq!(
        fx.json("bob/userdata").await,
        json!({"name": "bob", "plan": "free", "seats": 2})
    );

    let event = stream_event(vec![
        stream_record(
            "MODIFY",
            "alice",
            3,
            Some(json!({"plan": {"S": "enterprise"}})),
        ),
        stream_record("REMOVE", "bob", 4, None),
    ]);
    let response = handle_event(&mirror, event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(keys(&fx.objects().await), ["alice/userdata"]);
    assert_eq!(
        fx.json("alice/userdata").await,
        json!({"name": "alice", "plan": "enterprise"})
    );
}

#[tokio::test]
async fn prefix_scope_deletes_everything_under_the_user() {
    let fx = fixture("prefix", true).await;
    fx.put_raw("carol/userdata", "{}").await;
    fx.put_raw("carol/avatar.png", "png").await;
    fx.put_raw("carol/history/2026.json", "[]").await;
    fx.put_raw("carol2/userdata", "{}").await;
    let mirror = fx.mirror(DeleteScope::Prefix);
    let response = handle_event(
        &mirror,
        stream_event(vec![stream_record("REMOVE", "carol", 1, None)]),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(keys(&fx.objects().await), ["carol2/userdata"]);
}

#[tokio::test]
async fn prefix_delete_pages_through_more_than_a_thousand_objects() {
    let fx = fixture("prefix-many", true).await;
    let puts = (0..1100).map(|i| {
        let client = fx.client.clone();
        let bucket = fx.bucket.clone();
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(format!("dave/files/{i:04}"))
                .body(b"x".to_vec().into())
                .send()
                .await
                .unwrap();
        }
    });
    futures_join_all(puts, 32).await;
    fx.put_raw("erin/userdata", "{}").await;
    let mirror = fx.mirror(DeleteScope::Prefix);
    let response = handle_event(
        &mirror,
        stream_event(vec![stream_record("REMOVE", "dave", 1, None)]),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(keys(&fx.objects().await), ["erin/userdata"]);
}

#[tokio::test]
async fn insert_then_remove_in_one_batch_leaves_no_object() {
    let fx = fixture("race", true).await;
    let mirror = fx.mirror(DeleteScope::Object);
    let event = stream_event(vec![
        stream_record("INSERT", "frank", 1, Some(json!({}))),
        stream_record("REMOVE", "frank", 2, None),
        stream_record("INSERT", "grace", 3, Some(json!({}))),
        stream_record("REMOVE", "grace", 4, None),
        stream_record("INSERT", "grace", 5, Some(json!({"v": {"N": "2"}}))),
    ]);
    let response = handle_event(&mirror, event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(keys(&fx.objects().await), ["grace/userdata"]);
    assert_eq!(
        fx.json("grace/userdata").await,
        json!({"name": "grace", "v": 2})
    );
}

#[tokio::test]
async fn a_thousand_record_batch_lands_completely() {
    let fx = fixture("thousand", true).await;
    let mirror = fx.mirror(DeleteScope::Object);
    // 800 users inserted; 200 of them removed again later in the same batch.
    let mut records: Vec<Value> = (0..800)
        .map(|i| {
            stream_record(
                "INSERT",
                &format!("user-{i:04}"),
                i,
                Some(json!({"i": {"N": i.to_string()}})),
            )
        })
        .collect();
    records.extend(
        (0..200).map(|i| stream_record("REMOVE", &format!("user-{:04}", i * 4), 800 + i, None)),
    );
    let response = handle_event(&mirror, stream_event(records)).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let objects = fx.objects().await;
    assert_eq!(objects.len(), 600);
    for i in 0..800u64 {
        let key = format!("user-{i:04}/userdata");
        match objects.get(&key) {
            Some(body) if i % 4 != 0 => {
                let body: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(body, json!({"name": format!("user-{i:04}"), "i": i}));
            }
            None if i % 4 == 0 => {}
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn names_that_stress_the_key_rule_land_in_their_own_segment() {
    let fx = fixture("names", true).await;
    let mirror = fx.mirror(DeleteScope::Object);
    let names = [
        "a/b",
        "..",
        ".",
        "100%",
        "with space",
        "🎉 party",
        "tab\there",
    ];
    let records = names
        .iter()
        .enumerate()
        .map(|(i, name)| stream_record("INSERT", name, i as u64, Some(json!({}))))
        .collect();
    let response = handle_event(&mirror, stream_event(records)).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        keys(&fx.objects().await),
        [
            "%2E%2E/userdata",
            "%2E/userdata",
            "100%25/userdata",
            "a%2Fb/userdata",
            "tab%09here/userdata",
            "with space/userdata",
            "🎉 party/userdata",
        ]
    );
}

#[tokio::test]
async fn a_missing_bucket_fails_every_user_without_panicking() {
    let fx = fixture("missing", false).await;
    let mirror = fx.mirror(DeleteScope::Object);
    let event = stream_event(vec![
        stream_record("INSERT", "henry", 7, Some(json!({}))),
        stream_record("REMOVE", "iris", 8, None),
        stream_record("MODIFY", "henry", 9, Some(json!({}))),
    ]);
    let response = handle_event(&mirror, event).await.unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    assert_eq!(failed, [sequence_number(7), sequence_number(8)]);
}

/// Runs `futures` with at most `limit` in flight.
async fn futures_join_all<F: std::future::Future<Output = ()>>(
    futures: impl Iterator<Item = F>,
    limit: usize,
) {
    use futures::stream::StreamExt;
    futures::stream::iter(futures)
        .buffer_unordered(limit)
        .collect::<Vec<()>>()
        .await;
}
