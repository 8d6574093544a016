//! What the reconcile reads from the bucket: pages of the listing, the MD5 of one object's
//! body, and the bucket's default encryption. Writes go through the function's own store.

use std::future::Future;

use aws_sdk_s3::error::ProvideErrorMetadata;
use md5::{Digest, Md5};

use super::etag::{BucketEncryption, Md5Digest};
use crate::stack::{aws_error, StackError};

/// One object as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    /// As S3 sends it, quotes included.
    pub etag: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub last_modified: i64,
}

/// One page of ListObjectsV2.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// More keys follow the last one of this page.
    pub truncated: bool,
}

/// The bucket, read.
pub trait BucketReader: Sync {
    /// The keys under `prefix` that sort after `start_after` (all of them when `None`), one page.
    fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<ListPage, StackError>> + Send;

    /// The MD5 of the object's body, read whole; `None` when there is no object at `key`.
    fn body_md5(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Md5Digest>, StackError>> + Send;

    /// The bucket's default encryption.
    fn encryption(&self) -> impl Future<Output = Result<BucketEncryption, StackError>> + Send;
}

/// The data bucket through the AWS SDK.
#[derive(Clone, Debug)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Bucket {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

/// GetBucketEncryption's error code for a bucket without default encryption.
const NO_ENCRYPTION_CONFIGURATION: &str = "ServerSideEncryptionConfigurationNotFoundError";

impl BucketReader for S3Bucket {
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StackError> {
        // StartAfter rather than a continuation token: "Amazon S3 starts listing after this
        // specified key. StartAfter can be any key in the bucket"
        // (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html), and keys
        // come back in UTF-8 binary order, so the last key committed is a checkpoint that
        // outlives the process (a continuation token is opaque and its lifetime undocumented).
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .send()
            .await
            .map_err(|err| aws_error(format!("list bucket {}", self.bucket), err))?;
        let objects = output
            .contents()
            .iter()
            .filter_map(|object| {
                Some(ListedObject {
                    key: object.key()?.to_owned(),
                    etag: object.e_tag().unwrap_or_default().to_owned(),
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                    last_modified: object.last_modified().map_or(0, |t| t.secs()),
                })
            })
            .collect();
        Ok(ListPage {
            objects,
            truncated: output.is_truncated().unwrap_or(false),
        })
    }

