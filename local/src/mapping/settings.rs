//! An event source mapping's settings, read from the target's Lambda API and checked once, in
//! the form the poller uses them.

use std::time::Duration;

use aws_sdk_lambda::types::{
    EventSourceMappingConfiguration, EventSourcePosition, FunctionResponseType,
};

/// Lambda's defaults for DynamoDB Streams mappings, used where the API leaves a field out.
const DEFAULT_BATCH_SIZE: usize = 100;
/// DynamoDB Streams mappings take at most this many records per batch.
const MAX_BATCH_SIZE: usize = 10_000;
/// `MaximumBatchingWindowInSeconds` is at most five minutes.
const MAX_BATCHING_WINDOW_S: i32 = 300;
/// `ParallelizationFactor` is 1 (the default) to 10
/// (https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html).
const MAX_PARALLELIZATION_FACTOR: usize = 10;

/// Where a mapping starts reading shards that exist when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still in the stream.
    TrimHorizon,
    /// Only records written after the mapping starts.
    Latest,
}

/// The settings of one DynamoDB Streams event source mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingSettings {
    pub uuid: String,
    /// The function the mapping invokes, as the mapping names it.
    pub function_arn: String,
    pub stream_arn: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    /// Batches of one shard in flight at once (`ParallelizationFactor`, 1 to 10); the records
    /// of one partition key always go to the same one, in order.
    pub parallelization_factor: usize,
    pub starting_position: StartingPosition,
    /// Retries of a failing batch; `None` retries until the records expire (`-1`).
    pub max_retry_attempts: Option<u32>,
    /// Records older than this are not sent to the function; `None` means no limit (`-1`).
    pub max_record_age: Option<Duration>,
    pub bisect_on_error: bool,
    /// `FunctionResponseTypes` holds `ReportBatchItemFailures`: the response is read for
    /// partial failures.
    pub report_batch_item_failures: bool,
    pub enabled: bool,
    /// The SQS queue ARN that receives discarded batches' information.
    pub on_failure_destination: Option<String>,
    /// A filter the mapping declares; the local poller does not apply filters and says so.
    pub has_filter_criteria: bool,
}

/// A mapping the local poller cannot run, with what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("the event source mapping has no {0}: the Lambda API returned an incomplete mapping")]
    Missing(&'static str),
    #[error("event source mapping {uuid} reads {arn}, which is not a DynamoDB stream: the local poller runs only DynamoDB Streams mappings")]
    NotADynamoDbStream { uuid: String, arn: String },
    #[error("event source mapping {uuid} has BatchSize {value}: use 1 to {MAX_BATCH_SIZE}")]
    BatchSize { uuid: String, value: i32 },
    #[error("event source mapping {uuid} has MaximumBatchingWindowInSeconds {value}: use 0 to {MAX_BATCHING_WINDOW_S}")]
    BatchingWindow { uuid: String, value: i32 },
    #[error("event source mapping {uuid} has ParallelizationFactor {value}: use 1 to {MAX_PARALLELIZATION_FACTOR}")]
    ParallelizationFactor { uuid: String, value: i32 },
    #[error("event source mapping {uuid} starts AT_TIMESTAMP, which DynamoDB Streams does not support: use TRIM_HORIZON or LATEST")]
    StartingPosition { uuid: String },
    #[error("event source mapping {uuid} has {field} {value}: use -1 or a value of 0 or more")]
    Negative {
        uuid: String,
        field: &'static str,
        value: i32,
    },
    #[error("event source mapping {uuid} sends failures to {arn}: the local poller sends on-failure records only to SQS queues")]
    Destination { uuid: String, arn: String },
}

