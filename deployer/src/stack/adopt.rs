//! Adopting an existing table and bucket: what a deploy checks before anything changes, and what
//! a deployed stack's outputs say it adopted before.
//!
//! [`check_adoption`] decides which table and bucket a deploy attaches to ([`adoption_names`]:
//! the settings' `existing_table` and `existing_bucket`, checked against the `AdoptedTable` and
//! `AdoptedBucket` outputs of the deployed stack), then reads each from AWS and refuses what the
//! function cannot mirror, with the fix. Nothing here changes anything.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_dynamodb::types::{
    KeyType, ScalarAttributeType, SseType, StreamViewType, TableDescription,
};
use aws_sdk_s3::types::{ServerSideEncryption, ServerSideEncryptionConfiguration};
use usersync_function::config::{self, vars};

use super::assets::{account_id, head_owned_bucket, OwnedBucket};
use super::{aws_error, describe_stack, outputs_of, StackError};
use crate::console::Console;
use crate::settings::StackSettings;
use crate::target::Target;
use crate::template::{output, AdoptedBucket, AdoptedTable, Adoption};

/// What a stack can adopt instead of creating it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoptable {
    Table,
    Bucket,
}

impl Adoptable {
    /// The setting that names an existing one.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Table => "existing_table",
            Self::Bucket => "existing_bucket",
        }
    }

    /// What CloudFormation does to the stack's own one when it leaves the template.
    fn loss(self) -> &'static str {
        match self {
            Self::Table => "CloudFormation would delete it with its items",
            Self::Bucket => {
                "CloudFormation would delete it if empty, or fail to and leave it behind outside \
                 the stack"
            }
        }
    }

    /// What it holds.
    fn contents(self) -> &'static str {
        match self {
            Self::Table => "items",
            Self::Bucket => "objects",
        }
    }
}

impl fmt::Display for Adoptable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Table => "table",
            Self::Bucket => "bucket",
        })
    }
}

