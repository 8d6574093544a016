//! The assets bucket: where function archives are uploaded for CloudFormation to read.

use std::path::Path;

use aws_sdk_s3::error::ProvideErrorMetadata;
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

/// Whether `bucket` exists; `true` when that cannot be told (the caller's own error stands).
async fn bucket_exists(s3: &aws_sdk_s3::Client, bucket: &str) -> bool {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => true,
        Err(err) => err
            .raw_response()
            .is_none_or(|response| response.status().as_u16() != 404),
    }
}

/// Makes sure the assets bucket exists, encrypted and with all public access blocked.
async fn ensure_assets_bucket(
    target: &Target,
    bucket: &str,
    console: &mut dyn Console,
) -> Result<(), StackError> {
    let s3 = target.s3();
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(err)
            if err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(err) => return Err(aws_error(format!("check the assets bucket {bucket}"), err)),
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
        if err.code() != Some("BucketAlreadyOwnedByYou") {
            return Err(aws_error(format!("create the assets bucket {bucket}"), err));
        }
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
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|err| aws_error(format!("encrypt the assets bucket {bucket}"), err))?;
    s3.put_public_access_block()
        .bucket(bucket)
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
    ensure_assets_bucket(target, &bucket, console).await?;
    let key = format!("{stack}/{content_name}");
    let s3 = target.s3();
    match s3.head_object().bucket(&bucket).key(&key).send().await {
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
        .body(body)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await;
    if let Err(err) = uploaded {
        // A missing bucket may answer before the archive is sent and close the connection, so
        // the error can be a broken connection as well as NoSuchBucket: the bucket tells.
        let no_such_bucket =
            aws_sdk_s3::error::ProvideErrorMetadata::code(&err) == Some("NoSuchBucket");
        if no_such_bucket || !bucket_exists(&s3, &bucket).await {
            // It was made sure of a moment ago.
            return Err(StackError::Vanished {
                what: format!("the assets bucket {bucket}"),
                step: "the function archive was uploaded".to_owned(),
            });
        }
        return Err(aws_error(format!("upload s3://{bucket}/{key}"), err));
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
    let s3 = target.s3();
    match s3.head_bucket().bucket(&bucket).send().await {
        Ok(_) => {}
        Err(err)
            if err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404) =>
        {
            return Ok(0)
        }
        Err(err) => return Err(aws_error(format!("check the assets bucket {bucket}"), err)),
    }
    super::bucket::delete_all_versions(target, &bucket, Some(&format!("{stack}/"))).await
}
