//! `S3Store::delete_many` over scripted S3 answers: the requests it sends and what it makes of
//! DeleteObjects' answers (a whole request failing, single keys failing inside a 200).

use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
use aws_sdk_s3::types::Error as KeyError;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::body::SdkBody;
use usersync_function::{ObjectStore, S3Store};

const BUCKET: &str = "mirror";

/// What the store sent: `"DeleteObjects a b"` (quiet) or `"DeleteObject a"`.
type Sent = Arc<Mutex<Vec<String>>>;

fn delete_objects(sent: &Sent, failing_keys: &'static [&'static str]) -> Rule {
    let sent = sent.clone();
    mock!(aws_sdk_s3::Client::delete_objects)
        .match_requests(move |request| {
            let delete = request.delete().expect("a Delete body");
            let keys: Vec<&str> = delete.objects().iter().map(|o| o.key()).collect();
            assert_eq!(request.bucket(), Some(BUCKET));
            assert_eq!(delete.quiet(), Some(true), "quiet: only failures come back");
            sent.lock()
                .unwrap()
                .push(format!("DeleteObjects {}", keys.join(" ")));
            true
        })
        .then_output(move || {
            let errors = failing_keys.iter().map(|key| {
                KeyError::builder()
                    .key(*key)
                    .code("InternalError")
                    .message("We encountered an internal error. Please try again.")
                    .build()
            });
            DeleteObjectsOutput::builder()
                .set_errors(Some(errors.collect()))
                .build()
        })
}

fn delete_object(sent: &Sent) -> Rule {
    let sent = sent.clone();
    mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(move |request| {
            sent.lock().unwrap().push(format!(
                "DeleteObject {}",
                request.key().unwrap_or_default()
            ));
            true
        })
        .then_output(|| DeleteObjectOutput::builder().build())
}

fn store(rules: &[&Rule]) -> S3Store {
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules);
    S3Store::new(client, BUCKET)
}

fn outcomes(results: &[Result<(), usersync_function::StoreError>]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(()) => "ok".to_owned(),
            Err(err) => format!("failed {}", err.key),
        })
        .collect()
}

#[tokio::test]
async fn several_keys_go_in_one_quiet_delete_objects() {
    let sent = Sent::default();
    let store = store(&[&delete_objects(&sent, &[]), &delete_object(&sent)]);
    let results = store
        .delete_many(&["a/userdata", "b/userdata", "c/userdata"])
        .await;
    assert_eq!(outcomes(&results), ["ok", "ok", "ok"]);
    assert_eq!(
        *sent.lock().unwrap(),
        ["DeleteObjects a/userdata b/userdata c/userdata"]
    );
}

#[tokio::test]
async fn one_key_is_a_plain_delete_object() {
    let sent = Sent::default();
    let store = store(&[&delete_objects(&sent, &[]), &delete_object(&sent)]);
    let results = store.delete_many(&["a/userdata"]).await;
    assert_eq!(outcomes(&results), ["ok"]);
    assert_eq!(*sent.lock().unwrap(), ["DeleteObject a/userdata"]);
}

#[tokio::test]
async fn a_key_failing_inside_the_answer_is_retried_alone() {
    let sent = Sent::default();
    let store = store(&[
        &delete_objects(&sent, &["b/userdata"]),
        &delete_object(&sent),
    ]);
    let results = store
        .delete_many(&["a/userdata", "b/userdata", "c/userdata"])
        .await;
    assert_eq!(outcomes(&results), ["ok", "ok", "ok"]);
    assert_eq!(
        *sent.lock().unwrap(),
        [
            "DeleteObjects a/userdata b/userdata c/userdata",
            "DeleteObject b/userdata"
        ]
    );
}

#[tokio::test]
async fn a_failed_request_fails_every_key_and_a_failed_retry_fails_only_its_key() {
    let refused = mock!(aws_sdk_s3::Client::delete_objects).then_http_response(|| {
        HttpResponse::new(
            403.try_into().unwrap(),
            SdkBody::from(
                "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            ),
        )
    });
    let results = store(&[&refused])
        .delete_many(&["a/userdata", "b/userdata"])
        .await;
    assert_eq!(
        outcomes(&results),
        ["failed a/userdata", "failed b/userdata"]
    );
    let Err(err) = &results[0] else {
        unreachable!()
    };
    assert!(err.message.contains("AccessDenied"), "{}", err.message);

    let sent = Sent::default();
    let retry_refused = mock!(aws_sdk_s3::Client::delete_object).then_http_response(|| {
        HttpResponse::new(
            403.try_into().unwrap(),
            SdkBody::from("<Error><Code>AccessDenied</Code></Error>"),
        )
    });
    let results = store(&[&delete_objects(&sent, &["b/userdata"]), &retry_refused])
        .delete_many(&["a/userdata", "b/userdata", "c/userdata"])
        .await;
    assert_eq!(outcomes(&results), ["ok", "failed b/userdata", "ok"]);
}
