//! One batch of a shard through the function, with an event source mapping's failure rules:
//! partial batch responses (`ReportBatchItemFailures`), bisection on function errors, bounded
//! retries with back-off, a maximum record age, and an on-failure destination for whatever is
//! given up on.
//!
//! The rules, as Lambda documents them for stream sources:
//! - A response is a complete success when it has no `batchItemFailures` (missing, null or
//!   empty). With `ReportBatchItemFailures`, each listed `itemIdentifier` must be the sequence
//!   number of a record in the batch; the batch is checkpointed before the earliest one listed
//!   and only the records from there on are retried. A blank or missing identifier makes the
//!   whole batch a failure.
//!   <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html>
//! - A function error, timeout or crash fails the whole batch. With `BisectBatchOnFunctionError`
//!   a failed batch of two or more records is split in two and the halves are invoked in order.
//!   "Splitting batches doesn't consume the retry quota": a split is not counted as a failed
//!   attempt, and each half keeps the count of the batch it came from.
//!   <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>
//! - A run of records that has failed more than `MaximumRetryAttempts` times, or whose records
//!   are older than `MaximumRecordAgeInSeconds` when their turn comes, is discarded: its
//!   coordinates go to the on-failure destination and the shard moves on (same page). The
//!   message's `requestContext.requestId` is the last failed invocation's own request id.
//!
//! Where Lambda documents nothing, this host's own choices (README, "Where Lambda documents
//! nothing"):
//! - An `itemIdentifier` that is not the sequence number of a record in the batch, or a
//!   `batchItemFailures` that is not a list, fails the whole batch, like a blank one.
//! - A response that is not JSON (or JSON that is not an object) has no `batchItemFailures`, so
//!   it is a complete success, like an empty response.
//! - Bisection goes on down to single records whatever `MaximumRetryAttempts` says; only then
//!   do failures count. A failed attempt is an invocation of a run that is not split: a single
//!   record's function error, or any partial failure. With `MaximumRetryAttempts: 0` a failing
//!   record is therefore discarded alone after one invocation of it alone, and
//!   `approximateInvokeCount` counts the invocations that counted against the quota (1 there),
//!   not the larger batches it was part of. A split is not a retry, so its halves are invoked
//!   without the retry back-off.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::destination::{DestinationError, QueueDestination};
use crate::mapping::settings::MappingSettings;
use crate::runtime::invoke::{InvokeOutcome, Invoked, Invoker};
use crate::runtime::request_ids::new_request_id;
use deployer::streams::failure_record::{
    discard_message, DiscardCondition, DiscardedBatch, LastInvocation,
};
use deployer::streams::record::{event_payload, StreamEventRecord};
use usersync_function::metrics::{batch_lag_ms, created_at_ms};

/// Where discarded batches' messages go.
pub trait Discards: Send + Sync {
    fn discard(&self, message: Value) -> impl Future<Output = Result<(), DestinationError>> + Send;
}

impl Discards for QueueDestination {
    async fn discard(&self, message: Value) -> Result<(), DestinationError> {
        self.send(&message).await
    }
}

/// How one invocation of a run of records ended, as the mapping reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record was applied.
    Success,
    /// Records before `first_failed` (an index into the run) were applied; the rest are retried.
    PartialFailure {
        first_failed: usize,
        reported: usize,
    },
    /// Nothing counts as applied.
    Failure { error_type: String, message: String },
}