    async fn body_md5(&self, key: &str) -> Result<Option<Md5Digest>, StackError> {
        let action = || format!("read object {key} in bucket {}", self.bucket);
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None)
            }
            Err(err) => return Err(aws_error(action(), err)),
        };
        // Hashed as it arrives: an object of any size costs one chunk of memory.
        let mut body = object.body;
        let mut digest = Md5::new();
        while let Some(chunk) = body.try_next().await.map_err(|err| StackError::Aws {
            action: action(),
            message: err.to_string(),
        })? {
            digest.update(&chunk);
        }
        Ok(Some(digest.finalize().into()))
    }

    async fn encryption(&self) -> Result<BucketEncryption, StackError> {
        match self
            .client
            .get_bucket_encryption()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(output) => {
                let algorithm = output
                    .server_side_encryption_configuration()
                    .and_then(|config| config.rules().first())
                    .and_then(|rule| rule.apply_server_side_encryption_by_default())
                    .map(|default| default.sse_algorithm().as_str().to_owned());
                Ok(algorithm.map_or(BucketEncryption::None, |algorithm| {
                    BucketEncryption::from_algorithm(&algorithm)
                }))
            }
            Err(err) if err.code() == Some(NO_ENCRYPTION_CONFIGURATION) => {
                Ok(BucketEncryption::None)
            }
            Err(err) => Err(aws_error(
                format!("read the default encryption of bucket {}", self.bucket),
                err,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::get_bucket_encryption::{
        GetBucketEncryptionError, GetBucketEncryptionOutput,
    };
    use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::error::NoSuchKey;
    use aws_sdk_s3::types::{
        Object, ServerSideEncryption, ServerSideEncryptionByDefault,
        ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    };
    use aws_sdk_s3::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;
    use crate::reconcile::etag::md5_of;

    #[tokio::test]
    async fn lists_under_the_prefix_after_the_checkpoint_key() {
        let page = mock!(Client::list_objects_v2)
            .match_requests(|r| {
                r.bucket() == Some("data")
                    && r.prefix() == Some("users/")
                    && r.start_after() == Some("users/bob/userdata")
                    && r.continuation_token().is_none()
            })
            .then_output(|| {
                ListObjectsV2Output::builder()
                    .contents(
                        Object::builder()
                            .key("users/cy/userdata")
                            .e_tag("\"abc\"")
                            .size(12)
                            .last_modified(aws_smithy_types::DateTime::from_secs(1_700_000_000))
                            .build(),
                    )
                    .is_truncated(true)
                    .build()
            });
        let first = mock!(Client::list_objects_v2)
            .match_requests(|r| r.start_after().is_none() && r.prefix() == Some("users/"))
            .then_output(|| ListObjectsV2Output::builder().is_truncated(false).build());
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&page, &first]);
        let bucket = S3Bucket::new(client, "data");
        let listed = bucket
            .list_page("users/", Some("users/bob/userdata"))
            .await
            .unwrap();
        assert_eq!(
            listed,
            ListPage {
                objects: vec![ListedObject {
                    key: "users/cy/userdata".into(),
                    etag: "\"abc\"".into(),
                    size: 12,
                    last_modified: 1_700_000_000,
                }],
                truncated: true,
            }
        );
        assert_eq!(
            bucket.list_page("users/", None).await.unwrap(),
            ListPage::default()
        );
        assert_eq!((page.num_calls(), first.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn reads_a_body_s_md5_and_a_missing_object_as_none() {
        let found = mock!(Client::get_object)
            .match_requests(|r| r.key() == Some("ann/userdata"))
            .then_output(|| {
                GetObjectOutput::builder()
                    .body(ByteStream::from_static(b"{\"name\":\"ann\"}"))
                    .build()
            });
        let gone = mock!(Client::get_object)
            .match_requests(|r| r.key() == Some("bob/userdata"))
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build()));
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&found, &gone]);
        let bucket = S3Bucket::new(client, "data");
        assert_eq!(
            bucket.body_md5("ann/userdata").await.unwrap(),
            Some(md5_of(b"{\"name\":\"ann\"}"))
        );
        assert_eq!(bucket.body_md5("bob/userdata").await.unwrap(), None);
    }

    #[tokio::test]
    async fn learns_the_default_encryption_and_its_absence() {
        let rule = |algorithm: ServerSideEncryption| {
            let configuration = ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(algorithm)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap();
            GetBucketEncryptionOutput::builder()
                .server_side_encryption_configuration(configuration)
                .build()
        };
        let sse_s3 = mock!(Client::get_bucket_encryption)
            .then_output(move || rule(ServerSideEncryption::Aes256));
        let kms = mock!(Client::get_bucket_encryption)
            .then_output(move || rule(ServerSideEncryption::AwsKms));
        let none = mock!(Client::get_bucket_encryption).then_error(|| {
            GetBucketEncryptionError::generic(
                ErrorMetadata::builder()
                    .code(NO_ENCRYPTION_CONFIGURATION)
                    .message("The server side encryption configuration was not found")
                    .build(),
            )
        });
        let denied = mock!(Client::get_bucket_encryption).then_error(|| {
            GetBucketEncryptionError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("Access Denied")
                    .build(),
            )
        });
        let client = mock_client!(
            aws_sdk_s3,
            RuleMode::Sequential,
            &[&sse_s3, &kms, &none, &denied]
        );
        let bucket = S3Bucket::new(client, "data");
        assert_eq!(bucket.encryption().await.unwrap(), BucketEncryption::SseS3);
        assert_eq!(bucket.encryption().await.unwrap(), BucketEncryption::Kms);
        assert_eq!(bucket.encryption().await.unwrap(), BucketEncryption::None);
        let err = bucket.encryption().await.unwrap_err();
        assert!(err.to_string().contains("AccessDenied"), "{err}");
    }
}
