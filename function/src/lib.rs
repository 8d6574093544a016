//! usersync's Lambda: mirrors a DynamoDB users table, through its stream, into one S3 object
//! per user.
//!
//! [`handle_event`] is the whole behaviour; `main.rs` only builds the S3 client and the
//! configuration once and hands every invocation to it.

pub mod config;
pub mod handler;
pub mod image;
pub mod key;
pub mod plan;
pub mod store;

pub use config::{Config, ConfigError, DeleteScope};
pub use handler::{
    handle_event, process_batch, stream_records, BatchSummary, Mirror, NotAStreamsEvent,
};
#[cfg(feature = "s3")]
pub use store::S3Store;
pub use store::{ObjectStore, StoreError};

/// Builds the S3 client from the standard AWS environment (credentials, region,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`), with path-style addressing when `config` asks
/// for it, as emulators usually need.
#[cfg(feature = "s3")]
pub async fn s3_client(config: &Config) -> aws_sdk_s3::Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3_config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