/// Reads an invocation's outcome for the run `records`.
pub fn judge(
    outcome: &InvokeOutcome,
    records: &[StreamEventRecord],
    report_batch_item_failures: bool,
) -> Verdict {
    let body = match outcome {
        InvokeOutcome::Response(body) => body,
        InvokeOutcome::FunctionError {
            error_type,
            message,
        } => {
            return Verdict::Failure {
                error_type: error_type.clone(),
                message: message.clone(),
            }
        }
        InvokeOutcome::TimedOut { after } => {
            return Verdict::Failure {
                error_type: "Sandbox.Timedout".into(),
                message: format!("Task timed out after {:.2} seconds", after.as_secs_f64()),
            }
        }
        InvokeOutcome::Crashed { message } => {
            return Verdict::Failure {
                error_type: "Runtime.ExitError".into(),
                message: message.clone(),
            }
        }
    };
    if !report_batch_item_failures {
        return Verdict::Success;
    }
    let invalid = |why: String| Verdict::Failure {
        error_type: "InvalidBatchItemFailures".into(),
        message: why,
    };
    let failures = match body.get("batchItemFailures") {
        None | Some(Value::Null) => return Verdict::Success,
        Some(Value::Array(failures)) if failures.is_empty() => return Verdict::Success,
        Some(Value::Array(failures)) => failures,
        Some(other) => return invalid(format!("batchItemFailures is not a list: {other}")),
    };
    let mut first_failed = usize::MAX;
    for failure in failures {
        let Some(identifier) = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
        else {
            return invalid(format!(
                "a batch item failure has no itemIdentifier: {failure}"
            ));
        };
        let Some(index) = records.iter().position(|r| r.sequence_number == identifier) else {
            return invalid(format!(
                "itemIdentifier {identifier:?} is not the sequence number of a record in the batch"
            ));
        };
        first_failed = first_failed.min(index);
    }
    Verdict::PartialFailure {
        first_failed,
        reported: failures.len(),
    }
}

/// Timing of retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackoff {
    /// Wait before the first retry; doubles with every further one.
    pub first: Duration,
    pub max: Duration,
}

impl RetryBackoff {
    fn after(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(16);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// One invocation's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvocationReport {
    pub shard_id: String,
    pub records: usize,
    pub first_sequence: String,
    pub last_sequence: String,
    /// 1 for the first invocation of these records, 2 for the first retry, … A half of a split
    /// batch starts where the batch it came from stood: a split is not a retry.
    pub attempt: u32,
    /// The invocation's request id, as the function's log lines carry it.
    pub request_id: String,
    pub verdict: Verdict,
    pub duration: Duration,
    /// How far these records trailed the table when the invocation returned: the function's
    /// own `LagMs` ([`usersync_function::metrics::batch_lag_ms`]); `None` when no record
    /// carries its creation time.
    pub lag_ms: Option<u64>,
}

/// A run of records given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscardReport {
    pub shard_id: String,
    pub condition: DiscardCondition,
    pub records: usize,
    pub first_sequence: String,
    pub last_sequence: String,
    /// Whether the on-failure destination received the batch's information.
    pub sent_to: Option<String>,
}

/// What a batch's processing tells its observer, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchEvent {
    Invoked(InvocationReport),
    Discarded(DiscardReport),
    /// The destination could not take a discard message; it is tried again.
    DestinationFailed {
        shard_id: String,
        message: String,
    },
}

/// Runs batches of one shard through the function under one mapping's rules.
pub struct BatchRunner<'a, I, D> {
    pub settings: &'a MappingSettings,
    pub shard_id: &'a str,
    pub invoker: &'a I,
    pub destination: Option<&'a D>,
    pub backoff: RetryBackoff,
    pub observe: &'a (dyn Fn(BatchEvent) + Send + Sync),
}

/// A run of records still to be applied, with how often it has failed (against
/// `MaximumRetryAttempts`: splits do not count).
struct Pending {
    records: Vec<StreamEventRecord>,
    failed_attempts: u32,
    last_invocation: Option<LastInvocation>,
}

