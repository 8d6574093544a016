//! The function's metrics contract: the CloudWatch namespace, dimension and metric names of the
//! Embedded Metric Format record each batch writes. The template's alarms and dashboard and
//! `status` read the same names from here. Also the record itself ([`BatchRecord`]), where it is
//! written ([`MetricsOut`]), and the batch's lag ([`batch_lag_ms`]), which the local poller
//! computes too.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::handler::BatchSummary;

/// The CloudWatch namespace of the function's metrics.
pub const NAMESPACE: &str = "usersync";

/// The one dimension, whose value is the function's name.
pub const DIMENSION: &str = "FunctionName";

/// Metric names, each a root member of the EMF record.
pub mod metric {
    /// Stream records in the batch.
    pub const RECORDS: &str = "Records";
    /// Objects written.
    pub const PUTS: &str = "Puts";
    /// Deletions (single objects and prefixes).
    pub const DELETES: &str = "Deletes";
    /// Records folded into a later record of the same user.
    pub const COALESCED: &str = "Coalesced";
    /// Records that can never succeed, logged and dropped.
    pub const SKIPPED: &str = "Skipped";
    /// Users reported back for retry.
    pub const FAILED_USERS: &str = "FailedUsers";
    /// The largest `now − ApproximateCreationDateTime` in the batch, in milliseconds: how far
    /// the mirror trails the table.
    pub const LAG_MS: &str = "LagMs";

    /// Every metric, in the order the record lists them.
    pub const ALL: [&str; 7] = [
        RECORDS,
        PUTS,
        DELETES,
        COALESCED,
        SKIPPED,
        FAILED_USERS,
        LAG_MS,
    ];
}

/// CloudWatch units of the metrics: values of `MetricDatum.Unit`.
pub mod unit {
    pub const COUNT: &str = "Count";
    pub const MILLISECONDS: &str = "Milliseconds";
}

/// The CloudWatch unit of `metric`, one of [`metric::ALL`]: milliseconds for [`metric::LAG_MS`],
/// a count for every other.
pub fn unit_of(metric: &str) -> &'static str {
    if metric == metric::LAG_MS {
        unit::MILLISECONDS
    } else {
        unit::COUNT
    }
}

/// A stream record's `dynamodb.ApproximateCreationDateTime` (epoch seconds) in epoch
/// milliseconds, as [`batch_lag_ms`] takes it: to the whole second below, DynamoDB's own
/// precision ("rounded down to the closest second",
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_StreamRecord.html>).
/// The function reads the whole seconds only too (aws_lambda_events misreads a fraction), so
/// the local poller, which converts with this, shows the function's numbers.
pub fn created_at_ms(epoch_seconds: f64) -> i64 {
    // `as` saturates, and NaN becomes 0, which `batch_lag_ms` passes over.
    (epoch_seconds.floor() as i64).saturating_mul(1000)
}

/// How far a batch trails the table at `now`: the largest `now − created` over the creation
/// times of its records (epoch milliseconds, see [`created_at_ms`]), in milliseconds.
///
/// A time at or before the epoch is no time (aws_lambda_events reads a missing
/// `ApproximateCreationDateTime` as 1970-01-01) and counts for nothing; `None` when no record
/// has one, so that no lag is reported rather than a made-up 0. A creation time after `now`
/// (clocks that disagree) counts as no lag at all.
pub fn batch_lag_ms(created_at_ms: impl IntoIterator<Item = i64>, now: SystemTime) -> Option<u64> {
    let now_ms = i64::try_from(epoch_ms(now)).unwrap_or(i64::MAX);
    created_at_ms
        .into_iter()
        .filter(|&created| created > 0)
        .map(|created| u64::try_from(now_ms.saturating_sub(created)).unwrap_or(0))
        .max()
}

/// `at` in milliseconds since the epoch (0 before it).
fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// One batch's summary line, which is also its CloudWatch Embedded Metric Format record: the
/// fields of a log line (`level`, `message`, the request, the users and the time taken) and
/// every metric of [`metric::ALL`] as a root member, with the `_aws` block that makes CloudWatch
/// Logs extract them.
///
/// The shape follows the specification,
/// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>:
/// `_aws` is a root member holding `Timestamp` (epoch milliseconds) and `CloudWatchMetrics`, an
/// array of directives, each with a `Namespace`, `Dimensions` (an array of dimension sets, each
/// an array of names of root members with string values) and `Metrics` (at most 100
/// `{Name, Unit}`, each naming a root member with a number value). Lambda sends every line a
/// function writes to stdout to CloudWatch Logs, which extracts the metrics of any line that is
/// such a document
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html>);
/// no API call and no permission is involved.
///
/// Lambda's JSON log format (which the stack sets) changes nothing for this line: for a
/// `provided.al2023` function Lambda formats only its own platform lines and does not encode
/// JSON lines again
/// (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-logformat.html>).
/// It does read their `"level"` to filter by the application log level
/// (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>),
/// so the line says `INFO`: an application log level of WARN or above would drop it, and the
/// metrics with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    /// The value of the [`DIMENSION`].
    pub function_name: &'a str,
    /// The invocation's request id, when the batch came from one.
    pub request_id: Option<&'a str>,
    /// When the batch was done: the metrics' timestamp.
    pub at: SystemTime,
    pub summary: &'a BatchSummary,
    /// How long the batch took.
    pub elapsed_ms: u64,
}

