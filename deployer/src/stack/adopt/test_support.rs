//! What the adoption checks' tests share: the names they adopt, and DynamoDB and S3 clients that
//! answer with mocked responses instead of AWS.

use aws_smithy_mocks::{create_mock_http_client, MockResponseInterceptor, Rule, RuleMode};
use aws_smithy_types::retry::RetryConfig;

pub(super) const REGION: &str = "eu-west-1";
pub(super) const TABLE: &str = "people";
pub(super) const BUCKET: &str = "people-mirror";
/// A KMS key ARN: the table's key in the table tests, a bucket's in the bucket tests.
pub(super) const TABLE_KEY: &str =
    "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::Sequential),
        |interceptor, rule| interceptor.with_rule(rule),
    )
}

/// A DynamoDB client answering with `rules`, in order.
pub(super) fn dynamodb(rules: &[&Rule]) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rules))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An S3 client answering with `rules`, in order.
pub(super) fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rules))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