impl<I: Invoker, D: Discards> BatchRunner<'_, I, D> {
    /// Applies `batch` (records in shard order) until every record has been applied or
    /// discarded. Returns early, with the batch unfinished, only when `stopped` resolves.
    pub async fn run(&self, batch: Vec<StreamEventRecord>, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        tokio::select! {
            () = self.apply(batch) => {}
            () = &mut stopped => {}
        }
    }

    async fn apply(&self, batch: Vec<StreamEventRecord>) {
        let mut queue = VecDeque::from([Pending {
            records: batch,
            failed_attempts: 0,
            last_invocation: None,
        }]);
        while let Some(mut run) = queue.pop_front() {
            loop {
                let expired = self.split_off_expired(&mut run.records);
                if !expired.is_empty() {
                    self.discard(
                        DiscardCondition::RecordAgeExceeded,
                        &expired,
                        run.failed_attempts,
                        run.last_invocation.as_ref(),
                    )
                    .await;
                }
                if run.records.is_empty() {
                    break;
                }

                let started = Instant::now();
                let Invoked {
                    request_id,
                    outcome,
                } = self
                    .invoker
                    .invoke_reporting_id(event_payload(&run.records))
                    .await;
                let verdict = judge(
                    &outcome,
                    &run.records,
                    self.settings.report_batch_item_failures,
                );
                (self.observe)(BatchEvent::Invoked(InvocationReport {
                    shard_id: self.shard_id.to_owned(),
                    records: run.records.len(),
                    first_sequence: run.records[0].sequence_number.clone(),
                    last_sequence: run.records[run.records.len() - 1].sequence_number.clone(),
                    attempt: run.failed_attempts + 1,
                    request_id: request_id.clone(),
                    verdict: verdict.clone(),
                    duration: started.elapsed(),
                    lag_ms: lag_ms(&run.records, SystemTime::now()),
                }));
                match verdict {
                    Verdict::Success => break,
                    Verdict::PartialFailure { first_failed, .. } => {
                        run.records.drain(..first_failed);
                        run.last_invocation = Some(LastInvocation {
                            request_id,
                            function_error: None,
                        });
                    }
                    Verdict::Failure { .. } => {
                        run.last_invocation = Some(LastInvocation {
                            request_id,
                            function_error: Some("Unhandled"),
                        });
                        if self.settings.bisect_on_error && run.records.len() > 1 {
                            // Splitting doesn't consume the retry quota: the halves keep this
                            // run's count, and the first goes on at once.
                            let second = run.records.split_off(run.records.len() / 2);
                            queue.push_front(Pending {
                                records: second,
                                failed_attempts: run.failed_attempts,
                                last_invocation: run.last_invocation.clone(),
                            });
                            continue;
                        }
                    }
                }
                run.failed_attempts += 1;
                if self
                    .settings
                    .max_retry_attempts
                    .is_some_and(|max| run.failed_attempts > max)
                {
                    self.discard(
                        DiscardCondition::RetryAttemptsExhausted,
                        &run.records,
                        run.failed_attempts,
                        run.last_invocation.as_ref(),
                    )
                    .await;
                    break;
                }
                tokio::time::sleep(self.backoff.after(run.failed_attempts)).await;
            }
        }
    }

    /// Takes the records older than the mapping's maximum record age out of `records`.
    fn split_off_expired(&self, records: &mut Vec<StreamEventRecord>) -> Vec<StreamEventRecord> {
        let Some(max_age) = self.settings.max_record_age else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let too_old = |r: &StreamEventRecord| {
            r.created_at_epoch_s
                .is_some_and(|at| now - at > max_age.as_secs_f64())
        };
        // Records are in shard order, so the old ones are a prefix; stop at the first young one
        // so that order is kept even if clocks disagree.
        let expired = records.iter().take_while(|r| too_old(r)).count();
        records.drain(..expired).collect()
    }

    async fn discard(
        &self,
        condition: DiscardCondition,
        records: &[StreamEventRecord],
        invoke_count: u32,
        last_invocation: Option<&LastInvocation>,
    ) {
        let Some(first) = records.first() else {
            return;
        };
        let mut report = DiscardReport {
            shard_id: self.shard_id.to_owned(),
            condition,
            records: records.len(),
            first_sequence: first.sequence_number.clone(),
            last_sequence: records[records.len() - 1].sequence_number.clone(),
            sent_to: None,
        };
        if let Some(destination) = self.destination {
            let request_id =
                last_invocation.map_or_else(new_request_id, |last| last.request_id.clone());
            let message = discard_message(
                &DiscardedBatch {
                    condition,
                    function_arn: &self.settings.function_arn,
                    stream_arn: &self.settings.stream_arn,
                    shard_id: self.shard_id,
                    records,
                    request_id: &request_id,
                    invoke_count,
                    last_invocation,
                },
                SystemTime::now(),
            );
            // The records are about to be passed over: their coordinates must not be lost, so a
            // destination that is down holds the shard until it takes the message.
            let mut failures = 0;
            loop {
                match destination.discard(message.clone()).await {
                    Ok(()) => break,
                    Err(err) => {
                        failures += 1;
                        (self.observe)(BatchEvent::DestinationFailed {
                            shard_id: self.shard_id.to_owned(),
                            message: err.to_string(),
                        });
                        tokio::time::sleep(self.backoff.after(failures)).await;
                    }
                }
            }
            report.sent_to = self.settings.on_failure_destination.clone();
        }
        (self.observe)(BatchEvent::Discarded(report));
    }
}

