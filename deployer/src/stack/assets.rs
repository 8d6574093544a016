//! The assets bucket: where function archives are uploaded for CloudFormation to read.

use std::path::Path;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};

use super::{aws_error, build_error, StackError};
use crate::console::Console;
use crate::target::Target;

/// Where an archive was uploaded, and whether this call uploaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedArtifact {
    pub bucket: String,
    pub key: String,
    pub uploaded: bool,
}

/// The assets bucket of an account and region: one per account and region, shared by stacks.
pub fn assets_bucket_name(account: &str, region: &str) -> String {
    format!("usersync-assets-{account}-{region}")
}

/// The account the target's credentials belong to; emulators answer with their fixed account.
pub async fn account_id(target: &Target) -> Result<String, StackError> {
    let identity = target
        .sts()
        .get_caller_identity()
        .send()
        .await
        .map_err(|err| aws_error("identify the AWS account (sts:GetCallerIdentity)", err))?;
    Ok(identity.account().unwrap_or("000000000000").to_owned())
}

/// On real AWS, asks before `action` (what will change, such as "deploy stack users"), naming
/// the account and region; elsewhere there is nothing to ask. A refusal is
/// [`StackError::Declined`]: nothing was changed.
pub async fn confirm_on_aws(
    target: &Target,
    console: &mut dyn Console,
    action: &str,
) -> Result<(), StackError> {
    if !target.is_aws() {
        return Ok(());
    }
    let account = account_id(target).await?;
    let question = format!("{action} in AWS account {account}, {}?", target.region());
    if console.confirm(&question) {
        Ok(())
    } else {
        Err(StackError::Declined(action.to_owned()))
    }
}

/// The assets bucket as S3 reports it to a request that expects the account to own it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AssetsBucket {
    /// It exists and the account owns it.
    Ours,
    Missing,
}

/// A bucket as S3 reports it to `HeadBucket` with `ExpectedBucketOwner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnedBucket {
    /// 200: it exists and the account owns it.
    Ours,
    /// 404: it does not exist.
    Missing,
    /// 403: another account owns it, or the credentials lack `s3:ListBucket` on it.
    Forbidden,
}

/// Asks S3 with `HeadBucket` and `ExpectedBucketOwner` whether `account` owns `bucket`: 200 when
/// it exists and `account` owns it, 404 when it does not exist. A 403 is either another owner
/// ("If the account ID that you provide does not match the actual owner of the bucket, the
/// request fails with the HTTP status code 403 Forbidden") or credentials without
/// `s3:ListBucket`, which HeadBucket needs
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html); a HEAD answer has no
/// body to tell them apart, so the callers' errors name both. Any other answer (a redirect to
/// another region, say) is returned as the SDK's error.
pub(crate) async fn head_owned_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
) -> Result<OwnedBucket, SdkError<HeadBucketError>> {
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(_) => Ok(OwnedBucket::Ours),
        Err(err) => match err.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => Ok(OwnedBucket::Missing),
            Some(403) => Ok(OwnedBucket::Forbidden),
            _ => Err(err),
        },
    }
}

/// Checks the assets bucket with [`head_owned_bucket`]; a 403 is
/// [`StackError::AssetsBucketForbidden`], naming both causes.
async fn check_assets_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
) -> Result<AssetsBucket, StackError> {
    match head_owned_bucket(s3, bucket, account).await {
        Ok(OwnedBucket::Ours) => Ok(AssetsBucket::Ours),
        Ok(OwnedBucket::Missing) => Ok(AssetsBucket::Missing),
        Ok(OwnedBucket::Forbidden) => Err(StackError::AssetsBucketForbidden {
            bucket: bucket.to_owned(),
            account: account.to_owned(),
        }),
        Err(err) => Err(aws_error(format!("check the assets bucket {bucket}"), err)),
    }
}