/// Why a table or bucket cannot be adopted; every message names it and the fix.
#[derive(Debug, thiserror::Error)]
pub enum AdoptionError {
    /// Reading the stack, the table or the bucket failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(
        "table {table} does not exist in {region}: create it there, or name an existing table of \
         {region} in existing_table (usersync.toml) or --existing-table (deploy with --region to \
         reach a table of another region)"
    )]
    TableNotFound { table: String, region: String },
    #[error(
        "table {table} has a composite primary key ({hash} HASH, {range} RANGE): the function \
         writes one object per {hash}, so several items would map to one object; adopt a table \
         whose key is a single string HASH key"
    )]
    CompositeKey {
        table: String,
        hash: String,
        range: String,
    },
    #[error(
        "table {table} reports no HASH key in its key schema: adopt a table whose key is a \
         single string HASH key"
    )]
    NoHashKey { table: String },
    #[error(
        "table {table}'s hash key {attribute} is of type {attribute_type}, not a string (S): the \
         function names each user's object by that key's text; adopt a table whose HASH key is \
         a string"
    )]
    HashKeyNotString {
        table: String,
        attribute: String,
        attribute_type: String,
    },
    #[error(
        "table {table}'s hash key {attribute:?} cannot be the function's {}: {reason}; adopt a \
         table whose HASH key has a usable name",
        vars::KEY_ATTRIBUTE
    )]
    HashKeyRefused {
        table: String,
        attribute: String,
        reason: &'static str,
    },
    #[error(
        "table {table} has no stream, which is what drives the function: enable one with `aws \
         dynamodb update-table --table-name {table} --stream-specification \
         StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES` (in {region}), then deploy again"
    )]
    NoStream { table: String, region: String },
    #[error(
        "table {table}'s stream has view type {view_type}, whose records carry no new image of \
         the item to mirror: disable it with `aws dynamodb update-table --table-name {table} \
         --stream-specification StreamEnabled=false`, then enable it with `aws dynamodb \
         update-table --table-name {table} --stream-specification \
         StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES` (in {region}), then deploy again; \
         changing the view type gives the table a NEW stream with a new ARN (the old stream's \
         unread records stay only on the old one, for 24 hours)"
    )]
    WrongViewType {
        table: String,
        view_type: String,
        region: String,
    },
    #[error(
        "table {table} reports its stream enabled but no LatestStreamArn: wait until the table \
         and its stream are active (`aws dynamodb describe-table --table-name {table}`), then \
         deploy again"
    )]
    NoStreamArn { table: String },
    #[error(
        "bucket {bucket} does not exist: create it in {region}, or name an existing bucket in \
         existing_bucket (usersync.toml) or --existing-bucket"
    )]
    BucketNotFound { bucket: String, region: String },
    #[error(
        "bucket {bucket} answered 403 Forbidden to a request that expects account {account} to \
         own it: either another AWS account owns it (adopt only a bucket of account {account}), \
         or these credentials lack s3:ListBucket on it (grant s3:ListBucket on \
         arn:aws:s3:::{bucket})"
    )]
    BucketForbidden { bucket: String, account: String },
    #[error(
        "bucket {bucket} is in {bucket_region}, but the stack is deployed to {region}: the \
         function writes to a bucket of its own region; deploy with --region {bucket_region}, or \
         adopt a bucket in {region}"
    )]
    BucketInOtherRegion {
        bucket: String,
        bucket_region: String,
        region: String,
    },
    #[error(
        "bucket {bucket}'s default encryption names its KMS key by the alias {alias}, and an IAM \
         policy can grant kms:GenerateDataKey only on the key's ARN: put the key ARN in the \
         bucket's default encryption (`aws kms describe-key --key-id {alias} --query \
         KeyMetadata.Arn` prints it; `aws s3api put-bucket-encryption --bucket {bucket}` sets \
         it as KMSMasterKeyID), then deploy again"
    )]
    BucketKeyAlias { bucket: String, alias: String },
    #[error(
        "stack {stack} adopted {kind} {adopted}, but {} names {kind} {named}: a stack keeps the \
         {kind} it adopted; name {adopted} (or nothing) in {}, or tear the stack down first \
         (`cargo xtask teardown` leaves {adopted} as it is) and deploy again to adopt {named}",
        .kind.setting(),
        .kind.setting()
    )]
    AdoptedAnother {
        stack: String,
        kind: Adoptable,
        adopted: String,
        named: String,
    },
    #[error(
        "stack {stack} created its own {kind} {own}, and {} names the existing {kind} {named}: \
         adopting it would remove {own} from the stack, and {}; tear the stack down first (`cargo \
         xtask teardown`), then deploy with {}; to keep {own} and its {} through the teardown, \
         first deploy once with retain_data_on_teardown = true and without {}",
        .kind.setting(),
        .kind.loss(),
        .kind.setting(),
        .kind.contents(),
        .kind.setting()
    )]
    OwnsItsOwn {
        stack: String,
        kind: Adoptable,
        own: String,
        named: String,
    },
}

/// The names of the existing table and bucket a stack adopted (or a deploy adopts): serialised
/// as `adopted_table` and `adopted_bucket`, `null` when not adopted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdoptedNames {
    #[serde(rename = "adopted_table")]
    pub table: Option<String>,
    #[serde(rename = "adopted_bucket")]
    pub bucket: Option<String>,
}

impl AdoptedNames {
    /// Whether nothing was adopted.
    pub fn is_empty(&self) -> bool {
        self.table.is_none() && self.bucket.is_none()
    }

    /// What a teardown leaves because it was adopted, as one line: `left: table X (its items),
    /// bucket Y (its objects)`; `None` when nothing was adopted.
    pub fn left(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(table) = &self.table {
            parts.push(format!("table {table} (its items)"));
        }
        if let Some(bucket) = &self.bucket {
            parts.push(format!("bucket {bucket} (its objects)"));
        }
        (!parts.is_empty()).then(|| format!("left: {}", parts.join(", ")))
    }
}

impl From<&Adoption> for AdoptedNames {
    fn from(adoption: &Adoption) -> Self {
        Self {
            table: adoption.table.as_ref().map(|t| t.name.clone()),
            bucket: adoption.bucket.as_ref().map(|b| b.name.clone()),
        }
    }
}

/// What a deployed stack adopted, from its outputs (`AdoptedTable`, `AdoptedBucket`).
pub fn adopted_names(outputs: &BTreeMap<String, String>) -> AdoptedNames {
    AdoptedNames {
        table: outputs.get(output::ADOPTED_TABLE).cloned(),
        bucket: outputs.get(output::ADOPTED_BUCKET).cloned(),
    }
}

