//! The invocation handler: one DynamoDB Streams batch in, a batch item failure list out.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::stream::{self, StreamExt};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Config;
use crate::key::UserKeys;
use crate::metrics::{batch_lag_ms, BatchRecord, MetricsOut};
use crate::plan::{plan_records, raw_json, Step, UserPlan};
use crate::store::{ObjectStore, StoreError, DELETE_OBJECTS_LIMIT};

/// Everything an invocation needs, built once at cold start.
#[derive(Debug)]
pub struct Mirror<S> {
    pub store: S,
    pub config: Config,
    /// Where each batch's summary, its metrics record, goes.
    pub metrics: MetricsOut,
}

/// The invocation payload is something other than a DynamoDB Streams event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the payload is not a DynamoDB Streams event: {0}")]
pub struct NotAStreamsEvent(pub String);

impl From<NotAStreamsEvent> for lambda_runtime::Diagnostic {
    fn from(err: NotAStreamsEvent) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "NotAStreamsEvent".to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// What one batch did, as its summary line ([`BatchRecord`]) says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub records: usize,
    /// Distinct users among the records.
    pub users: usize,
    pub puts: usize,
    pub deletes: usize,
    pub coalesced: usize,
    pub skipped: usize,
    pub failed_users: usize,
    /// How far the batch trailed the table when it was done ([`batch_lag_ms`]); `None` when no
    /// record carries its creation time.
    pub lag_ms: Option<u64>,
}

/// Handles one invocation given as its JSON text (what `bootstrap` receives): applies the
/// batch to the store and reports the users that failed. The payload stays text; each record
/// is read when it is planned, so memory grows with the batch's size, not with its parsed form.
pub async fn handle_payload<S: ObjectStore>(
    mirror: &Mirror<S>,
    payload: &RawValue,
) -> Result<DynamoDbEventResponse, NotAStreamsEvent> {
    let records = payload_records(payload)?;
    let (response, _) = apply_records(mirror, &records, None).await;
    Ok(response)
}

/// [`handle_payload`] for the invocation `request_id`, which the batch's summary line names.
pub async fn handle_invocation<S: ObjectStore>(
    mirror: &Mirror<S>,
    payload: &RawValue,
    request_id: &str,
) -> Result<DynamoDbEventResponse, NotAStreamsEvent> {
    let records = payload_records(payload)?;
    let (response, _) = apply_records(mirror, &records, Some(request_id)).await;
    Ok(response)
}

/// [`handle_payload`] for a payload that is already parsed.
pub async fn handle_event<S: ObjectStore>(
    mirror: &Mirror<S>,
    payload: Value,
) -> Result<DynamoDbEventResponse, NotAStreamsEvent> {
    handle_payload(mirror, &raw_json(&payload)).await
}

/// Takes the `Records` array out of a payload, refusing payloads of other event sources; the
/// records borrow the payload's text.
pub fn payload_records(payload: &RawValue) -> Result<Vec<&RawValue>, NotAStreamsEvent> {
    let Ok(mut event) = serde_json::from_str::<HashMap<String, &RawValue>>(payload.get()) else {
        return Err(NotAStreamsEvent(format!(
            "expected a JSON object, got {}",
            raw_kind(payload)
        )));
    };
    let records = match event.remove("Records") {
        Some(records) => serde_json::from_str::<Vec<&RawValue>>(records.get()).map_err(|_| {
            NotAStreamsEvent(format!(
                "\"Records\" is {}, expected an array",
                raw_kind(records)
            ))
        })?,
        None => return Err(NotAStreamsEvent("it has no \"Records\" array".to_owned())),
    };
    if let Some(source) = records
        .iter()
        .filter_map(|record| event_source(record))
        .find(|source| source != "aws:dynamodb")
    {
        return Err(NotAStreamsEvent(format!(
            "it holds records of {source:?}, expected \"aws:dynamodb\""
        )));
    }
    Ok(records)
}

/// [`payload_records`] for a payload that is already parsed.
pub fn stream_records(payload: Value) -> Result<Vec<Value>, NotAStreamsEvent> {
    let raw = raw_json(&payload);
    let records = payload_records(&raw)?;
    Ok(records
        .into_iter()
        .map(|record| serde_json::from_str(record.get()).unwrap_or(Value::Null))
        .collect())
}

/// A record's `eventSource`, when it is an object with a string there.
fn event_source(record: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Source {
        #[serde(rename = "eventSource")]
        event_source: Option<String>,
    }
    // serde fills a struct from an array too (`["aws:sns"]`): only an object has fields.
    if !record.get().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Source>(record.get())
        .ok()?
        .event_source
}

/// What kind of JSON value `raw` is, for messages.
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Plans and applies a batch of parsed stream records; see [`process_records`].
pub async fn process_batch<S: ObjectStore>(
    mirror: &Mirror<S>,
    records: Vec<Value>,
) -> (DynamoDbEventResponse, BatchSummary) {
    let raw: Vec<Box<RawValue>> = records.iter().map(raw_json).collect();
    process_records(mirror, &raw).await
}

/// Plans and applies a batch of stream records given as their JSON text; writes one summary
/// line, which is the batch's metrics record, to `mirror.metrics`.
pub async fn process_records<S: ObjectStore, R: Borrow<RawValue>>(
    mirror: &Mirror<S>,
    records: &[R],
) -> (DynamoDbEventResponse, BatchSummary) {
    apply_records(mirror, records, None).await
}

