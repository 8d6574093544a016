//! Checking an existing bucket before a stack adopts it: [`check_bucket`] makes sure the account
//! owns it and it is in the stack's region, and finds the KMS key ARN its default encryption
//! needs granted.

use aws_sdk_s3::types::{ServerSideEncryption, ServerSideEncryptionConfiguration};

use super::AdoptionError;
use crate::stack::assets::{head_owned_bucket, OwnedBucket};
use crate::stack::aws_error;
use crate::template::AdoptedBucket;

/// Checks bucket `name`: that it exists and `account` owns it (HeadBucket with
/// `ExpectedBucketOwner`, as for the assets bucket), that it is in `region`
/// (GetBucketLocation), and which KMS key its default encryption uses (GetBucketEncryption).
pub async fn check_bucket(
    s3: &aws_sdk_s3::Client,
    name: &str,
    account: &str,
    region: &str,
) -> Result<AdoptedBucket, AdoptionError> {
    let bucket = name.to_owned();
    match head_owned_bucket(s3, name, account).await {
        Ok(OwnedBucket::Ours) => {}
        Ok(OwnedBucket::Missing) => {
            return Err(AdoptionError::BucketNotFound {
                bucket,
                region: region.to_owned(),
            })
        }
        Ok(OwnedBucket::Forbidden) => {
            return Err(AdoptionError::BucketForbidden {
                bucket,
                account: account.to_owned(),
            })
        }
        Err(err) => {
            // A bucket of another region answers HeadBucket with a redirect that names its
            // region in x-amz-bucket-region
            // (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html).
            let elsewhere = err
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .filter(|found| *found != region)
                .map(str::to_owned);
            return Err(match elsewhere {
                Some(bucket_region) => AdoptionError::BucketInOtherRegion {
                    bucket,
                    bucket_region,
                    region: region.to_owned(),
                },
                None => aws_error(format!("check bucket {name}"), err).into(),
            });
        }
    }

    let location = s3
        .get_bucket_location()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .map_err(|err| aws_error(format!("read the region of bucket {name}"), err))?;
    let bucket_region = bucket_region(location.location_constraint().map(|c| c.as_str()));
    if bucket_region != region {
        return Err(AdoptionError::BucketInOtherRegion {
            bucket,
            bucket_region,
            region: region.to_owned(),
        });
    }

    let encryption = match s3
        .get_bucket_encryption()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(output) => output.server_side_encryption_configuration().cloned(),
        // No default encryption configured
        // (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketEncryption.html).
        Err(err)
            if aws_sdk_s3::error::ProvideErrorMetadata::code(&err)
                == Some("ServerSideEncryptionConfigurationNotFoundError") =>
        {
            None
        }
        Err(err) => {
            return Err(
                aws_error(format!("read the default encryption of bucket {name}"), err).into(),
            )
        }
    };
    let kms_key_arn = bucket_key_arn(name, region, account, encryption.as_ref())?;
    Ok(AdoptedBucket {
        name: bucket,
        kms_key_arn,
    })
}

/// The region of a bucket from GetBucketLocation's `LocationConstraint`: "Buckets in Region
/// us-east-1 have a LocationConstraint of null. Buckets with a LocationConstraint of EU reside in
/// eu-west-1." (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html); an
/// empty one is read as null.
fn bucket_region(constraint: Option<&str>) -> String {
    match constraint {
        None | Some("") => "us-east-1",
        Some("EU") => "eu-west-1",
        Some(region) => region,
    }
    .to_owned()
}