/// Which existing table and bucket a deploy of `settings` adopts, given the outputs of the
/// stack as deployed (empty when there is none). Per kind: a stack keeps what it adopted when
/// the settings name nothing (said through `console`); the settings may not name another one
/// than the stack adopted, nor one instead of the stack's own (whose removal from the template
/// would delete it).
pub fn adoption_names(
    settings: &StackSettings,
    deployed: &BTreeMap<String, String>,
    console: &mut dyn Console,
) -> Result<AdoptedNames, AdoptionError> {
    let adopted = adopted_names(deployed);
    let stack = settings.stack_name.as_str();
    let table = choose(
        stack,
        Adoptable::Table,
        settings.existing_table.as_deref(),
        adopted.table.as_deref(),
        deployed.get(output::TABLE_NAME).map(String::as_str),
        console,
    )?;
    let bucket = choose(
        stack,
        Adoptable::Bucket,
        settings.existing_bucket.as_deref(),
        adopted.bucket.as_deref(),
        deployed.get(output::BUCKET_NAME).map(String::as_str),
        console,
    )?;
    Ok(AdoptedNames { table, bucket })
}

/// One kind's part of [`adoption_names`]: `named` by the settings, `adopted` by the stack before,
/// the stack's `current` one (its own when it adopted none).
fn choose(
    stack: &str,
    kind: Adoptable,
    named: Option<&str>,
    adopted: Option<&str>,
    current: Option<&str>,
    console: &mut dyn Console,
) -> Result<Option<String>, AdoptionError> {
    match (named, adopted, current) {
        (None, None, _) => Ok(None),
        (None, Some(adopted), _) => {
            console.line(&format!(
                "stack {stack} adopted {kind} {adopted}: keeping it ({} is not set)",
                kind.setting()
            ));
            Ok(Some(adopted.to_owned()))
        }
        (Some(named), Some(adopted), _) if named == adopted => Ok(Some(named.to_owned())),
        (Some(named), Some(adopted), _) => Err(AdoptionError::AdoptedAnother {
            stack: stack.to_owned(),
            kind,
            adopted: adopted.to_owned(),
            named: named.to_owned(),
        }),
        // The stack's own: its output names it (a stack whose create failed has no outputs,
        // and nothing left to delete).
        (Some(named), None, Some(own)) => Err(AdoptionError::OwnsItsOwn {
            stack: stack.to_owned(),
            kind,
            own: own.to_owned(),
            named: named.to_owned(),
        }),
        (Some(named), None, None) => Ok(Some(named.to_owned())),
    }
}

/// Decides what a deploy of `settings` adopts ([`adoption_names`], reading the deployed stack's
/// outputs) and checks each in the target's region: the table ([`check_table`]) and the bucket
/// ([`check_bucket`], owned by the account STS names). Only reads; says what it adopts through
/// `console`.
pub async fn check_adoption(
    target: &Target,
    settings: &StackSettings,
    console: &mut dyn Console,
) -> Result<Adoption, AdoptionError> {
    let deployed = describe_stack(target, &settings.stack_name)
        .await?
        .map(|stack| outputs_of(&stack))
        .unwrap_or_default();
    let names = adoption_names(settings, &deployed, console)?;
    if names.is_empty() {
        return Ok(Adoption::default());
    }
    let region = target.region();
    let table = match &names.table {
        Some(name) => {
            let table = check_table(&target.dynamodb(), name, &region).await?;
            let encryption = table
                .kms_key_arn
                .as_deref()
                .map_or_else(String::new, |key| format!(", encrypted with KMS key {key}"));
            console.line(&format!(
                "adopting table {}: hash key {}, stream {}{encryption}",
                table.name, table.key_attribute, table.stream_arn
            ));
            Some(table)
        }
        None => None,
    };
    let bucket = match &names.bucket {
        Some(name) => {
            let account = account_id(target).await?;
            let bucket = check_bucket(&target.s3(), name, &account, &region).await?;
            let encryption = bucket
                .kms_key_arn
                .as_deref()
                .map_or_else(String::new, |key| {
                    format!(", default encryption with KMS key {key}")
                });
            console.line(&format!("adopting bucket {}{encryption}", bucket.name));
            Some(bucket)
        }
        None => None,
    };
    Ok(Adoption { table, bucket })
}

