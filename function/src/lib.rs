//! usersync's Lambda: mirrors a DynamoDB users table, through its stream, into one S3 object
//! per user.
//!
//! [`handle_payload`] is the whole behaviour; `main.rs` only builds the S3 client, the
//! configuration and the metrics output once and hands every invocation to it (as
//! [`handle_invocation`], which also names the request in the batch's summary).

pub mod config;
pub mod handler;
pub mod image;
pub mod key;
pub mod metrics;
pub mod plan;
pub mod store;
pub mod testing;

pub use config::{Config, ConfigError, DeleteScope};
pub use handler::{
    handle_event, handle_invocation, handle_payload, payload_records, process_batch,
    process_records, stream_records, BatchSummary, Mirror, NotAStreamsEvent,
};
pub use metrics::MetricsOut;
#[cfg(feature = "s3")]
pub use store::S3Store;
pub use store::{ObjectStore, StoreError};

/// Builds the S3 client from the standard AWS environment (credentials, region,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`), with path-style addressing when `config` asks
/// for it, as emulators usually need.
#[cfg(feature = "s3")]
pub async fn s3_client(config: &Config) -> aws_sdk_s3::Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    s3_client_from(&shared, config.force_path_style)
}

/// Attempts per S3 request, the first included.
#[cfg(feature = "s3")]
pub const S3_MAX_ATTEMPTS: u32 = 5;

/// The function's S3 client over `shared`: the SDK's standard retries, with more attempts and
/// no retry quota. A user whose request fails for good costs a replay of the whole batch from
/// that user on, so a transient error (500, 503 SlowDown, a reset) is retried where it
/// happened, with jittered back-off from 100 ms to 2 s. The SDK's quota (a token bucket that
/// stops retrying after a run of errors) would otherwise turn a burst of S3 errors into failed
/// users at once: at 30% failing requests it emptied within the first thousand records and
/// batches went to the failure queue (`itests/tests/faults.rs`). Concurrency stays bounded by
/// `MAX_CONCURRENCY`, which bounds the retries too.
///
/// Request checksums only where S3 requires one (DeleteObjects): the SDK's default adds a
/// CRC32 of every PutObject body, about 5% of the function's CPU per record in A/B runs,
/// and at 128 MB CPU per record is the function's throughput. The body is a few hundred bytes
/// of JSON sent over HTTPS, whose records TLS already authenticates end to end.
#[cfg(feature = "s3")]
pub fn s3_client_from(
    shared: &aws_config::SdkConfig,
    force_path_style: bool,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
    use aws_sdk_s3::config::RequestChecksumCalculation;
    let s3_config = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(S3_MAX_ATTEMPTS)
                .with_initial_backoff(std::time::Duration::from_millis(100))
                .with_max_backoff(std::time::Duration::from_secs(2)),
        )
        .retry_partition(
            RetryPartition::custom("usersync-s3")
                .token_bucket(TokenBucket::unlimited())
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

#[cfg(all(test, feature = "s3"))]
mod tests {
    use aws_sdk_s3::config::RequestChecksumCalculation;

    #[test]
    fn the_client_checksums_only_where_s3_requires_it_and_retries_without_a_quota() {
        let shared = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let client = super::s3_client_from(&shared, true);
        let config = client.config();
        assert_eq!(
            config.request_checksum_calculation(),
            Some(&RequestChecksumCalculation::WhenRequired)
        );
        let retry = config.retry_config().expect("a retry configuration");
        assert_eq!(retry.max_attempts(), super::S3_MAX_ATTEMPTS);
    }
}