/// The lag of `records` at `now`, as the function computes it when it is done with them; the
/// two agree up to the time the response takes to come back.
fn lag_ms(records: &[StreamEventRecord], now: SystemTime) -> Option<u64> {
    batch_lag_ms(
        records
            .iter()
            .filter_map(|record| record.created_at_epoch_s)
            .map(created_at_ms),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    fn records(sequences: std::ops::Range<u32>) -> Vec<StreamEventRecord> {
        sequences
            .map(|n| StreamEventRecord {
                event: json!({"dynamodb": {"SequenceNumber": n.to_string()}}),
                sequence_number: n.to_string(),
                created_at_epoch_s: Some(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64(),
                ),
                payload_bytes: 10,
            })
            .collect()
    }

    fn settings() -> MappingSettings {
        MappingSettings {
            uuid: "u".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/s".into(),
            batch_size: 100,
            batching_window: Duration::ZERO,
            parallelization_factor: 1,
            starting_position: crate::mapping::settings::StartingPosition::TrimHorizon,
            max_retry_attempts: Some(2),
            max_record_age: None,
            bisect_on_error: false,
            report_batch_item_failures: true,
            enabled: true,
            on_failure_destination: Some("arn:aws:sqs:us-east-1:000000000000:q".into()),
            has_filter_criteria: false,
        }
    }

    /// One scripted answer to an invocation, given the sequence numbers it carries.
    type Answer = Box<dyn Fn(&[String]) -> InvokeOutcome + Send>;

    /// Answers each invocation with the next scripted outcome, or success when the script
    /// runs out, and remembers the sequence numbers it was given. Invocation `n` (from 1) runs
    /// as request id `req-n`.
    struct ScriptedFunction {
        script: Mutex<VecDeque<Answer>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl ScriptedFunction {
        fn new(script: Vec<Answer>) -> Self {
            Self {
                script: Mutex::new(script.into()),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Invoker for ScriptedFunction {
        fn invoke_reporting_id(&self, payload: Value) -> impl Future<Output = Invoked> + Send {
            let sequences: Vec<String> = payload["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned())
                .collect();
            let request_id = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(sequences.clone());
                format!("req-{}", calls.len())
            };
            let next = self.script.lock().unwrap().pop_front();
            let outcome = next.map_or(
                InvokeOutcome::Response(json!({"batchItemFailures": []})),
                |f| f(&sequences),
            );
            async move {
                Invoked {
                    request_id,
                    outcome,
                }
            }
        }
    }

    #[derive(Default)]
    struct CollectingQueue(Mutex<Vec<Value>>);

    impl Discards for CollectingQueue {
        fn discard(
            &self,
            message: Value,
        ) -> impl Future<Output = Result<(), DestinationError>> + Send {
            self.0.lock().unwrap().push(message);
            async { Ok(()) }
        }
    }

    fn error() -> Answer {
        Box::new(|_| InvokeOutcome::FunctionError {
            error_type: "Boom".into(),
            message: "boom".into(),
        })
    }

    fn partial(from: &'static str) -> Answer {
        Box::new(move |_| {
            InvokeOutcome::Response(json!({"batchItemFailures": [{"itemIdentifier": from}]}))
        })
    }

    async fn run(
        settings: &MappingSettings,
        function: &ScriptedFunction,
        batch: Vec<StreamEventRecord>,
    ) -> (Vec<BatchEvent>, Vec<Value>) {
        let queue = CollectingQueue::default();
        let events = Mutex::new(Vec::new());
        let observe = |event: BatchEvent| events.lock().unwrap().push(event);
        BatchRunner {
            settings,
            shard_id: "shard-1",
            invoker: function,
            destination: Some(&queue),
            backoff: RetryBackoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            observe: &observe,
        }
        .run(batch, std::future::pending())
        .await;
        (events.into_inner().unwrap(), queue.0.into_inner().unwrap())
    }

    fn seqs(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|n| n.to_string()).collect()
    }

    /// A function that fails (a function error) on every batch holding record `poison`, and
    /// succeeds on every other, for `invocations` invocations.
    fn poisoned_by(poison: &'static str, invocations: usize) -> ScriptedFunction {
        let answer = || -> Answer {
            Box::new(move |seqs| {
                if seqs.iter().any(|s| s == poison) {
                    InvokeOutcome::FunctionError {
                        error_type: "Poison".into(),
                        message: poison.into(),
                    }
                } else {
                    InvokeOutcome::Response(Value::Null)
                }
            })
        };
        ScriptedFunction::new((0..invocations).map(|_| answer()).collect())
    }

    /// The records of the invocations that succeeded, in order.
    fn applied(function: &ScriptedFunction, poison: &str) -> Vec<String> {
        function
            .calls()
            .into_iter()
            .filter(|call| !call.iter().any(|s| s == poison))
            .flatten()
            .collect()
    }

    #[test]
    fn judges_responses_as_lambda_does() {
        let batch = records(10..13);
        let ok = |body: Value| judge(&InvokeOutcome::Response(body), &batch, true);
        assert_eq!(ok(json!({"batchItemFailures": []})), Verdict::Success);
        assert_eq!(ok(json!({"batchItemFailures": null})), Verdict::Success);
        assert_eq!(ok(json!({})), Verdict::Success);
        assert_eq!(ok(Value::Null), Verdict::Success);
        // Not documented by Lambda; this host's choice (README): a response that is not JSON
        // (the host hands it over as a string) or not an object has nothing to report.
        assert_eq!(ok(Value::String("not json".into())), Verdict::Success);
        assert_eq!(ok(json!([{"itemIdentifier": "11"}])), Verdict::Success);
        assert_eq!(
            ok(json!({"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]})),
            Verdict::PartialFailure {
                first_failed: 1,
                reported: 2
            }
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemId": "11"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "99"}]}),
            json!({"batchItemFailures": "11"}),
        ] {
            assert!(
                matches!(ok(bad.clone()), Verdict::Failure { .. }),
                "{bad} is a whole-batch failure"
            );
        }
        // Without ReportBatchItemFailures the response is not read.
        assert_eq!(
            judge(
                &InvokeOutcome::Response(json!({"batchItemFailures": [{"itemIdentifier": "11"}]})),
                &batch,
                false
            ),
            Verdict::Success
        );
        assert!(matches!(
            judge(
                &InvokeOutcome::TimedOut {
                    after: Duration::from_secs(3)
                },
                &batch,
                true
            ),
            Verdict::Failure { error_type, .. } if error_type == "Sandbox.Timedout"
        ));
    }

    #[tokio::test]
    async fn a_partial_failure_retries_from_the_earliest_reported_record() {
        let function = ScriptedFunction::new(vec![partial("13"), partial("14")]);
        let (events, discarded) = run(&settings(), &function, records(10..16)).await;
        assert_eq!(function.calls(), [seqs(10..16), seqs(13..16), seqs(14..16)]);
        assert!(discarded.is_empty());
        assert_eq!(events.len(), 3);
    }

    #[tokio::test]
    async fn exhausted_retries_go_to_the_destination_and_the_shard_moves_on() {
        let function = ScriptedFunction::new(vec![error(), error(), error()]);
        let (events, discarded) = run(&settings(), &function, records(10..14)).await;
        // One invocation and two retries (MaximumRetryAttempts = 2).
        assert_eq!(function.calls().len(), 3);
        assert_eq!(discarded.len(), 1);
        let info = &discarded[0]["DDBStreamBatchInfo"];
        assert_eq!(info["startSequenceNumber"], "10");
        assert_eq!(info["endSequenceNumber"], "13");
        assert_eq!(info["batchSize"], 4);
        assert_eq!(
            discarded[0]["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(discarded[0]["requestContext"]["approximateInvokeCount"], 3);
        assert!(matches!(
            events.last(),
            Some(BatchEvent::Discarded(DiscardReport { records: 4, .. }))
        ));
    }

    #[tokio::test]
    async fn only_the_records_not_applied_are_discarded_after_partial_failures() {
        let function = ScriptedFunction::new(vec![partial("12"), partial("13"), partial("13")]);
        let (_, discarded) = run(&settings(), &function, records(10..15)).await;
        assert_eq!(discarded.len(), 1);
        let info = &discarded[0]["DDBStreamBatchInfo"];
        assert_eq!(info["startSequenceNumber"], "13");
        assert_eq!(info["batchSize"], 2);
        assert!(discarded[0]["responseContext"]
            .get("functionError")
            .is_none());
    }

    #[tokio::test]
    async fn bisection_isolates_a_poison_record_and_keeps_order() {
        let mut settings = settings();
        settings.bisect_on_error = true;
        settings.max_retry_attempts = Some(3);
        // Record 12 always fails; everything else succeeds.
        let poison = || -> Answer {
            Box::new(|seqs| {
                if seqs.iter().any(|s| s == "12") {
                    InvokeOutcome::FunctionError {
                        error_type: "Poison".into(),
                        message: "12".into(),
                    }
                } else {
                    InvokeOutcome::Response(Value::Null)
                }
            })
        };
        let function = ScriptedFunction::new((0..10).map(|_| poison()).collect());
        let (_, discarded) = run(&settings, &function, records(10..14)).await;
        assert_eq!(
            function.calls(),
            [
                seqs(10..14), // fails: split into 10..12 and 12..14, no retry spent
                seqs(10..12), // succeeds
                seqs(12..14), // fails: split into 12 and 13, no retry spent
                seqs(12..13), // fails (1st failed attempt)
                seqs(12..13), // fails (2nd)
                seqs(12..13), // fails (3rd)
                seqs(12..13), // fails (4th > 3): discarded
                seqs(13..14), // succeeds, after the poison record was dealt with
            ]
        );
        assert_eq!(discarded.len(), 1);
        assert_eq!(
            discarded[0]["DDBStreamBatchInfo"]["startSequenceNumber"],
            "12"
        );
        assert_eq!(discarded[0]["DDBStreamBatchInfo"]["batchSize"], 1);
    }

    #[tokio::test]
    async fn bisecting_spends_no_retries_so_one_poison_record_in_100_is_discarded_alone() {
        // The stack's defaults: batches of 100, 5 retries, bisection on.
        let mut settings = settings();
        settings.bisect_on_error = true;
        settings.max_retry_attempts = Some(5);
        let function = poisoned_by("137", 200);
        let (events, discarded) = run(&settings, &function, records(100..200)).await;

        assert_eq!(discarded.len(), 1, "{discarded:?}");
        let info = &discarded[0]["DDBStreamBatchInfo"];
        assert_eq!(info["batchSize"], 1);
        assert_eq!(info["startSequenceNumber"], "137");
        assert_eq!(info["endSequenceNumber"], "137");
        assert_eq!(
            discarded[0]["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        // The record alone: one invocation and 5 retries, every one counted.
        let alone: Vec<usize> = (0..function.calls().len())
            .filter(|&i| function.calls()[i] == ["137"])
            .collect();
        assert_eq!(alone.len(), 6, "{:?}", function.calls());
        assert_eq!(discarded[0]["requestContext"]["approximateInvokeCount"], 6);
        // The other 99 applied, each once, in stream order.
        let others: Vec<String> = seqs(100..200).into_iter().filter(|s| s != "137").collect();
        assert_eq!(applied(&function, "137"), others);
        // Only the single record's invocations were attempts beyond the first.
        let attempts: Vec<(usize, u32)> = events
            .iter()
            .filter_map(|e| match e {
                BatchEvent::Invoked(i) => Some((i.records, i.attempt)),
                _ => None,
            })
            .filter(|&(_, attempt)| attempt > 1)
            .collect();
        assert_eq!(attempts, [(1, 2), (1, 3), (1, 4), (1, 5), (1, 6)]);
    }

    #[tokio::test]
    async fn with_no_retries_a_poison_record_is_isolated_then_discarded_after_one_attempt_alone() {
        let mut settings = settings();
        settings.bisect_on_error = true;
        settings.max_retry_attempts = Some(0);
        let function = poisoned_by("137", 200);
        let (_, discarded) = run(&settings, &function, records(100..200)).await;

        assert_eq!(discarded.len(), 1, "{discarded:?}");
        let info = &discarded[0]["DDBStreamBatchInfo"];
        assert_eq!(info["batchSize"], 1);
        assert_eq!(info["startSequenceNumber"], "137");
        assert_eq!(discarded[0]["requestContext"]["approximateInvokeCount"], 1);
        let calls = function.calls();
        assert_eq!(
            calls.iter().filter(|c| *c == &["137"]).count(),
            1,
            "{calls:?}"
        );
        let others: Vec<String> = seqs(100..200).into_iter().filter(|s| s != "137").collect();
        assert_eq!(applied(&function, "137"), others);
    }

    #[tokio::test]
    async fn without_bisection_no_retries_discards_the_whole_batch_after_one_invocation() {
        let mut settings = settings();
        settings.max_retry_attempts = Some(0);
        let function = poisoned_by("137", 10);
        let (_, discarded) = run(&settings, &function, records(100..200)).await;
        assert_eq!(function.calls(), [seqs(100..200)]);
        assert_eq!(discarded.len(), 1);
        assert_eq!(discarded[0]["DDBStreamBatchInfo"]["batchSize"], 100);
        assert_eq!(discarded[0]["requestContext"]["approximateInvokeCount"], 1);
    }

    #[tokio::test]
    async fn the_discard_message_names_the_failed_invocations_own_request_id() {
        // Three failed invocations, req-1 to req-3: the message names the last one's id.
        let function = ScriptedFunction::new(vec![error(), error(), error()]);
        let (events, discarded) = run(&settings(), &function, records(10..14)).await;
        assert_eq!(discarded[0]["requestContext"]["requestId"], "req-3");
        let reported: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                BatchEvent::Invoked(i) => Some(i.request_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(reported, ["req-1", "req-2", "req-3"]);

        // A run given up on after partial failures: the last invocation that reported them.
        let function = ScriptedFunction::new(vec![partial("12"), partial("13"), partial("13")]);
        let (_, discarded) = run(&settings(), &function, records(10..15)).await;
        assert_eq!(discarded[0]["requestContext"]["requestId"], "req-3");

        // An isolated poison record: its own last invocation, not a larger batch's.
        let mut settings = settings();
        settings.bisect_on_error = true;
        let function = poisoned_by("12", 20);
        let (_, discarded) = run(&settings, &function, records(10..14)).await;
        let last_alone = function.calls().iter().rposition(|c| c == &["12"]).unwrap();
        assert_eq!(
            discarded[0]["requestContext"]["requestId"],
            format!("req-{}", last_alone + 1)
        );
    }

    #[tokio::test]
    async fn records_older_than_the_maximum_age_are_discarded_without_an_invocation() {
        let mut settings = settings();
        settings.max_record_age = Some(Duration::from_secs(60));
        let mut batch = records(10..13);
        batch[0].created_at_epoch_s = Some(1.0);
        batch[1].created_at_epoch_s = Some(2.0);
        let function = ScriptedFunction::new(vec![]);
        let (_, discarded) = run(&settings, &function, batch).await;
        assert_eq!(function.calls(), [seqs(12..13)]);
        assert_eq!(discarded.len(), 1);
        assert_eq!(
            discarded[0]["requestContext"]["condition"],
            "RecordAgeExceeded"
        );
        assert_eq!(discarded[0]["DDBStreamBatchInfo"]["batchSize"], 2);
    }

    #[tokio::test]
    async fn each_invocation_reports_its_records_lag() {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            .floor();
        let mut batch = records(10..13);
        batch[0].created_at_epoch_s = None;
        batch[1].created_at_epoch_s = Some(now_s - 40.0);
        batch[2].created_at_epoch_s = Some(now_s - 5.0);
        let function = ScriptedFunction::new(vec![]);
        let before = SystemTime::now();
        let (events, _) = run(&settings(), &function, batch).await;
        let after = SystemTime::now();
        let [BatchEvent::Invoked(report)] = events.as_slice() else {
            panic!("one invocation: {events:?}");
        };
        // The oldest record's age, as the function's `LagMs` has it.
        let age_at = |at: SystemTime| {
            let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis();
            u64::try_from(at_ms).unwrap() - (now_s as u64 - 40) * 1000
        };
        let lag = report.lag_ms.expect("a lag");
        assert!((age_at(before)..=age_at(after)).contains(&lag), "{lag}");

        let mut undated = records(20..22);
        for record in &mut undated {
            record.created_at_epoch_s = None;
        }
        let (events, _) = run(&settings(), &function, undated).await;
        let [BatchEvent::Invoked(report)] = events.as_slice() else {
            panic!("one invocation: {events:?}");
        };
        assert_eq!(report.lag_ms, None);
    }

    #[test]
    fn the_lag_is_the_one_the_function_computes_from_the_same_records() {
        use usersync_function::plan::plan_records;
        use usersync_function::testing::{config, string_value, RecordBuilder};

        let created = [1_764_000_030_i64, 1_764_000_000];
        let batch: Vec<StreamEventRecord> = created
            .iter()
            .zip(1..)
            .map(|(&at, sequence)| {
                let event = RecordBuilder::new("INSERT", sequence)
                    .key("name", string_value("alice"))
                    .creation_time(at)
                    .build();
                StreamEventRecord {
                    sequence_number: event["dynamodb"]["SequenceNumber"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    event,
                    created_at_epoch_s: Some(at as f64),
                    payload_bytes: 10,
                }
            })
            .collect();
        let raw: Vec<Box<serde_json::value::RawValue>> = batch
            .iter()
            .map(|r| serde_json::value::to_raw_value(&r.event).unwrap())
            .collect();
        let plan = plan_records(&raw, &config("b", usersync_function::DeleteScope::Object));

        let now = UNIX_EPOCH + Duration::from_millis(1_764_000_061_500);
        assert_eq!(lag_ms(&batch, now), Some(61_500));
        assert_eq!(
            lag_ms(&batch, now),
            batch_lag_ms(plan.oldest_created_ms, now)
        );
    }

    #[tokio::test]
    async fn unlimited_retries_keep_going_until_the_function_recovers() {
        let mut settings = settings();
        settings.max_retry_attempts = None;
        let function = ScriptedFunction::new((0..20).map(|_| error()).collect());
        let (_, discarded) = run(&settings, &function, records(1..3)).await;
        assert_eq!(function.calls().len(), 21);
        assert!(discarded.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let backoff = RetryBackoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        assert_eq!(backoff.after(1), Duration::from_millis(100));
        assert_eq!(backoff.after(2), Duration::from_millis(200));
        assert_eq!(backoff.after(3), Duration::from_millis(400));
        assert_eq!(backoff.after(4), Duration::from_millis(500));
        assert_eq!(backoff.after(u32::MAX), Duration::from_millis(500));
    }
}
