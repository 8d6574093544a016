//! What the poller said during a fault test, and what the mapping did, in numbers.

use std::sync::{Arc, Mutex, PoisonError};

use usersync_local::mapping::batch::{BatchEvent, DiscardReport, InvocationReport, Verdict};
use usersync_local::mapping::poller::{PollerEvent, PollerObserver};

/// Everything the poller said, in order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<PollerEvent>>>);

impl Events {
    /// An observer for the poller that records into these events.
    pub fn observer(&self) -> PollerObserver {
        let events = self.clone();
        Arc::new(move |event| events.record(event))
    }

    fn record(&self, event: PollerEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    pub fn all(&self) -> Vec<PollerEvent> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn invocations(&self) -> Vec<InvocationReport> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                PollerEvent::Batch(BatchEvent::Invoked(report)) => Some(report),
                _ => None,
            })
            .collect()
    }

    pub fn discards(&self) -> Vec<DiscardReport> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                PollerEvent::Batch(BatchEvent::Discarded(report)) => Some(report),
                _ => None,
            })
            .collect()
    }

    /// Batch item failures the function reported, over every invocation.
    pub fn reported_failures(&self) -> usize {
        self.invocations()
            .iter()
            .map(|i| match i.verdict {
                Verdict::PartialFailure { reported, .. } => reported,
                _ => 0,
            })
            .sum()
    }

    /// Invocations whose records were all reported failed.
    pub fn fully_failed(&self) -> Vec<InvocationReport> {
        self.invocations()
            .into_iter()
            .filter(|i| {
                matches!(
                    i.verdict,
                    Verdict::PartialFailure {
                        first_failed: 0,
                        ..
                    }
                ) || matches!(i.verdict, Verdict::Failure { .. })
            })
            .collect()
    }

    /// Whether the record `sequence` of `shard` is the last of a run that was applied or
    /// discarded: the shard's single in-flight batch is done up to it.
    pub fn done_up_to(&self, shard: &str, sequence: &str) -> bool {
        self.all().iter().any(|e| match e {
            PollerEvent::Batch(BatchEvent::Invoked(i)) => {
                i.shard_id == shard && i.last_sequence == sequence && i.verdict == Verdict::Success
            }
            PollerEvent::Batch(BatchEvent::Discarded(d)) => {
                d.shard_id == shard && d.last_sequence == sequence
            }
            _ => false,
        })
    }
}

/// What the mapping did, in numbers.
pub struct MappingNumbers {
    pub invocations: usize,
    pub retried_invocations: usize,
    pub partial_failures: usize,
    pub reported_batch_item_failures: usize,
    pub function_errors: usize,
    pub discarded_batches: usize,
    pub discarded_records: usize,
}

impl std::fmt::Display for MappingNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} invocations ({} retries), {} partial failures reporting {} batch item failures, \
             {} function errors, {} batches ({} records) sent to the failure queue",
            self.invocations,
            self.retried_invocations,
            self.partial_failures,
            self.reported_batch_item_failures,
            self.function_errors,
            self.discarded_batches,
            self.discarded_records
        )
    }
}

impl MappingNumbers {
    pub fn of(events: &Events) -> Self {
        let invocations = events.invocations();
        let discards = events.discards();
        MappingNumbers {
            invocations: invocations.len(),
            retried_invocations: invocations.iter().filter(|i| i.attempt > 1).count(),
            partial_failures: invocations
                .iter()
                .filter(|i| matches!(i.verdict, Verdict::PartialFailure { .. }))
                .count(),
            reported_batch_item_failures: events.reported_failures(),
            function_errors: invocations
                .iter()
                .filter(|i| matches!(i.verdict, Verdict::Failure { .. }))
                .count(),
            discarded_batches: discards.len(),
            discarded_records: discards.iter().map(|d| d.records).sum(),
        }
    }
}