impl MappingSettings {
    /// Reads a mapping as `GetEventSourceMapping` / `ListEventSourceMappings` return it.
    pub fn from_configuration(
        config: &EventSourceMappingConfiguration,
    ) -> Result<Self, MappingError> {
        let uuid = config
            .uuid()
            .ok_or(MappingError::Missing("UUID"))?
            .to_owned();
        let stream_arn = config
            .event_source_arn()
            .ok_or(MappingError::Missing("EventSourceArn"))?
            .to_owned();
        let is_stream = stream_arn.starts_with("arn:")
            && stream_arn.contains(":dynamodb:")
            && stream_arn.contains("/stream/");
        if !is_stream {
            return Err(MappingError::NotADynamoDbStream {
                uuid,
                arn: stream_arn,
            });
        }
        let function_arn = config
            .function_arn()
            .ok_or(MappingError::Missing("FunctionArn"))?
            .to_owned();

        let batch_size = match config.batch_size() {
            None => DEFAULT_BATCH_SIZE,
            Some(value) => match usize::try_from(value) {
                Ok(n @ 1..=MAX_BATCH_SIZE) => n,
                _ => return Err(MappingError::BatchSize { uuid, value }),
            },
        };
        let batching_window = match config.maximum_batching_window_in_seconds() {
            None => Duration::ZERO,
            Some(value @ 0..=MAX_BATCHING_WINDOW_S) => {
                Duration::from_secs(value.unsigned_abs().into())
            }
            Some(value) => return Err(MappingError::BatchingWindow { uuid, value }),
        };
        let parallelization_factor = match config.parallelization_factor() {
            None => 1,
            Some(value) => match usize::try_from(value) {
                Ok(n @ 1..=MAX_PARALLELIZATION_FACTOR) => n,
                _ => return Err(MappingError::ParallelizationFactor { uuid, value }),
            },
        };
        let starting_position = match config.starting_position() {
            None | Some(EventSourcePosition::TrimHorizon) => StartingPosition::TrimHorizon,
            Some(EventSourcePosition::Latest) => StartingPosition::Latest,
            Some(_) => return Err(MappingError::StartingPosition { uuid }),
        };
        let unlimited_or = |field: &'static str, value: Option<i32>| match value {
            None | Some(-1) => Ok(None),
            Some(n) if n >= 0 => Ok(Some(n.unsigned_abs())),
            Some(value) => Err(MappingError::Negative {
                uuid: uuid.clone(),
                field,
                value,
            }),
        };
        let max_retry_attempts =
            unlimited_or("MaximumRetryAttempts", config.maximum_retry_attempts())?;
        let max_record_age = unlimited_or(
            "MaximumRecordAgeInSeconds",
            config.maximum_record_age_in_seconds(),
        )?
        .map(|s| Duration::from_secs(s.into()));

        let on_failure_destination = config
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|f| f.destination())
            .filter(|arn| !arn.is_empty())
            .map(str::to_owned);
        if let Some(arn) = &on_failure_destination {
            if !arn.starts_with("arn:") || !arn.contains(":sqs:") {
                return Err(MappingError::Destination {
                    uuid,
                    arn: arn.clone(),
                });
            }
        }

        Ok(Self {
            function_arn,
            stream_arn,
            batch_size,
            batching_window,
            parallelization_factor,
            starting_position,
            max_retry_attempts,
            max_record_age,
            bisect_on_error: config.bisect_batch_on_function_error().unwrap_or(false),
            report_batch_item_failures: config
                .function_response_types()
                .contains(&FunctionResponseType::ReportBatchItemFailures),
            enabled: enabled_in(config.state()),
            on_failure_destination,
            has_filter_criteria: config
                .filter_criteria()
                .is_some_and(|f| !f.filters().is_empty()),
            uuid,
        })
    }
}

/// Whether a mapping in `state` (its `State`, as `GetEventSourceMapping` reports it) reads its
/// stream. A mapping being created, enabled or updated is on its way to running; a disabled or
/// disabling one pauses "polling and invocation"
/// (https://docs.aws.amazon.com/lambda/latest/dg/API_UpdateEventSourceMapping.html; states:
/// https://docs.aws.amazon.com/lambda/latest/dg/API_EventSourceMappingConfiguration.html).
pub fn enabled_in(state: Option<&str>) -> bool {
    !matches!(state, Some("Disabled" | "Disabling"))
}