/// Makes sure the assets bucket exists, is owned by `account`, and is encrypted with all public
/// access blocked.
///
/// The bucket's name, `usersync-assets-<account>-<region>`, can be guessed, so another account
/// could create it first. Every request on it but `CreateBucket` carries `ExpectedBucketOwner`,
/// which makes S3 refuse (403) a bucket another account owns
/// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html);
/// `CreateBucket` is one of the operations that take no bucket owner condition (same page,
/// "Restrictions and limitations"), so the bucket is checked again right after it is created.
async fn ensure_assets_bucket(
    target: &Target,
    bucket: &str,
    account: &str,
    console: &mut dyn Console,
) -> Result<(), StackError> {
    let s3 = target.s3();
    if check_assets_bucket(&s3, bucket, account).await? == AssetsBucket::Ours {
        return Ok(());
    }
    console.line(&format!("creating assets bucket {bucket}"));
    let region = target.region();
    let mut create = s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses an explicit location constraint.
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    if let Err(err) = create.send().await {
        match err.code() {
            Some("BucketAlreadyOwnedByYou") => {}
            // Taken since the check a moment ago, by another account.
            Some("BucketAlreadyExists") => {
                return Err(StackError::AssetsBucketTaken {
                    bucket: bucket.to_owned(),
                })
            }
            _ => return Err(aws_error(format!("create the assets bucket {bucket}"), err)),
        }
    }
    // Ours? CreateBucket could not be asked.
    if check_assets_bucket(&s3, bucket, account).await? == AssetsBucket::Missing {
        return Err(StackError::Vanished {
            what: format!("the assets bucket {bucket}"),
            step: "it was being created".to_owned(),
        });
    }
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .map_err(|err| build_error("build the encryption rule", err))?,
                )
                .build(),
        )
        .build()
        .map_err(|err| build_error("build the encryption configuration", err))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|err| aws_error(format!("encrypt the assets bucket {bucket}"), err))?;
    s3.put_public_access_block()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|err| {
            aws_error(
                format!("block public access to the assets bucket {bucket}"),
                err,
            )
        })?;
    Ok(())
}

/// Uploads the archive at `zip` under `<stack>/<file name>` (a content-addressed name), unless
/// that key already exists.
pub async fn upload_artifact(
    target: &Target,
    stack: &str,
    zip: &Path,
    content_name: &str,
    console: &mut dyn Console,
) -> Result<UploadedArtifact, StackError> {
    let account = account_id(target).await?;
    let bucket = assets_bucket_name(&account, &target.region());
    ensure_assets_bucket(target, &bucket, &account, console).await?;
    let key = format!("{stack}/{content_name}");
    let s3 = target.s3();
    match s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .expected_bucket_owner(&account)
        .send()
        .await
    {
        Ok(_) => {
            return Ok(UploadedArtifact {
                bucket,
                key,
                uploaded: false,
            })
        }
        Err(err)
            if err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(err) => return Err(aws_error(format!("check s3://{bucket}/{key}"), err)),
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(zip)
        .await
        .map_err(|err| StackError::Artifact {
            path: zip.to_path_buf(),
            source: std::io::Error::other(err),
        })?;
    console.line(&format!(
        "uploading the function archive to s3://{bucket}/{key}"
    ));
    let uploaded = s3
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .expected_bucket_owner(&account)
        .body(body)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await;
    if let Err(err) = uploaded {
        // A missing bucket may answer before the archive is sent and close the connection, so
        // the error can be a broken connection as well as NoSuchBucket: the bucket tells.
        let no_such_bucket =
            aws_sdk_s3::error::ProvideErrorMetadata::code(&err) == Some("NoSuchBucket");
        let checked = if no_such_bucket {
            Ok(AssetsBucket::Missing)
        } else {
            check_assets_bucket(&s3, &bucket, &account).await
        };
        return Err(match checked {
            // It was made sure of a moment ago.
            Ok(AssetsBucket::Missing) => StackError::Vanished {
                what: format!("the assets bucket {bucket}"),
                step: "the function archive was uploaded".to_owned(),
            },
            // Says more than the upload's own 403.
            Err(forbidden @ StackError::AssetsBucketForbidden { .. }) => forbidden,
            Ok(AssetsBucket::Ours) | Err(_) => {
                aws_error(format!("upload s3://{bucket}/{key}"), err)
            }
        });
    }
    Ok(UploadedArtifact {
        bucket,
        key,
        uploaded: true,
    })
}

/// Removes every archive uploaded for `stack`; returns how many there were.
pub(crate) async fn remove_artifacts(target: &Target, stack: &str) -> Result<usize, StackError> {
    let account = account_id(target).await?;
    let bucket = assets_bucket_name(&account, &target.region());
    if check_assets_bucket(&target.s3(), &bucket, &account).await? == AssetsBucket::Missing {
        return Ok(0);
    }
    // Listing and deleting carry the owner too: nothing is removed from a bucket someone else
    // owns, should it change hands between the check and the deletion.
    super::bucket::delete_versions(target, &bucket, Some(&format!("{stack}/")), Some(&account))
        .await
}