/// The KMS key the function needs `kms:GenerateDataKey` on to write into a bucket whose default
/// encryption is `encryption`: `None` for SSE-S3, for none, and for SSE-KMS without a key id
/// (the AWS managed aws/s3 key, whose key policy lets the account's principals use it through
/// S3). `KMSMasterKeyID` may be a key id, a key ARN or an alias, and "If you use a KMS key alias
/// instead, then KMS resolves the key within the requester's account"
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ServerSideEncryptionByDefault.html): a
/// key ARN is taken as it is, a bare key id made the ARN of that key in `region` and `account`
/// (the bucket's), and an alias refused, since IAM grants on a key's ARN.
fn bucket_key_arn(
    bucket: &str,
    region: &str,
    account: &str,
    encryption: Option<&ServerSideEncryptionConfiguration>,
) -> Result<Option<String>, AdoptionError> {
    let Some(default) = encryption
        .into_iter()
        .flat_map(ServerSideEncryptionConfiguration::rules)
        .find_map(|rule| rule.apply_server_side_encryption_by_default())
    else {
        return Ok(None);
    };
    let kms = matches!(
        default.sse_algorithm(),
        ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse
    );
    let Some(key) = default
        .kms_master_key_id()
        .map(str::trim)
        .filter(|k| kms && !k.is_empty())
    else {
        return Ok(None);
    };
    let resource = key
        .strip_prefix("arn:")
        .and_then(|rest| rest.splitn(5, ':').nth(4));
    match resource {
        Some(resource) if resource.starts_with("key/") => Ok(Some(key.to_owned())),
        Some(_) => Err(AdoptionError::BucketKeyAlias {
            bucket: bucket.to_owned(),
            alias: key.to_owned(),
        }),
        None if key.starts_with("alias/") => Err(AdoptionError::BucketKeyAlias {
            bucket: bucket.to_owned(),
            alias: key.to_owned(),
        }),
        None => Ok(Some(format!(
            "arn:${{AWS::Partition}}:kms:{region}:{account}:key/{key}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::get_bucket_encryption::{
        GetBucketEncryptionError, GetBucketEncryptionOutput,
    };
    use aws_sdk_s3::operation::get_bucket_location::GetBucketLocationOutput;
    use aws_sdk_s3::operation::head_bucket::HeadBucketOutput;
    use aws_sdk_s3::types::{
        BucketLocationConstraint, ServerSideEncryptionByDefault, ServerSideEncryptionRule,
    };
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;
    use crate::stack::adopt::test_support::{s3, BUCKET, REGION, TABLE_KEY};

    const ACCOUNT: &str = "123456789012";
    const KEY_ID: &str = "0987dcba-09fe-87dc-65ba-ab0987654321";

    fn head_ok() -> Rule {
        mock!(aws_sdk_s3::Client::head_bucket)
            .match_requests(|r| {
                r.bucket() == Some(BUCKET) && r.expected_bucket_owner() == Some(ACCOUNT)
            })
            .then_output(|| HeadBucketOutput::builder().build())
    }

    fn head_status(status: u16, region: Option<&'static str>) -> Rule {
        mock!(aws_sdk_s3::Client::head_bucket).then_http_response(move || {
            let mut response = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            if let Some(region) = region {
                response.headers_mut().insert("x-amz-bucket-region", region);
            }
            response
        })
    }

    fn located(constraint: Option<&'static str>) -> Rule {
        mock!(aws_sdk_s3::Client::get_bucket_location)
            .match_requests(|r| {
                r.bucket() == Some(BUCKET) && r.expected_bucket_owner() == Some(ACCOUNT)
            })
            .then_output(move || {
                GetBucketLocationOutput::builder()
                    .set_location_constraint(constraint.map(BucketLocationConstraint::from))
                    .build()
            })
    }

    fn encryption(
        algorithm: ServerSideEncryption,
        key: Option<&str>,
    ) -> ServerSideEncryptionConfiguration {
        ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(
                        ServerSideEncryptionByDefault::builder()
                            .sse_algorithm(algorithm)
                            .set_kms_master_key_id(key.map(str::to_owned))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn encrypted(algorithm: ServerSideEncryption, key: Option<&'static str>) -> Rule {
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .match_requests(|r| {
                r.bucket() == Some(BUCKET) && r.expected_bucket_owner() == Some(ACCOUNT)
            })
            .then_output(move || {
                GetBucketEncryptionOutput::builder()
                    .server_side_encryption_configuration(encryption(algorithm.clone(), key))
                    .build()
            })
    }

    #[tokio::test]
    async fn a_bucket_of_the_account_and_region_is_adopted_after_three_owned_reads() {
        let (head, location, sse) = (
            head_ok(),
            located(Some(REGION)),
            encrypted(ServerSideEncryption::Aes256, None),
        );
        let bucket = check_bucket(&s3(&[&head, &location, &sse]), BUCKET, ACCOUNT, REGION)
            .await
            .unwrap();
        assert_eq!(
            bucket,
            AdoptedBucket {
                name: BUCKET.to_owned(),
                kms_key_arn: None
            }
        );
        for rule in [&head, &location, &sse] {
            assert_eq!(rule.num_calls(), 1);
        }
    }

    #[tokio::test]
    async fn a_bucket_s_kms_key_is_granted_by_arn() {
        let cases = [
            // A key ARN as it is.
            (Some(TABLE_KEY), Some(TABLE_KEY.to_owned())),
            // A bare key id: the key of the bucket's account and region.
            (
                Some(KEY_ID),
                Some(format!(
                    "arn:${{AWS::Partition}}:kms:eu-west-1:123456789012:key/{KEY_ID}"
                )),
            ),
            // aws:kms without a key: the AWS managed aws/s3 key, nothing to grant.
            (None, None),
        ];
        for (key, expected) in cases {
            let (head, location, sse) = (
                head_ok(),
                located(Some(REGION)),
                encrypted(ServerSideEncryption::AwsKms, key),
            );
            let bucket = check_bucket(&s3(&[&head, &location, &sse]), BUCKET, ACCOUNT, REGION)
                .await
                .unwrap();
            assert_eq!(bucket.kms_key_arn, expected, "{key:?}");
        }
    }

    #[test]
    fn an_aliased_bucket_key_is_refused_with_the_fix() {
        for alias in [
            "alias/people",
            "arn:aws:kms:eu-west-1:123456789012:alias/people",
        ] {
            let config = encryption(ServerSideEncryption::AwsKms, Some(alias));
            let message = bucket_key_arn(BUCKET, REGION, ACCOUNT, Some(&config))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!(
                    "bucket people-mirror's default encryption names its KMS key by the alias {alias}"
                )),
                "{message}"
            );
            assert!(message.contains("put the key ARN in the bucket's default encryption"));
            assert!(message.contains(&format!("aws kms describe-key --key-id {alias}")));
        }
        // DSSE-KMS is a KMS key too.
        let config = encryption(ServerSideEncryption::AwsKmsDsse, Some(TABLE_KEY));
        assert_eq!(
            bucket_key_arn(BUCKET, REGION, ACCOUNT, Some(&config)).unwrap(),
            Some(TABLE_KEY.to_owned())
        );
        // No default encryption, or SSE-S3: nothing to grant.
        assert_eq!(bucket_key_arn(BUCKET, REGION, ACCOUNT, None).unwrap(), None);
    }

    #[tokio::test]
    async fn a_bucket_without_default_encryption_needs_no_key() {
        let none = mock!(aws_sdk_s3::Client::get_bucket_encryption).then_error(|| {
            GetBucketEncryptionError::generic(
                ErrorMetadata::builder()
                    .code("ServerSideEncryptionConfigurationNotFoundError")
                    .message("The server side encryption configuration was not found")
                    .build(),
            )
        });
        let (head, location) = (head_ok(), located(Some(REGION)));
        let bucket = check_bucket(&s3(&[&head, &location, &none]), BUCKET, ACCOUNT, REGION)
            .await
            .unwrap();
        assert_eq!(bucket.kms_key_arn, None);
    }

    #[test]
    fn location_constraints_read_as_regions() {
        assert_eq!(bucket_region(None), "us-east-1");
        assert_eq!(bucket_region(Some("")), "us-east-1");
        assert_eq!(bucket_region(Some("EU")), "eu-west-1");
        assert_eq!(bucket_region(Some("ap-south-2")), "ap-south-2");
    }

    #[tokio::test]
    async fn a_null_location_constraint_is_us_east_1() {
        let (head, location, sse) = (
            head_ok(),
            located(None),
            encrypted(ServerSideEncryption::Aes256, None),
        );
        check_bucket(&s3(&[&head, &location, &sse]), BUCKET, ACCOUNT, "us-east-1")
            .await
            .unwrap();
        let (head, location) = (head_ok(), located(None));
        let message = check_bucket(&s3(&[&head, &location]), BUCKET, ACCOUNT, REGION)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "bucket people-mirror is in us-east-1, but the stack is deployed to eu-west-1: the \
             function writes to a bucket of its own region; deploy with --region us-east-1, or \
             adopt a bucket in eu-west-1"
        );
    }

    #[tokio::test]
    async fn an_eu_bucket_is_in_eu_west_1() {
        let (head, location, sse) = (
            head_ok(),
            located(Some("EU")),
            encrypted(ServerSideEncryption::Aes256, None),
        );
        check_bucket(&s3(&[&head, &location, &sse]), BUCKET, ACCOUNT, REGION)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn head_bucket_refusals_are_named() {
        let message = |rule: Rule, region: &'static str| async move {
            check_bucket(&s3(&[&rule]), BUCKET, ACCOUNT, region)
                .await
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(head_status(404, None), REGION).await,
            "bucket people-mirror does not exist: create it in eu-west-1, or name an existing \
             bucket in existing_bucket (usersync.toml) or --existing-bucket"
        );
        let forbidden = message(head_status(403, None), REGION).await;
        assert!(
            forbidden.starts_with(
                "bucket people-mirror answered 403 Forbidden to a request that expects account \
                 123456789012 to own it: either another AWS account owns it"
            ),
            "{forbidden}"
        );
        assert!(
            forbidden.contains("or these credentials lack s3:ListBucket on it"),
            "{forbidden}"
        );
        assert!(message(head_status(301, Some("ap-southeast-2")), REGION)
            .await
            .starts_with(
                "bucket people-mirror is in ap-southeast-2, but the stack is deployed to eu-west-1"
            ));
    }
}