/// The queue name and owning account of an SQS queue ARN, `arn:aws:sqs:<region>:<account>:<name>`,
/// which is what `GetQueueUrl` takes.
pub fn queue_name_and_account(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("sqs"), Some(_region), Some(account), Some(name)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (!name.is_empty()).then_some((name, account))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::types::{DestinationConfig, Filter, FilterCriteria, OnFailure};

    const STREAM: &str =
        "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/2026-12-02T00:00:00.000";
    const QUEUE: &str = "arn:aws:sqs:us-east-1:000000000000:usersync-failures";

    fn deployed() -> aws_sdk_lambda::types::builders::EventSourceMappingConfigurationBuilder {
        EventSourceMappingConfiguration::builder()
            .uuid("u-1")
            .event_source_arn(STREAM)
            .function_arn("arn:aws:lambda:us-east-1:000000000000:function:usersync-mirror")
            .state("Enabled")
    }

    #[test]
    fn reads_every_setting_the_stack_deploys() {
        let config = deployed()
            .batch_size(250)
            .maximum_batching_window_in_seconds(2)
            .parallelization_factor(4)
            .starting_position(EventSourcePosition::TrimHorizon)
            .maximum_retry_attempts(5)
            .maximum_record_age_in_seconds(3600)
            .bisect_batch_on_function_error(true)
            .function_response_types(FunctionResponseType::ReportBatchItemFailures)
            .destination_config(
                DestinationConfig::builder()
                    .on_failure(OnFailure::builder().destination(QUEUE).build())
                    .build(),
            )
            .build();
        assert_eq!(
            MappingSettings::from_configuration(&config).unwrap(),
            MappingSettings {
                uuid: "u-1".into(),
                function_arn: "arn:aws:lambda:us-east-1:000000000000:function:usersync-mirror"
                    .into(),
                stream_arn: STREAM.into(),
                batch_size: 250,
                batching_window: Duration::from_secs(2),
                parallelization_factor: 4,
                starting_position: StartingPosition::TrimHorizon,
                max_retry_attempts: Some(5),
                max_record_age: Some(Duration::from_secs(3600)),
                bisect_on_error: true,
                report_batch_item_failures: true,
                enabled: true,
                on_failure_destination: Some(QUEUE.into()),
                has_filter_criteria: false,
            }
        );
    }

    #[test]
    fn missing_fields_take_lambdas_defaults() {
        let settings = MappingSettings::from_configuration(&deployed().build()).unwrap();
        assert_eq!(settings.batch_size, 100);
        assert_eq!(settings.batching_window, Duration::ZERO);
        assert_eq!(settings.parallelization_factor, 1);
        assert_eq!(settings.max_retry_attempts, None);
        assert_eq!(settings.max_record_age, None);
        assert!(!settings.bisect_on_error);
        assert!(!settings.report_batch_item_failures);
        assert_eq!(settings.on_failure_destination, None);
    }

    #[test]
    fn minus_one_means_no_limit() {
        let config = deployed()
            .maximum_retry_attempts(-1)
            .maximum_record_age_in_seconds(-1)
            .build();
        let settings = MappingSettings::from_configuration(&config).unwrap();
        assert_eq!(settings.max_retry_attempts, None);
        assert_eq!(settings.max_record_age, None);
    }

    #[test]
    fn latest_and_disabled_are_honoured() {
        let config = deployed()
            .starting_position(EventSourcePosition::Latest)
            .state("Disabled")
            .filter_criteria(
                FilterCriteria::builder()
                    .filters(Filter::builder().pattern("{}").build())
                    .build(),
            )
            .build();
        let settings = MappingSettings::from_configuration(&config).unwrap();
        assert_eq!(settings.starting_position, StartingPosition::Latest);
        assert!(!settings.enabled);
        assert!(settings.has_filter_criteria);
    }

    #[test]
    fn refuses_what_it_cannot_run_with_the_fix() {
        let cases = [
            (
                deployed()
                    .event_source_arn("arn:aws:kinesis:us-east-1:1:stream/x")
                    .build(),
                "not a DynamoDB stream",
            ),
            (deployed().batch_size(0).build(), "use 1 to 10000"),
            (deployed().batch_size(10_001).build(), "use 1 to 10000"),
            (
                deployed().maximum_batching_window_in_seconds(301).build(),
                "use 0 to 300",
            ),
            (
                deployed().parallelization_factor(0).build(),
                "has ParallelizationFactor 0: use 1 to 10",
            ),
            (
                deployed().parallelization_factor(11).build(),
                "has ParallelizationFactor 11: use 1 to 10",
            ),
            (
                deployed()
                    .starting_position(EventSourcePosition::AtTimestamp)
                    .build(),
                "use TRIM_HORIZON or LATEST",
            ),
            (
                deployed().maximum_retry_attempts(-2).build(),
                "MaximumRetryAttempts -2",
            ),
            (
                deployed()
                    .destination_config(
                        DestinationConfig::builder()
                            .on_failure(
                                OnFailure::builder()
                                    .destination("arn:aws:sns:us-east-1:1:topic")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
                "only to SQS queues",
            ),
            (
                EventSourceMappingConfiguration::builder().build(),
                "has no UUID",
            ),
        ];
        for (config, expected) in cases {
            let err = MappingSettings::from_configuration(&config).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} should say {expected:?}"
            );
        }
    }

    #[test]
    fn splits_a_queue_arn() {
        assert_eq!(
            queue_name_and_account(QUEUE),
            Some(("usersync-failures", "000000000000"))
        );
        assert_eq!(queue_name_and_account("arn:aws:sns:us-east-1:1:t"), None);
        assert_eq!(queue_name_and_account("arn:aws:sqs:us-east-1:1:"), None);
        assert_eq!(queue_name_and_account("not an arn"), None);
    }
}