/// The summary line's `message`.
pub const MESSAGE: &str = "batch processed";

impl BatchRecord<'_> {
    /// The record as one line of JSON, without a line ending.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record of strings and integers always serializes")
    }

    /// The metrics this record carries, in [`metric::ALL`]'s order, with their values; the lag
    /// only when the batch has one.
    fn metrics(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let summary = self.summary;
        let count = |n: usize| Some(u64::try_from(n).unwrap_or(u64::MAX));
        [
            (metric::RECORDS, count(summary.records)),
            (metric::PUTS, count(summary.puts)),
            (metric::DELETES, count(summary.deletes)),
            (metric::COALESCED, count(summary.coalesced)),
            (metric::SKIPPED, count(summary.skipped)),
            (metric::FAILED_USERS, count(summary.failed_users)),
            (metric::LAG_MS, summary.lag_ms),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

impl Serialize for BatchRecord<'_> {
    /// The log line's own fields first, so that the line reads as a summary; `_aws` last.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("level", "INFO")?;
        map.serialize_entry("message", MESSAGE)?;
        if let Some(request_id) = self.request_id {
            map.serialize_entry("requestId", request_id)?;
        }
        map.serialize_entry(DIMENSION, self.function_name)?;
        map.serialize_entry("users", &self.summary.users)?;
        for (name, value) in self.metrics() {
            map.serialize_entry(name, &value)?;
        }
        map.serialize_entry("ms", &self.elapsed_ms)?;
        map.serialize_entry(
            "_aws",
            &Metadata {
                timestamp_ms: epoch_ms(self.at),
                record: self,
            },
        )?;
        map.end()
    }
}

/// The record's `_aws` member.
struct Metadata<'a> {
    timestamp_ms: u64,
    record: &'a BatchRecord<'a>,
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let metrics: Vec<Definition> = self
            .record
            .metrics()
            .map(|(name, _)| Definition {
                name,
                unit: unit_of(name),
            })
            .collect();
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("Timestamp", &self.timestamp_ms)?;
        map.serialize_entry(
            "CloudWatchMetrics",
            &[Directive {
                namespace: NAMESPACE,
                dimensions: [[DIMENSION]],
                metrics,
            }],
        )?;
        map.end()
    }
}

/// A `MetricDirective` of the specification.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive {
    namespace: &'static str,
    /// One dimension set: the function name alone.
    dimensions: [[&'static str; 1]; 1],
    metrics: Vec<Definition>,
}

/// A `MetricDefinition` of the specification.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Definition {
    name: &'static str,
    unit: &'static str,
}

/// Where the function writes each batch's [`BatchRecord`], and the function name the records
/// carry: this process's stdout in `bootstrap`, any writer elsewhere (tests capture it).
///
/// Not through `tracing`: lambda_runtime's JSON subscriber nests an event's fields under
/// `"fields"` and would write `_aws` as a string, where the specification wants a root member
/// that is an object.
#[derive(Clone)]
pub struct MetricsOut {
    function_name: String,
    writer: Arc<Mutex<dyn Write + Send>>,
}

impl MetricsOut {
    /// Records of function `function_name`, on this process's stdout, one line each.
    pub fn stdout(function_name: impl Into<String>) -> MetricsOut {
        MetricsOut::to_writer(function_name, io::stdout())
    }

    /// Records of function `function_name`, into `writer`, one line each.
    pub fn to_writer(
        function_name: impl Into<String>,
        writer: impl Write + Send + 'static,
    ) -> MetricsOut {
        MetricsOut {
            function_name: function_name.into(),
            writer: Arc::new(Mutex::new(writer)),
        }
    }

    /// The value of the records' [`DIMENSION`].
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// Writes `record` as one line. A failure is logged, never returned: the batch is applied
    /// by then, and failing it for its metrics would replay it.
    pub fn write(&self, record: &BatchRecord<'_>) {
        let mut line = record.to_line().into_bytes();
        line.push(b'\n');
        // One write of the whole line, so that no other output lands inside it.
        let written = {
            let mut writer = self
                .writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            writer.write_all(&line).and_then(|()| writer.flush())
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "failed to write the batch's metrics record");
        }
    }
}