/// [`process_records`], for the invocation `request_id` when there is one.
async fn apply_records<S: ObjectStore, R: Borrow<RawValue>>(
    mirror: &Mirror<S>,
    records: &[R],
    request_id: Option<&str>,
) -> (DynamoDbEventResponse, BatchSummary) {
    let started = Instant::now();
    let mut plan = plan_records(records, &mirror.config);

    for skipped in &plan.skipped {
        tracing::error!(
            event_id = skipped.event_id.as_deref().unwrap_or("-"),
            sequence_number = skipped.sequence_number.as_deref().unwrap_or("-"),
            reason = %skipped.reason,
            "skipped a record that can never succeed"
        );
    }

    let steps = plan.users.iter().flat_map(|u| &u.steps);
    let puts = steps.clone().filter(|s| matches!(s, Step::Put(_))).count();
    let deletes = steps.filter(|s| !matches!(s, Step::Put(_))).count();
    // Counted before `apply_plan` moves the steps out.
    let coalesced = plan.coalesced();
    let mut outcomes = apply_plan(
        &mirror.store,
        &mut plan.users,
        mirror.config.max_concurrency.get(),
    )
    .await;
    // Report failures in stream order, whatever order the work finished in.
    outcomes.sort_unstable_by_key(|(index, _)| *index);

    let mut response = DynamoDbEventResponse::default();
    for (index, outcome) in outcomes {
        if let Err(err) = outcome {
            let user = &plan.users[index];
            tracing::error!(
                user = %user.name,
                sequence_number = %user.first_sequence_number,
                error = %err,
                "failed to apply the user's records; reporting them for retry"
            );
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(user.first_sequence_number.clone());
            response.batch_item_failures.push(failure);
        }
    }

    // The lag is taken when the batch is done: how far the mirror trails the table now that
    // these records are in it.
    let done = SystemTime::now();
    let summary = BatchSummary {
        records: plan.records,
        users: plan.users.len(),
        puts,
        deletes,
        coalesced,
        skipped: plan.skipped.len(),
        failed_users: response.batch_item_failures.len(),
        lag_ms: batch_lag_ms(plan.oldest_created_ms, done),
    };
    mirror.metrics.write(&BatchRecord {
        function_name: mirror.metrics.function_name(),
        request_id,
        at: done,
        summary: &summary,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    (response, summary)
}

/// Applies every user's steps, `max_concurrency` units of work at a time, and returns each
/// user's outcome by its index in `users` (in no particular order). The steps are moved out of
/// `users`, so the bodies are sent without a copy.
///
/// A user whose only step is deleting its object joins a DeleteObjects of up to
/// [`DELETE_OBJECTS_LIMIT`] such users, one unit of work: users in one batch are distinct, so
/// their deletes may go together. Every other user is a unit of its own.
async fn apply_plan<S: ObjectStore>(
    store: &S,
    users: &mut [UserPlan],
    max_concurrency: usize,
) -> Vec<(usize, Result<(), StoreError>)> {
    let (lone_deletes, others): (Vec<usize>, Vec<usize>) =
        (0..users.len()).partition(|&i| users[i].steps == [Step::DeleteObject]);
    let steps: Vec<Vec<Step>> = others
        .iter()
        .map(|&i| std::mem::take(&mut users[i].steps))
        .collect();
    let users = &*users;
    let mut work: Vec<Work<'_>> = Vec::with_capacity(others.len() + 1);
    for chunk in lone_deletes.chunks(DELETE_OBJECTS_LIMIT) {
        let keys = chunk
            .iter()
            .map(|&i| users[i].keys.object.as_str())
            .collect();
        work.push(Work::Deletes(chunk.to_vec(), keys));
    }
    work.extend(
        others
            .into_iter()
            .zip(steps)
            .map(|(i, steps)| Work::User(i, &users[i].keys, steps)),
    );
    stream::iter(work)
        .map(|unit| async move {
            match unit {
                Work::User(index, keys, steps) => {
                    vec![(index, apply_user(store, keys, steps).await)]
                }
                Work::Deletes(indices, keys) => indices
                    .into_iter()
                    .zip(store.delete_many(&keys).await)
                    .collect(),
            }
        })
        .buffer_unordered(max_concurrency)
        .flat_map(stream::iter)
        .collect()
        .await
}

/// One unit of a batch's work.
enum Work<'a> {
    /// A user (by index) with its keys and steps.
    User(usize, &'a UserKeys, Vec<Step>),
    /// Users (by index) whose objects are deleted together, and those objects' keys.
    Deletes(Vec<usize>, Vec<&'a str>),
}

/// Runs a user's steps in order, stopping at the first failure: later steps must not overtake it.
async fn apply_user<S: ObjectStore>(
    store: &S,
    keys: &UserKeys,
    steps: Vec<Step>,
) -> Result<(), StoreError> {
    for step in steps {
        match step {
            Step::Put(body) => store.put(&keys.object, body).await?,
            Step::DeleteObject => store.delete(&keys.object).await?,
            Step::DeletePrefix => {
                store.delete_prefix(&keys.prefix).await?;
            }
        }
    }
    Ok(())
}