/// Reads table `name` (DescribeTable) and checks that the function can mirror it: a single
/// string HASH key, a stream with new images, and the KMS key it is encrypted with, if any.
pub async fn check_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    region: &str,
) -> Result<AdoptedTable, AdoptionError> {
    let not_found = || AdoptionError::TableNotFound {
        table: name.to_owned(),
        region: region.to_owned(),
    };
    let described = match dynamodb.describe_table().table_name(name).send().await {
        Ok(described) => described,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Err(not_found())
        }
        Err(err) => return Err(aws_error(format!("describe table {name} in {region}"), err).into()),
    };
    let description = described.table().ok_or_else(not_found)?;
    adopted_table(name, region, description)
}

/// What [`check_table`] makes of a table's description.
fn adopted_table(
    name: &str,
    region: &str,
    description: &TableDescription,
) -> Result<AdoptedTable, AdoptionError> {
    let table = name.to_owned();
    let key_of = |wanted: &KeyType| {
        description
            .key_schema()
            .iter()
            .find(|k| k.key_type() == wanted)
            .map(|k| k.attribute_name().to_owned())
    };
    let Some(hash) = key_of(&KeyType::Hash) else {
        return Err(AdoptionError::NoHashKey { table });
    };
    if let Some(range) = key_of(&KeyType::Range) {
        return Err(AdoptionError::CompositeKey { table, hash, range });
    }
    let hash_type = description
        .attribute_definitions()
        .iter()
        .find(|d| d.attribute_name() == hash)
        .map(|d| d.attribute_type().clone());
    if hash_type != Some(ScalarAttributeType::S) {
        return Err(AdoptionError::HashKeyNotString {
            table,
            attribute: hash,
            attribute_type: hash_type.map_or_else(
                || "unknown (no attribute definition)".to_owned(),
                |t| t.as_str().to_owned(),
            ),
        });
    }
    // The function's own rule for its KEY_ATTRIBUTE.
    if let Err(reason) = config::check_key_attribute(&hash) {
        return Err(AdoptionError::HashKeyRefused {
            table,
            attribute: hash,
            reason,
        });
    }

    // StreamSpecification (StreamEnabled, StreamViewType) and LatestStreamArn, "the ARN that
    // uniquely identifies the latest stream for this table", of DescribeTable's TableDescription
    // (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TableDescription.html).
    // NEW_IMAGE and NEW_AND_OLD_IMAGES carry the item as it is after the change; KEYS_ONLY and
    // OLD_IMAGE do not
    // (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_StreamSpecification.html).
    let stream = description
        .stream_specification()
        .filter(|s| s.stream_enabled());
    let Some(stream) = stream else {
        return Err(AdoptionError::NoStream {
            table,
            region: region.to_owned(),
        });
    };
    match stream.stream_view_type() {
        Some(StreamViewType::NewAndOldImages | StreamViewType::NewImage) => {}
        // A view type cannot be changed in place: the stream is disabled, then enabled with the
        // new type, which makes a new stream; "When you modify the StreamViewType property,
        // DynamoDB creates a new stream", the old one deleted after its 24-hour retention
        // (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-dynamodb-table-streamspecification.html;
        // retention: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html).
        other => {
            return Err(AdoptionError::WrongViewType {
                table,
                view_type: other.map_or("none", StreamViewType::as_str).to_owned(),
                region: region.to_owned(),
            })
        }
    }
    let Some(stream_arn) = description.latest_stream_arn() else {
        return Err(AdoptionError::NoStreamArn { table });
    };

    // SSEType KMS is a key of KMS (the AWS managed aws/dynamodb key or a customer managed one);
    // without an SSEDescription the table uses an AWS owned key, which needs no permission
    // (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.usagenotes.html).
    let kms_key_arn = description
        .sse_description()
        .filter(|sse| sse.sse_type() == Some(&SseType::Kms))
        .and_then(|sse| sse.kms_master_key_arn())
        .map(str::to_owned);
    Ok(AdoptedTable {
        name: table,
        stream_arn: stream_arn.to_owned(),
        key_attribute: hash,
        kms_key_arn,
    })
}

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
    use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, SseDescription, StreamSpecification,
    };
    use aws_sdk_s3::operation::get_bucket_encryption::{
        GetBucketEncryptionError, GetBucketEncryptionOutput,
    };
    use aws_sdk_s3::operation::get_bucket_location::GetBucketLocationOutput;
    use aws_sdk_s3::operation::head_bucket::HeadBucketOutput;
    use aws_sdk_s3::types::{
        BucketLocationConstraint, ServerSideEncryptionByDefault, ServerSideEncryptionRule,
    };
    use aws_smithy_mocks::{
        create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use aws_smithy_types::retry::RetryConfig;

    use super::*;
    use crate::console::RecordingConsole;

    const ACCOUNT: &str = "123456789012";
    const REGION: &str = "eu-west-1";
    const TABLE: &str = "people";
    const BUCKET: &str = "people-mirror";
    const STREAM: &str =
        "arn:aws:dynamodb:eu-west-1:123456789012:table/people/stream/2024-05-01T00:00:00.000";
    const TABLE_KEY: &str =
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const KEY_ID: &str = "0987dcba-09fe-87dc-65ba-ab0987654321";

    fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
        rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::Sequential),
            |interceptor, rule| interceptor.with_rule(rule),
        )
    }

    /// A DynamoDB client answering with `rules`, in order.
    fn dynamodb(rules: &[&Rule]) -> aws_sdk_dynamodb::Client {
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
    fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
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

    fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    }

    fn attribute(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    }

    fn stream(view: StreamViewType) -> StreamSpecification {
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(view)
            .build()
            .unwrap()
    }

    /// A table keyed by a string `user_id` with a NEW_AND_OLD_IMAGES stream, AWS owned key.
    fn good_table() -> aws_sdk_dynamodb::types::builders::TableDescriptionBuilder {
        TableDescription::builder()
            .table_name(TABLE)
            .key_schema(key("user_id", KeyType::Hash))
            .attribute_definitions(attribute("user_id", ScalarAttributeType::S))
            .stream_specification(stream(StreamViewType::NewAndOldImages))
            .latest_stream_arn(STREAM)
    }

    fn refusal(description: TableDescription) -> String {
        adopted_table(TABLE, REGION, &description)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_string_hash_key_with_new_images_is_adopted() {
        for view in [StreamViewType::NewAndOldImages, StreamViewType::NewImage] {
            let description = good_table()
                .stream_specification(stream(view.clone()))
                .build();
            assert_eq!(
                adopted_table(TABLE, REGION, &description).unwrap(),
                AdoptedTable {
                    name: TABLE.to_owned(),
                    stream_arn: STREAM.to_owned(),
                    key_attribute: "user_id".to_owned(),
                    kms_key_arn: None,
                },
                "{view:?}"
            );
        }
    }

    #[test]
    fn a_kms_encrypted_table_names_its_key() {
        let description = good_table()
            .sse_description(
                SseDescription::builder()
                    .sse_type(SseType::Kms)
                    .kms_master_key_arn(TABLE_KEY)
                    .build(),
            )
            .build();
        let table = adopted_table(TABLE, REGION, &description).unwrap();
        assert_eq!(table.kms_key_arn.as_deref(), Some(TABLE_KEY));
        // AES256 (no KMS key) needs nothing.
        let description = good_table()
            .sse_description(SseDescription::builder().sse_type(SseType::Aes256).build())
            .build();
        assert_eq!(
            adopted_table(TABLE, REGION, &description)
                .unwrap()
                .kms_key_arn,
            None
        );
    }

    #[test]
    fn a_range_key_is_refused() {
        let message = refusal(
            good_table()
                .key_schema(key("created", KeyType::Range))
                .build(),
        );
        assert_eq!(
            message,
            "table people has a composite primary key (user_id HASH, created RANGE): the \
             function writes one object per user_id, so several items would map to one object; \
             adopt a table whose key is a single string HASH key"
        );
    }

    #[test]
    fn a_hash_key_that_is_not_a_string_is_refused() {
        let description = TableDescription::builder()
            .key_schema(key("id", KeyType::Hash))
            .attribute_definitions(attribute("id", ScalarAttributeType::N))
            .stream_specification(stream(StreamViewType::NewImage))
            .latest_stream_arn(STREAM)
            .build();
        assert_eq!(
            refusal(description),
            "table people's hash key id is of type N, not a string (S): the function names each \
             user's object by that key's text; adopt a table whose HASH key is a string"
        );
        let blank = TableDescription::builder()
            .key_schema(key(" ", KeyType::Hash))
            .attribute_definitions(attribute(" ", ScalarAttributeType::S))
            .build();
        let message = refusal(blank);
        assert!(
            message.contains(&format!("cannot be the function's {}", vars::KEY_ATTRIBUTE)),
            "{message}"
        );
        assert!(
            refusal(TableDescription::builder().build()).contains("reports no HASH key"),
            "no key schema"
        );
    }

    #[test]
    fn a_table_without_a_stream_is_refused_with_the_command_that_enables_one() {
        for description in [
            good_table()
                .set_stream_specification(None)
                .set_latest_stream_arn(None)
                .build(),
            good_table()
                .stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(false)
                        .build()
                        .unwrap(),
                )
                .build(),
        ] {
            let message = refusal(description);
            assert!(
                message.starts_with("table people has no stream"),
                "{message}"
            );
            assert!(
                message.contains(
                    "`aws dynamodb update-table --table-name people --stream-specification \
                     StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES`"
                ),
                "{message}"
            );
            assert!(message.contains("eu-west-1"), "{message}");
        }
    }

    #[test]
    fn a_stream_without_new_images_is_refused_with_both_commands_and_the_new_stream() {
        for view in [StreamViewType::KeysOnly, StreamViewType::OldImage] {
            let message = refusal(
                good_table()
                    .stream_specification(stream(view.clone()))
                    .build(),
            );
            assert!(
                message.starts_with(&format!(
                    "table people's stream has view type {}, whose records carry no new image",
                    view.as_str()
                )),
                "{message}"
            );
            let disable = message
                .find("`aws dynamodb update-table --table-name people --stream-specification StreamEnabled=false`")
                .expect("the command that disables the stream");
            let enable = message
                .find("`aws dynamodb update-table --table-name people --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES`")
                .expect("the command that enables it again");
            assert!(disable < enable, "{message}");
            assert!(message.contains("a NEW stream with a new ARN"), "{message}");
            assert!(message.contains("24 hours"), "{message}");
        }
        let message = refusal(good_table().set_latest_stream_arn(None).build());
        assert!(message.contains("no LatestStreamArn"), "{message}");
    }

    #[tokio::test]
    async fn check_table_describes_the_named_table() {
        let described = mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some(TABLE))
            .then_output(|| {
                DescribeTableOutput::builder()
                    .table(good_table().build())
                    .build()
            });
        let table = check_table(&dynamodb(&[&described]), TABLE, REGION)
            .await
            .unwrap();
        assert_eq!(table.stream_arn, STREAM);
        assert_eq!(described.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_missing_table_is_named_with_its_region_and_the_fix() {
        let missing = mock!(aws_sdk_dynamodb::Client::describe_table).then_error(|| {
            DescribeTableError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Requested resource not found: Table: people not found")
                    .build(),
            )
        });
        let err = check_table(&dynamodb(&[&missing]), TABLE, REGION)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table people does not exist in eu-west-1: create it there, or name an existing \
             table of eu-west-1 in existing_table (usersync.toml) or --existing-table (deploy \
             with --region to reach a table of another region)"
        );
    }

    #[tokio::test]
    async fn another_describe_table_failure_names_the_table() {
        let denied = mock!(aws_sdk_dynamodb::Client::describe_table).then_error(|| {
            DescribeTableError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: dynamodb:DescribeTable")
                    .build(),
            )
        });
        let err = check_table(&dynamodb(&[&denied]), TABLE, REGION)
            .await
            .unwrap_err();
        assert!(matches!(err, AdoptionError::Stack(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "failed to describe table people in eu-west-1: AccessDeniedException: not authorized \
             to perform: dynamodb:DescribeTable"
        );
    }

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

    fn settings(table: Option<&str>, bucket: Option<&str>) -> StackSettings {
        StackSettings {
            stack_name: "users".to_owned(),
            existing_table: table.map(str::to_owned),
            existing_bucket: bucket.map(str::to_owned),
            ..StackSettings::default()
        }
    }

    fn outputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_new_stack_adopts_what_the_settings_name() {
        let mut console = RecordingConsole::default();
        let names =
            adoption_names(&settings(Some(TABLE), None), &BTreeMap::new(), &mut console).unwrap();
        assert_eq!(
            names,
            AdoptedNames {
                table: Some(TABLE.to_owned()),
                bucket: None
            }
        );
        assert!(console.lines.is_empty());
        let names = adoption_names(&settings(None, None), &BTreeMap::new(), &mut console).unwrap();
        assert!(names.is_empty());
    }

    #[test]
    fn a_stack_keeps_what_it_adopted_when_the_settings_say_nothing() {
        let deployed = outputs(&[
            (output::TABLE_NAME, TABLE),
            (output::ADOPTED_TABLE, TABLE),
            (output::BUCKET_NAME, BUCKET),
            (output::ADOPTED_BUCKET, BUCKET),
        ]);
        let mut console = RecordingConsole::default();
        let names = adoption_names(&settings(None, None), &deployed, &mut console).unwrap();
        assert_eq!(
            names,
            AdoptedNames {
                table: Some(TABLE.to_owned()),
                bucket: Some(BUCKET.to_owned())
            }
        );
        assert_eq!(
            console.lines,
            [
                "stack users adopted table people: keeping it (existing_table is not set)",
                "stack users adopted bucket people-mirror: keeping it (existing_bucket is not set)",
            ]
        );
        // Naming the same ones again is the same.
        let mut console = RecordingConsole::default();
        let again = adoption_names(
            &settings(Some(TABLE), Some(BUCKET)),
            &deployed,
            &mut console,
        )
        .unwrap();
        assert_eq!(again, names);
        assert!(console.lines.is_empty());
    }

    #[test]
    fn naming_another_than_the_stack_adopted_is_refused_naming_both() {
        let deployed = outputs(&[(output::ADOPTED_TABLE, TABLE), (output::BUCKET_NAME, "own")]);
        let message = adoption_names(
            &settings(Some("others"), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "stack users adopted table people, but existing_table names table others: a stack \
             keeps the table it adopted; name people (or nothing) in existing_table, or tear the \
             stack down first (`cargo xtask teardown` leaves people as it is) and deploy again \
             to adopt others"
        );
    }

    #[test]
    fn adopting_instead_of_the_stack_s_own_is_refused_with_the_fix() {
        let deployed = outputs(&[
            (output::TABLE_NAME, "users-userstable-1"),
            (output::BUCKET_NAME, "users-databucket-1"),
        ]);
        let message = adoption_names(
            &settings(Some(TABLE), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "stack users created its own table users-userstable-1, and existing_table names the \
             existing table people: adopting it would remove users-userstable-1 from the stack, \
             and CloudFormation would delete it with its items; tear the stack down first \
             (`cargo xtask teardown`), then deploy with existing_table; to keep \
             users-userstable-1 and its items through the teardown, first deploy once with \
             retain_data_on_teardown = true and without existing_table"
        );
        let message = adoption_names(
            &settings(None, Some(BUCKET)),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with(
                "stack users created its own bucket users-databucket-1, and existing_bucket names \
                 the existing bucket people-mirror"
            ),
            "{message}"
        );
        // The stack's own, named as if it were an existing one, is its own all the same.
        assert!(adoption_names(
            &settings(Some("users-userstable-1"), None),
            &deployed,
            &mut RecordingConsole::default(),
        )
        .is_err());
    }

    #[test]
    fn adopted_names_are_read_from_the_outputs_and_listed_as_left() {
        let names = adopted_names(&outputs(&[
            (output::ADOPTED_TABLE, TABLE),
            (output::ADOPTED_BUCKET, BUCKET),
            (output::TABLE_NAME, TABLE),
        ]));
        assert_eq!(
            names.left().as_deref(),
            Some("left: table people (its items), bucket people-mirror (its objects)")
        );
        assert_eq!(
            serde_json::to_value(&names).unwrap(),
            serde_json::json!({ "adopted_table": TABLE, "adopted_bucket": BUCKET })
        );
        let none = adopted_names(&outputs(&[(output::TABLE_NAME, TABLE)]));
        assert!(none.is_empty());
        assert_eq!(none.left(), None);
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({ "adopted_table": null, "adopted_bucket": null })
        );
    }
}