impl fmt::Debug for MetricsOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsOut")
            .field("function_name", &self.function_name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_emf_line, CapturedMetrics};
    use serde_json::{json, Value};
    use std::time::Duration;

    const NOW_MS: u64 = 1_764_000_123_456;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    fn summary(lag_ms: Option<u64>) -> BatchSummary {
        BatchSummary {
            records: 100,
            users: 97,
            puts: 80,
            deletes: 17,
            coalesced: 3,
            skipped: 1,
            failed_users: 2,
            lag_ms,
        }
    }

    fn record(summary: &BatchSummary) -> BatchRecord<'_> {
        BatchRecord {
            function_name: "users-mirror",
            request_id: Some("req-1"),
            at: now(),
            summary,
            elapsed_ms: 41,
        }
    }

    #[test]
    fn the_lag_is_the_oldest_record_s_age() {
        let now_ms = i64::try_from(NOW_MS).unwrap();
        let created = [now_ms - 1_200, now_ms - 61_000, now_ms - 5];
        assert_eq!(batch_lag_ms(created, now()), Some(61_000));
    }

    #[test]
    fn records_without_a_creation_time_add_no_lag() {
        assert_eq!(batch_lag_ms([0, -5], now()), None);
        assert_eq!(batch_lag_ms(None, now()), None);
        let now_ms = i64::try_from(NOW_MS).unwrap();
        assert_eq!(batch_lag_ms([0, now_ms - 700], now()), Some(700));
    }

    #[test]
    fn a_record_from_the_future_counts_as_no_lag() {
        let now_ms = i64::try_from(NOW_MS).unwrap();
        assert_eq!(batch_lag_ms([now_ms + 3_000], now()), Some(0));
    }

    #[test]
    fn creation_times_keep_dynamodb_s_whole_seconds() {
        assert_eq!(created_at_ms(1_764_000_000.0), 1_764_000_000_000);
        assert_eq!(created_at_ms(1_764_000_000.75), 1_764_000_000_000);
        assert_eq!(created_at_ms(f64::NAN), 0);
    }

    #[test]
    fn the_record_is_an_emf_document_with_every_metric() {
        let summary = summary(Some(1_500));
        let line = record(&summary).to_line();
        let root = check_emf_line(&line).unwrap_or_else(|err| panic!("{err}: {line}"));

        let aws = &root["_aws"];
        assert_eq!(aws["Timestamp"], json!(NOW_MS));
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], NAMESPACE);
        assert_eq!(directives[0]["Dimensions"], json!([[DIMENSION]]));
        let named: Vec<(&str, &str)> = directives[0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        let expected: Vec<(&str, &str)> = metric::ALL
            .iter()
            .map(|&name| (name, unit_of(name)))
            .collect();
        assert_eq!(named, expected);

        assert_eq!(root[DIMENSION], "users-mirror");
        let values: Vec<&Value> = metric::ALL.iter().map(|&name| &root[name]).collect();
        assert_eq!(
            values,
            [100, 80, 17, 3, 1, 2, 1_500]
                .map(Value::from)
                .iter()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_record_reads_as_the_summary_line() {
        let summary = summary(Some(1_500));
        let line = record(&summary).to_line();
        assert!(
            line.starts_with(
                r#"{"level":"INFO","message":"batch processed","requestId":"req-1","FunctionName":"users-mirror","users":97,"Records":100,"#
            ),
            "{line}"
        );
        let root: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(root["ms"], 41);
    }

    #[test]
    fn a_batch_without_creation_times_reports_no_lag_at_all() {
        let summary = summary(None);
        let line = record(&summary).to_line();
        let root = check_emf_line(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(!root.contains_key(metric::LAG_MS), "{line}");
        let names: Vec<&Value> = root["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["Name"])
            .collect();
        assert_eq!(names.len(), metric::ALL.len() - 1);
        assert!(!names.contains(&&json!(metric::LAG_MS)));
    }

    #[test]
    fn records_are_written_one_line_each() {
        let captured = CapturedMetrics::new();
        let out = captured.out();
        let summary = summary(Some(1));
        out.write(&record(&summary));
        out.write(&record(&summary));
        let lines = captured.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], record(&summary).to_line());
    }

    /// A writer that always fails, as a closed stdout does.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_failed_write_is_a_warning_not_a_failure() {
        let logs = CapturedMetrics::new();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .finish();
        let summary = summary(None);
        tracing::subscriber::with_default(subscriber, || {
            MetricsOut::to_writer("f", Broken).write(&record(&summary));
        });
        let logs = logs.lines();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].contains("WARN"), "{logs:?}");
        assert!(
            logs[0].contains("failed to write the batch's metrics record"),
            "{logs:?}"
        );
    }
}
