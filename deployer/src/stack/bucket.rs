//! Emptying a bucket: every object version and delete marker, page by page. Teardown empties
//! the data bucket with it, and the assets bucket's archives go the same way.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{aws_error, build_error, StackError};
use crate::target::Target;

/// Deletes every object version and delete marker in `bucket` (under `prefix`, if given);
/// returns how many were removed. A bucket that does not exist holds nothing.
pub async fn delete_all_versions(
    target: &Target,
    bucket: &str,
    prefix: Option<&str>,
) -> Result<usize, StackError> {
    delete_versions(target, bucket, prefix, None).await
}

/// [`delete_all_versions`], with every request carrying `expected_owner` as
/// `ExpectedBucketOwner` when given: S3 then refuses (403 Access Denied) to act on a bucket
/// another account owns (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html).
pub(crate) async fn delete_versions(
    target: &Target,
    bucket: &str,
    prefix: Option<&str>,
    expected_owner: Option<&str>,
) -> Result<usize, StackError> {
    let s3 = target.s3();
    let owner = expected_owner.map(str::to_owned);
    let mut removed = 0;
    // Deleting while paging would move the markers; list a page, delete it, list again.
    loop {
        let listed = s3
            .list_object_versions()
            .bucket(bucket)
            .set_prefix(prefix.map(str::to_owned))
            .set_expected_bucket_owner(owner.clone())
            .send()
            .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(err)
                if aws_sdk_s3::error::ProvideErrorMetadata::code(&err) == Some("NoSuchBucket") =>
            {
                return Ok(removed)
            }
            Err(err) => {
                return Err(aws_error(
                    format!("list the objects of bucket {bucket}"),
                    err,
                ))
            }
        };
        let mut objects = Vec::new();
        for version in listed.versions() {
            objects.push((version.key(), version.version_id()));
        }
        for marker in listed.delete_markers() {
            objects.push((marker.key(), marker.version_id()));
        }
        let identifiers = objects
            .into_iter()
            .filter_map(|(key, version)| {
                ObjectIdentifier::builder()
                    .key(key?)
                    .set_version_id(version.filter(|v| *v != "null").map(str::to_owned))
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        if identifiers.is_empty() {
            return Ok(removed);
        }
        for chunk in identifiers.chunks(1000) {
            let delete = Delete::builder()
                .set_objects(Some(chunk.to_vec()))
                .quiet(true)
                .build()
                .map_err(|err| build_error("build a DeleteObjects request", err))?;
            let output = s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .set_expected_bucket_owner(owner.clone())
                .send()
                .await
                .map_err(|err| aws_error(format!("delete objects of bucket {bucket}"), err))?;
            if let Some(error) = output.errors().first() {
                return Err(StackError::Aws {
                    action: format!("delete objects of bucket {bucket}"),
                    message: format!(
                        "{} of {} failed, first {:?}: {}",
                        output.errors().len(),
                        chunk.len(),
                        error.key().unwrap_or_default(),
                        error.message().or(error.code()).unwrap_or("unknown error")
                    ),
                });
            }
            removed += chunk.len();
        }
    }
}
