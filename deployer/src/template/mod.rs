//! The CloudFormation template of a usersync stack: one template for AWS and emulators alike.
//!
//! [`synthesize`] is a pure function of the settings and the artifact location, and every JSON
//! object in it has its keys sorted, so the same inputs always give the same bytes and a deploy
//! with nothing changed finds nothing to change. [`synthesize_adopting`] does the same for a stack
//! that attaches to a table or bucket that exists already ([`Adoption`], checked by
//! `stack::check_adoption`): the template then has no resource for it, names it literally, and
//! says so in the outputs [`output::ADOPTED_TABLE`] and [`output::ADOPTED_BUCKET`].
//!
//! Physical names are left to CloudFormation except the function's, `<stack name>-mirror`:
//! its log group must be named `/aws/lambda/<function name>` before the function exists, and
//! deriving both from the stack name (rather than a `Ref` between them) avoids a circular
//! reference. The alarms are named `<stack name>-<suffix>` ([`ALARMS`]) and the dashboard after
//! the stack, so that an operator finds them by the stack's name.
//!
//! Every stack, adopting or not, watches itself: four alarms (the `alarms` module), a
//! notification topic when `alarm_email` asks for one, and a dashboard (`dashboard`).

mod alarms;
mod dashboard;

use serde_json::{json, Map, Value};
use usersync_function::config::vars;

use crate::settings::{ArtifactLocation, DeleteScope, StackSettings};

pub use crate::settings::FUNCTION_NAME_SUFFIX;
pub use alarms::{alarm_name, lag_threshold_ms, ALARMS};

/// Logical IDs of the template's resources; use these instead of string literals.
pub mod logical_id {
    /// The users table (`AWS::DynamoDB::Table`) whose stream drives the function.
    pub const USERS_TABLE: &str = "UsersTable";
    /// The bucket the function mirrors users into (`AWS::S3::Bucket`).
    pub const DATA_BUCKET: &str = "DataBucket";
    /// The data bucket's policy denying requests without TLS (`AWS::S3::BucketPolicy`).
    pub const DATA_BUCKET_POLICY: &str = "DataBucketPolicy";
    /// The mapping's on-failure destination (`AWS::SQS::Queue`).
    pub const FAILURE_QUEUE: &str = "FailureQueue";
    /// The function's log group (`AWS::Logs::LogGroup`).
    pub const FUNCTION_LOG_GROUP: &str = "FunctionLogGroup";
    /// The function's execution role (`AWS::IAM::Role`).
    pub const FUNCTION_ROLE: &str = "FunctionRole";
    /// The mirror function (`AWS::Lambda::Function`).
    pub const MIRROR_FUNCTION: &str = "MirrorFunction";
    /// The stream-to-function mapping (`AWS::Lambda::EventSourceMapping`).
    pub const EVENT_SOURCE_MAPPING: &str = "EventSourceMapping";
    /// The mapping's `IteratorAge` above the threshold (`AWS::CloudWatch::Alarm`).
    pub const ITERATOR_AGE_ALARM: &str = "IteratorAgeAlarm";
    /// Messages in the failure queue (`AWS::CloudWatch::Alarm`).
    pub const FAILURE_QUEUE_ALARM: &str = "FailureQueueAlarm";
    /// The function's `Errors` (`AWS::CloudWatch::Alarm`).
    pub const ERRORS_ALARM: &str = "ErrorsAlarm";
    /// The function's own `LagMs` above the threshold (`AWS::CloudWatch::Alarm`).
    pub const LAG_ALARM: &str = "LagAlarm";
    /// The graphs of the four signals (`AWS::CloudWatch::Dashboard`).
    pub const DASHBOARD: &str = "Dashboard";
    /// The topic the alarms notify, with `alarm_email` (`AWS::SNS::Topic`).
    pub const ALARM_TOPIC: &str = "AlarmTopic";
    /// The key the alarm topic is encrypted with, with `alarm_email` (`AWS::KMS::Key`).
    pub const ALARM_TOPIC_KEY: &str = "AlarmTopicKey";
    /// The `alarm_email` address's subscription to the topic (`AWS::SNS::Subscription`).
    pub const ALARM_EMAIL_SUBSCRIPTION: &str = "AlarmEmailSubscription";

    /// Every logical ID in the template of a stack that adopts nothing, with the default
    /// settings; an adopted table leaves out [`USERS_TABLE`], an adopted bucket
    /// [`DATA_BUCKET`] and [`DATA_BUCKET_POLICY`], and `alarm_email` adds [`NOTIFICATION`].
    pub const ALL: [&str; 13] = [
        USERS_TABLE,
        DATA_BUCKET,
        DATA_BUCKET_POLICY,
        FAILURE_QUEUE,
        FUNCTION_LOG_GROUP,
        FUNCTION_ROLE,
        MIRROR_FUNCTION,
        EVENT_SOURCE_MAPPING,
        ITERATOR_AGE_ALARM,
        FAILURE_QUEUE_ALARM,
        ERRORS_ALARM,
        LAG_ALARM,
        DASHBOARD,
    ];

    /// The resources `alarm_email` adds: the topic, its key and the subscription.
    pub const NOTIFICATION: [&str; 3] = [ALARM_TOPIC_KEY, ALARM_TOPIC, ALARM_EMAIL_SUBSCRIPTION];
}

/// Names of the template's outputs; use these instead of string literals.
pub mod output {
    /// The users table's name.
    pub const TABLE_NAME: &str = "TableName";
    /// The users table's stream ARN.
    pub const STREAM_ARN: &str = "StreamArn";
    /// The data bucket's name.
    pub const BUCKET_NAME: &str = "BucketName";
    /// The mirror function's name.
    pub const FUNCTION_NAME: &str = "FunctionName";
    /// The failure queue's URL.
    pub const FAILURE_QUEUE_URL: &str = "FailureQueueUrl";
    /// The failure queue's ARN.
    pub const FAILURE_QUEUE_ARN: &str = "FailureQueueArn";
    /// The event source mapping's UUID.
    pub const EVENT_SOURCE_MAPPING_ID: &str = "EventSourceMappingId";

    /// The adopted table's name; present only when the stack adopted an existing table.
    pub const ADOPTED_TABLE: &str = "AdoptedTable";
    /// The adopted bucket's name; present only when the stack adopted an existing bucket.
    pub const ADOPTED_BUCKET: &str = "AdoptedBucket";

    /// Every output name that every template has.
    pub const ALL: [&str; 7] = [
        TABLE_NAME,
        STREAM_ARN,
        BUCKET_NAME,
        FUNCTION_NAME,
        FAILURE_QUEUE_URL,
        FAILURE_QUEUE_ARN,
        EVENT_SOURCE_MAPPING_ID,
    ];

    /// The outputs a template has only when the stack adopts the resource they name.
    pub const ADOPTED: [&str; 2] = [ADOPTED_TABLE, ADOPTED_BUCKET];
}

/// The checkov findings this stack accepts, as (logical ID, check ID, reason).
///
/// [`synthesize`] writes each into its resource's `Metadata.checkov.skip`, where checkov reads
/// it, so the reason travels with the template; the entries of a resource that an adopted table
/// or bucket leaves out are left out with it. Every other checkov check passes.
pub const CHECKOV_SKIPS: [(&str, &str, &str); 9] = [
    (
        logical_id::DATA_BUCKET,
        "CKV_AWS_18",
        "No access log bucket: the bucket is written only by the mirror function's role, and \
         a log bucket would need its own policy, lifecycle and emptying at teardown; CloudTrail \
         data events audit object access where an account needs it",
    ),
    (
        logical_id::DATA_BUCKET,
        "CKV_AWS_21",
        "No versioning: the bucket is a mirror that the table (with point-in-time recovery) can \
         rebuild, and a removed user's object must be gone, not kept as a noncurrent version",
    ),
    (
        logical_id::FAILURE_QUEUE,
        "CKV_AWS_27",
        "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled); this check only \
         recognises a KMS key, which would also need KMS permissions for Lambda's on-failure \
         delivery",
    ),
    (
        logical_id::FUNCTION_LOG_GROUP,
        "CKV_AWS_158",
        "CloudWatch Logs encrypts every log group at rest; the function logs record ids, \
         sequence numbers, user names and error messages, never whole items, and a customer \
         managed KMS key per stack would add cost and a key policy for no access control beyond \
         IAM on the log group",
    ),
    (
        logical_id::MIRROR_FUNCTION,
        "CKV_AWS_115",
        "Concurrency is bounded by the event source mapping (per shard, at most \
         ParallelizationFactor batches at a time: 1 unless parallelization_factor is raised) and \
         nothing else invokes the function; reserving concurrency \
         would take it from the account's pool and fails to deploy on accounts with little \
         unreserved concurrency",
    ),
    (
        logical_id::MIRROR_FUNCTION,
        "CKV_AWS_116",
        "A DLQ only receives failed asynchronous invocations; the function is invoked \
         synchronously by the stream's event source mapping, whose on-failure destination \
         (FailureQueue) receives the batches that could not be mirrored",
    ),
    (
        logical_id::MIRROR_FUNCTION,
        "CKV_AWS_117",
        "The function reaches only S3, over TLS with IAM authentication; a VPC would need \
         subnets and an S3 gateway endpoint that this stack does not own, and protects no \
         private resource here",
    ),
    (
        logical_id::MIRROR_FUNCTION,
        "CKV_AWS_173",
        "The environment holds no secrets (bucket name, key prefix, object name, delete scope, \
         concurrency) and Lambda encrypts it at rest with its AWS managed key",
    ),
    (
        logical_id::USERS_TABLE,
        "CKV_AWS_119",
        "Encrypted at rest with the AWS managed KMS key (SSEEnabled); a customer managed key \
         would add a billed key, its policy and kms:Decrypt for the stream reader, for key-level \
         control this stack does not need",
    ),
];

/// The template's description.
pub const DESCRIPTION: &str =
    "usersync: mirrors a DynamoDB users table into S3 through a Lambda function on the table's stream";

/// The function's physical name in a stack called `stack_name`.
pub fn function_name(stack_name: &str) -> String {
    format!("{stack_name}{FUNCTION_NAME_SUFFIX}")
}

/// The function's log group name in a stack called `stack_name`.
pub fn log_group_name(stack_name: &str) -> String {
    format!("/aws/lambda/{}", function_name(stack_name))
}

/// A table or bucket that exists already and that the stack attaches to instead of creating it
/// ("adopting" it); `stack::check_adoption` reads and checks both. The default adopts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    pub table: Option<AdoptedTable>,
    pub bucket: Option<AdoptedBucket>,
}

/// An existing users table whose stream the stack's mapping reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedTable {
    /// The table's name.
    pub name: String,
    /// Its stream's ARN (DescribeTable's `LatestStreamArn`, read when deploying).
    pub stream_arn: String,
    /// Its string hash key attribute: the function's `KEY_ATTRIBUTE`.
    pub key_attribute: String,
    /// The KMS key the table is encrypted with (`SSEDescription.KMSMasterKeyArn`), if any: the
    /// role may `kms:Decrypt` with it to read the stream.
    pub kms_key_arn: Option<String>,
}

/// An existing bucket the function mirrors the users into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedBucket {
    /// The bucket's name.
    pub name: String,
    /// The KMS key of the bucket's default encryption, if it names one: the role may
    /// `kms:GenerateDataKey` with it to write objects. A key ARN, or, from a bare key id,
    /// `arn:${AWS::Partition}:kms:<region>:<account>:key/<id>`, which the template puts in an
    /// `Fn::Sub`.
    pub kms_key_arn: Option<String>,
}

/// A template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The YAML emitter failed.
    #[error("cannot render the template as YAML")]
    Yaml(#[from] serde_norway::Error),
    /// A string that the emitter would leave unquoted but a YAML 1.1 parser (such as
    /// CloudFormation's) would read as a boolean or number.
    #[error(
        "cannot render the template as YAML: the value {value:?} would be read as a boolean \
         or number by YAML 1.1 parsers; use the JSON form of the template"
    )]
    AmbiguousYaml {
        /// The string, as it appears in the template.
        value: String,
    },
}

/// Builds the stack's CloudFormation template, for a stack that creates its own table and
/// bucket.
///
/// It trusts `settings`; call [`StackSettings::validate`] first.
pub fn synthesize(settings: &StackSettings, artifact: &ArtifactLocation) -> Value {
    synthesize_adopting(settings, artifact, &Adoption::default())
}

/// Builds the stack's CloudFormation template, attached to the existing table and bucket of
/// `adoption` where it names them: no resource for them (the stack never changes or deletes
/// them), their names and ARNs written literally, the same permissions on them as on the
/// stack's own plus the KMS permissions their encryption needs. With nothing adopted this is
/// [`synthesize`].
///
/// It trusts `settings` and `adoption`; call [`StackSettings::validate`] and
/// `stack::check_adoption` first.
pub fn synthesize_adopting(
    settings: &StackSettings,
    artifact: &ArtifactLocation,
    adoption: &Adoption,
) -> Value {
    use logical_id::*;

    let mut resources = Map::new();
    if adoption.table.is_none() {
        resources.insert(USERS_TABLE.into(), users_table(settings));
    }
    if adoption.bucket.is_none() {
        resources.insert(DATA_BUCKET.into(), data_bucket(settings));
        resources.insert(DATA_BUCKET_POLICY.into(), data_bucket_policy());
    }
    resources.insert(FAILURE_QUEUE.into(), failure_queue());
    resources.insert(FUNCTION_LOG_GROUP.into(), function_log_group(settings));
    resources.insert(FUNCTION_ROLE.into(), function_role(settings, adoption));
    resources.insert(
        MIRROR_FUNCTION.into(),
        mirror_function(settings, artifact, adoption),
    );
    resources.insert(
        EVENT_SOURCE_MAPPING.into(),
        event_source_mapping(settings, adoption),
    );
    let monitoring = alarms::alarms(settings)
        .into_iter()
        .chain(alarms::notification_resources(settings))
        .chain([(DASHBOARD, dashboard::dashboard(settings))]);
    for (id, resource) in monitoring {
        resources.insert(id.into(), resource);
    }
    for (id, check, reason) in CHECKOV_SKIPS {
        // A resource left out for an adopted table or bucket takes its suppressions with it.
        let Some(resource) = resources.get_mut(id) else {
            continue;
        };
        let skips = resource
            .as_object_mut()
            .expect("a resource is an object")
            .entry("Metadata")
            .or_insert_with(|| json!({ "checkov": { "skip": [] } }))["checkov"]["skip"]
            .as_array_mut()
            .expect("checkov's skip list is an array");
        skips.push(json!({ "id": check, "comment": reason }));
    }

    let mut outputs = Map::new();
    let mut add_output = |name: &str, description: &str, value: Value| {
        outputs.insert(
            name.into(),
            json!({ "Description": description, "Value": value }),
        );
    };
    add_output(
        output::TABLE_NAME,
        "Name of the users table",
        table_name(adoption),
    );
    add_output(
        output::STREAM_ARN,
        "ARN of the users table's stream",
        stream_arn(adoption),
    );
    add_output(
        output::BUCKET_NAME,
        "Name of the bucket the users are mirrored into",
        bucket_name(adoption),
    );
    // Read back by later commands: a deploy keeps the adoption, a teardown leaves these alone.
    if let Some(table) = &adoption.table {
        add_output(
            output::ADOPTED_TABLE,
            "Name of the existing users table the stack adopted: not part of the stack, never \
             changed or deleted by it",
            table.name.clone().into(),
        );
    }
    if let Some(bucket) = &adoption.bucket {
        add_output(
            output::ADOPTED_BUCKET,
            "Name of the existing bucket the stack adopted: not part of the stack, never \
             changed, emptied or deleted by it",
            bucket.name.clone().into(),
        );
    }
    add_output(
        output::FUNCTION_NAME,
        "Name of the mirror function",
        reference(MIRROR_FUNCTION),
    );
    add_output(
        output::FAILURE_QUEUE_URL,
        "URL of the queue receiving batches that could not be mirrored",
        reference(FAILURE_QUEUE),
    );
    add_output(
        output::FAILURE_QUEUE_ARN,
        "ARN of the queue receiving batches that could not be mirrored",
        get_att(FAILURE_QUEUE, "Arn"),
    );
    add_output(
        output::EVENT_SOURCE_MAPPING_ID,
        "UUID of the mapping from the table's stream to the function",
        reference(EVENT_SOURCE_MAPPING),
    );

    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": DESCRIPTION,
        "Metadata": {
            "usersync": {
                "Generator": "cargo xtask synth",
            }
        },
        "Resources": resources,
        "Outputs": outputs,
    });
    // Some dependencies turn on serde_json's `preserve_order`; sorting makes the output
    // the same whichever features a build unifies.
    template.sort_all_objects();
    template
}

/// Renders a template as pretty-printed JSON ending with a newline.
pub fn to_json_string(template: &Value) -> String {
    // `{:#}` is serde_json's infallible pretty printer.
    format!("{template:#}\n")
}

/// Renders a template as YAML (plain keys such as `Fn::GetAtt`, no short-form tags).
///
/// The emitter follows YAML 1.2 and quotes only what YAML 1.2 would misread, so a value such as
/// `yes` or `1_000` from the settings is refused rather than emitted plain, where a YAML 1.1
/// parser would change its type. The JSON form has no such ambiguity.
pub fn to_yaml_string(template: &Value) -> Result<String, TemplateError> {
    check_yaml_1_1_strings(template)?;
    Ok(serde_norway::to_string(template)?)
}

fn check_yaml_1_1_strings(value: &Value) -> Result<(), TemplateError> {
    match value {
        Value::String(text) if misread_by_yaml_1_1(text) => Err(TemplateError::AmbiguousYaml {
            value: text.clone(),
        }),
        Value::Array(items) => items.iter().try_for_each(check_yaml_1_1_strings),
        Value::Object(map) => map.values().try_for_each(check_yaml_1_1_strings),
        _ => Ok(()),
    }
}

/// Whether YAML 1.1 reads a plain `text` as something other than a string, in a way that the
/// YAML 1.2 emitter does not guard against: `yes`/`no`/`on`/`off`/`y`/`n` booleans, base-60
/// numbers (`1:20`) and numbers with `_` separators. Dates are left alone: CloudFormation reads
/// plain `2012-10-17` as text (AWS's own examples leave policy `Version` dates unquoted).
fn misread_by_yaml_1_1(text: &str) -> bool {
    const SPECIAL: [&str; 18] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", "=", "<<",
    ];
    if SPECIAL.contains(&text) {
        return true;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let numeric =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let base_60 = unsigned.contains(':') && unsigned.split(':').all(numeric);
    let underscored = unsigned.contains('_')
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.split('.').count() <= 2
        && unsigned
            .split('.')
            .all(|part| part.is_empty() || numeric(part));
    base_60 || underscored
}

fn reference(logical_id: &str) -> Value {
    json!({ "Ref": logical_id })
}

fn get_att(logical_id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [logical_id, attribute] })
}

fn sub(text: String) -> Value {
    json!({ "Fn::Sub": text })
}

/// An ARN as the template writes it: in an `Fn::Sub` when it holds a `${...}` variable (a key
/// ARN built with `${AWS::Partition}`), else as it is.
fn arn(text: &str) -> Value {
    if text.contains("${") {
        sub(text.to_owned())
    } else {
        text.into()
    }
}

/// The users table's name: the adopted one's, else the stack's own table.
fn table_name(adoption: &Adoption) -> Value {
    match &adoption.table {
        Some(table) => table.name.clone().into(),
        None => reference(logical_id::USERS_TABLE),
    }
}

/// The users table's stream ARN: the adopted one's, else the stack's own table's.
fn stream_arn(adoption: &Adoption) -> Value {
    match &adoption.table {
        Some(table) => table.stream_arn.clone().into(),
        None => get_att(logical_id::USERS_TABLE, "StreamArn"),
    }
}

/// The data bucket's name: the adopted one's, else the stack's own bucket.
fn bucket_name(adoption: &Adoption) -> Value {
    match &adoption.bucket {
        Some(bucket) => bucket.name.clone().into(),
        None => reference(logical_id::DATA_BUCKET),
    }
}

/// The data bucket's ARN, followed by `suffix` (`/*` for its objects).
fn bucket_arn(adoption: &Adoption, suffix: &str) -> Value {
    match (&adoption.bucket, suffix) {
        (Some(bucket), _) => sub(format!(
            "arn:${{AWS::Partition}}:s3:::{}{suffix}",
            bucket.name
        )),
        (None, "") => get_att(logical_id::DATA_BUCKET, "Arn"),
        (None, _) => sub(format!("${{{}.Arn}}{suffix}", logical_id::DATA_BUCKET)),
    }
}

/// `${FunctionLogGroup}`'s ARN without the `:*` that its `Arn` attribute ends with.
fn log_group_arn(suffix: &str) -> Value {
    sub(format!(
        "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:${{{}}}{suffix}",
        logical_id::FUNCTION_LOG_GROUP
    ))
}

/// What happens to the data (table and bucket) when the stack goes or they are replaced.
fn data_policy(settings: &StackSettings) -> &'static str {
    if settings.retain_data_on_teardown {
        "Retain"
    } else {
        "Delete"
    }
}

fn users_table(settings: &StackSettings) -> Value {
    let policy = data_policy(settings);
    json!({
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": policy,
        "UpdateReplacePolicy": policy,
        "Properties": {
            "AttributeDefinitions": [{ "AttributeName": "name", "AttributeType": "S" }],
            "KeySchema": [{ "AttributeName": "name", "KeyType": "HASH" }],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": { "StreamViewType": "NEW_AND_OLD_IMAGES" },
            "PointInTimeRecoverySpecification": { "PointInTimeRecoveryEnabled": true },
            "SSESpecification": { "SSEEnabled": true },
        }
    })
}

fn data_bucket(settings: &StackSettings) -> Value {
    // Retained together with the table: teardown then leaves the bucket's objects alone too.
    let policy = data_policy(settings);
    json!({
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": policy,
        "UpdateReplacePolicy": policy,
        "Properties": {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{
                    "ServerSideEncryptionByDefault": { "SSEAlgorithm": "AES256" }
                }]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": true,
                "BlockPublicPolicy": true,
                "IgnorePublicAcls": true,
                "RestrictPublicBuckets": true,
            },
            "OwnershipControls": { "Rules": [{ "ObjectOwnership": "BucketOwnerEnforced" }] },
        }
    })
}

fn data_bucket_policy() -> Value {
    let bucket = logical_id::DATA_BUCKET;
    json!({
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": reference(bucket),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [get_att(bucket, "Arn"), sub(format!("${{{bucket}.Arn}}/*"))],
                    "Condition": { "Bool": { "aws:SecureTransport": "false" } },
                }]
            }
        }
    })
}

fn failure_queue() -> Value {
    json!({
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "SqsManagedSseEnabled": true,
            // 14 days, SQS's maximum: time to inspect and replay failed batches.
            "MessageRetentionPeriod": 1_209_600,
        }
    })
}

fn function_log_group(settings: &StackSettings) -> Value {
    json!({
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            "LogGroupName": sub(log_group_name("${AWS::StackName}")),
            "RetentionInDays": settings.log_retention_days,
        }
    })
}

fn function_role(settings: &StackSettings, adoption: &Adoption) -> Value {
    use logical_id::*;

    let objects = bucket_arn(adoption, "/*");
    let mut statements = vec![json!({
        "Sid": "WriteUserObjects",
        "Effect": "Allow",
        // DeleteObjects (the prefix scope's batch delete) is authorised as s3:DeleteObject.
        "Action": ["s3:PutObject", "s3:DeleteObject"],
        "Resource": objects,
    })];
    if settings.delete_scope == DeleteScope::Prefix {
        statements.push(json!({
            "Sid": "ListUserPrefixes",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": bucket_arn(adoption, ""),
        }));
    }
    if let Some(key) = adoption
        .bucket
        .as_ref()
        .and_then(|b| b.kms_key_arn.as_deref())
    {
        // The adopted bucket encrypts new objects with this key by default, and uploading an
        // object encrypted with a KMS key needs kms:GenerateDataKey on the key (S3 User Guide,
        // "Using server-side encryption with AWS KMS keys (SSE-KMS)", Permissions:
        // https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html). The
        // function only puts whole objects (no multipart upload, no read), so it needs no
        // kms:Decrypt.
        statements.push(json!({
            "Sid": "EncryptUserObjects",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey"],
            "Resource": arn(key),
        }));
    }
    statements.extend([
        json!({
            "Sid": "ReadUsersStream",
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
            ],
            "Resource": stream_arn(adoption),
        }),
        // ListStreams has no resource type in IAM: "*" is the only resource AWS accepts
        // for it, and it is the only "*" resource in this policy.
        json!({
            "Sid": "ListStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:ListStreams"],
            "Resource": "*",
        }),
        json!({
            "Sid": "SendFailedBatches",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": get_att(FAILURE_QUEUE, "Arn"),
        }),
        json!({
            "Sid": "WriteLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn(""), log_group_arn(":*")],
        }),
    ]);
    if let Some(key) = adoption
        .table
        .as_ref()
        .and_then(|t| t.kms_key_arn.as_deref())
    {
        // A table's stream is always encrypted with the table's own key (DynamoDB Developer
        // Guide, encryption at rest usage notes:
        // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.usagenotes.html),
        // so reading the stream of a table encrypted with a KMS key decrypts with that key; AWS
        // CDK's grantStreamRead grants the same (aws/aws-cdk#23400). On the AWS managed key
        // (aws/dynamodb) the grant is redundant and harmless.
        statements.push(json!({
            "Sid": "DecryptUsersStream",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": arn(key),
        }));
    }

    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "lambda.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                }]
            },
            "Policies": [{
                "PolicyName": "mirror",
                "PolicyDocument": { "Version": "2012-10-17", "Statement": statements },
            }]
        }
    })
}

fn mirror_function(
    settings: &StackSettings,
    artifact: &ArtifactLocation,
    adoption: &Adoption,
) -> Value {
    use logical_id::*;

    let mut variables = Map::new();
    variables.insert(vars::BUCKET_NAME.into(), bucket_name(adoption));
    variables.insert(vars::KEY_PREFIX.into(), settings.key_prefix.clone().into());
    variables.insert(
        vars::OBJECT_NAME.into(),
        settings.object_name.clone().into(),
    );
    variables.insert(
        vars::DELETE_SCOPE.into(),
        settings.delete_scope.as_str().into(),
    );
    // Unset means the function's own default, which may change with the function.
    if let Some(n) = settings.max_concurrency {
        variables.insert(vars::MAX_CONCURRENCY.into(), n.to_string().into());
    }
    // The stack's own table is keyed by the function's default attribute; an adopted one by
    // its own hash key.
    if let Some(table) = &adoption.table {
        variables.insert(
            vars::KEY_ATTRIBUTE.into(),
            table.key_attribute.clone().into(),
        );
    }

    json!({
        "Type": "AWS::Lambda::Function",
        // No `DependsOn` on the log group: the `Ref` in `LoggingConfig` already creates the
        // group first (and cfn-lint flags the duplicate, W3005).
        "Properties": {
            "FunctionName": sub(function_name("${AWS::StackName}")),
            "Runtime": "provided.al2023",
            "Handler": "bootstrap",
            "Architectures": [settings.architecture.as_str()],
            "MemorySize": settings.memory_mb,
            "Timeout": settings.timeout_seconds,
            // CloudFormation hands these to Lambda, which reads the archive with no bucket owner
            // condition: "The bucket can be in a different AWS account"
            // (https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/lambda/aws.sdk.kotlin.services.lambda.model/-update-function-code-request/s3-bucket.html).
            // What protects it: `stack::upload_artifact` names the bucket here only after
            // HeadBucket with ExpectedBucketOwner confirmed the account owns it, and the archive
            // was checked (HeadObject) or written (PutObject) there with the same condition;
            // the key is content-addressed and the bucket blocks public access, so only this
            // account's own principals could replace the archive before Lambda reads it.
            "Code": { "S3Bucket": artifact.bucket, "S3Key": artifact.key },
            "Role": get_att(FUNCTION_ROLE, "Arn"),
            "Environment": { "Variables": variables },
            "LoggingConfig": { "LogFormat": "JSON", "LogGroup": reference(FUNCTION_LOG_GROUP) },
        }
    })
}

fn event_source_mapping(settings: &StackSettings, adoption: &Adoption) -> Value {
    use logical_id::*;

    json!({
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "EventSourceArn": stream_arn(adoption),
            "FunctionName": reference(MIRROR_FUNCTION),
            // The function is idempotent, so replaying what the stream still holds is safe.
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": settings.batch_size,
            "MaximumBatchingWindowInSeconds": settings.maximum_batching_window_seconds,
            "BisectBatchOnFunctionError": settings.bisect_batch_on_function_error,
            "MaximumRetryAttempts": settings.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": settings.maximum_record_age_seconds,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": { "OnFailure": { "Destination": get_att(FAILURE_QUEUE, "Arn") } },
            "Enabled": true,
            // Batches of one shard processed at once; always written, so that lowering it back
            // to 1 is a change CloudFormation applies. At 1 (the default) every record of a
            // shard is applied in stream order; above it Lambda keeps the records of one
            // partition key (one user) in order, which is the order the mirror needs.
            // https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-lambda-eventsourcemapping.html#cfn-lambda-eventsourcemapping-parallelizationfactor
            // (1 to 10); https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html;
            // https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html (order per item).
            "ParallelizationFactor": settings.parallelization_factor,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroUsize;

    use usersync_function::config::{self, Config, DeleteScope};

    use super::*;

    /// A name CloudFormation could give the data bucket: what its `Ref` resolves to.
    const DATA_BUCKET_NAME: &str = "usersync-databucket-1a2b3c4d5e6f";

    fn artifact() -> ArtifactLocation {
        ArtifactLocation {
            bucket: "usersync-assets-123456789012-eu-west-1".to_owned(),
            key: "usersync/bootstrap-0123abcd.zip".to_owned(),
        }
    }

    /// The function's environment as the template sets it, with the data bucket's `Ref`
    /// resolved as CloudFormation would.
    fn function_environment(template: &Value) -> BTreeMap<String, String> {
        let function = &template["Resources"][logical_id::MIRROR_FUNCTION];
        let variables = function["Properties"]["Environment"]["Variables"]
            .as_object()
            .expect("the function has environment variables");
        variables
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    _ if *value == reference(logical_id::DATA_BUCKET) => {
                        DATA_BUCKET_NAME.to_owned()
                    }
                    other => panic!("{name} is neither text nor the data bucket's name: {other}"),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// The configuration the deployed function would read from the template `settings` give.
    fn deployed_config(settings: &StackSettings) -> Config {
        settings
            .validate()
            .unwrap_or_else(|err| panic!("{settings:?} should be valid: {err}"));
        let template = synthesize(settings, &artifact());
        let environment = function_environment(&template);
        for name in environment.keys() {
            assert!(
                config::vars::ALL.contains(&name.as_str()),
                "the template sets {name}, which the function does not read"
            );
        }
        let read = Config::from_lookup(|name| environment.get(name).cloned())
            .unwrap_or_else(|err| panic!("{settings:?} give the function a bad {err}"));

        // The template leaves KEY_ATTRIBUTE to the function's default: it must be the
        // table's hash key.
        let key_schema = &template["Resources"][logical_id::USERS_TABLE]["Properties"]["KeySchema"];
        assert_eq!(
            key_schema,
            &json!([{ "AttributeName": read.key_attribute, "KeyType": "HASH" }])
        );
        read
    }

    #[test]
    fn the_default_settings_give_the_function_a_valid_configuration() {
        let read = deployed_config(&StackSettings::default());
        assert_eq!(
            read,
            Config {
                bucket: DATA_BUCKET_NAME.to_owned(),
                key_prefix: String::new(),
                object_name: config::DEFAULT_OBJECT_NAME.to_owned(),
                delete_scope: DeleteScope::Object,
                max_concurrency: NonZeroUsize::new(config::DEFAULT_MAX_CONCURRENCY).unwrap(),
                key_attribute: config::DEFAULT_KEY_ATTRIBUTE.to_owned(),
                force_path_style: false,
            }
        );
    }

    #[test]
    fn an_adopted_table_and_bucket_reach_the_function_and_the_mapping() {
        let adoption = Adoption {
            table: Some(AdoptedTable {
                name: "people".to_owned(),
                stream_arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/people/stream/2024-05-01T00:00:00.000".to_owned(),
                key_attribute: "user_id".to_owned(),
                kms_key_arn: None,
            }),
            bucket: Some(AdoptedBucket {
                name: "people-mirror".to_owned(),
                kms_key_arn: None,
            }),
        };
        let template = synthesize_adopting(&StackSettings::default(), &artifact(), &adoption);
        let variables = &template["Resources"][logical_id::MIRROR_FUNCTION]["Properties"]
            ["Environment"]["Variables"];
        let environment: BTreeMap<String, String> = variables
            .as_object()
            .expect("the function has environment variables")
            .iter()
            .map(|(name, value)| {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} is not text"));
                (name.clone(), text.to_owned())
            })
            .collect();
        let read = Config::from_lookup(|name| environment.get(name).cloned())
            .expect("the adopted template configures the function");
        assert_eq!(read.bucket, "people-mirror");
        assert_eq!(read.key_attribute, "user_id");
        let mapping = &template["Resources"][logical_id::EVENT_SOURCE_MAPPING]["Properties"];
        assert_eq!(
            mapping["EventSourceArn"],
            adoption
                .table
                .as_ref()
                .map(|t| t.stream_arn.clone())
                .unwrap()
        );
    }

    #[test]
    fn an_arn_with_a_variable_is_substituted_and_a_plain_one_is_not() {
        assert_eq!(
            arn("arn:${AWS::Partition}:kms:eu-west-1:123456789012:key/k"),
            json!({ "Fn::Sub": "arn:${AWS::Partition}:kms:eu-west-1:123456789012:key/k" })
        );
        assert_eq!(
            arn("arn:aws:kms:eu-west-1:123456789012:key/k"),
            json!("arn:aws:kms:eu-west-1:123456789012:key/k")
        );
    }

    #[test]
    fn checkov_skips_name_resources_of_the_template() {
        for (id, check, _) in CHECKOV_SKIPS {
            assert!(logical_id::ALL.contains(&id), "{check} names {id}");
        }
    }

    #[test]
    fn other_settings_reach_the_function_as_they_were_given() {
        let cases = [
            ("users/", "profile.json", DeleteScope::Prefix, Some(16)),
            ("", ".hidden", DeleteScope::Object, Some(1)),
            (
                "p/ü é/",
                "userdata",
                DeleteScope::Prefix,
                Some(crate::settings::MAX_MAX_CONCURRENCY),
            ),
        ];
        let longest = (
            "p".repeat(config::MAX_KEY_PREFIX_BYTES),
            "o".repeat(config::MAX_OBJECT_NAME_BYTES),
        );
        let cases = cases
            .into_iter()
            .map(|(prefix, object, scope, n)| (prefix.to_owned(), object.to_owned(), scope, n))
            .chain([(longest.0, longest.1, DeleteScope::Object, None)]);
        for (key_prefix, object_name, delete_scope, max_concurrency) in cases {
            let settings = StackSettings {
                key_prefix,
                object_name,
                delete_scope,
                max_concurrency,
                ..StackSettings::default()
            };
            let read = deployed_config(&settings);
            assert_eq!(read.bucket, DATA_BUCKET_NAME);
            assert_eq!(read.key_prefix, settings.key_prefix);
            assert_eq!(read.object_name, settings.object_name);
            assert_eq!(read.delete_scope, settings.delete_scope);
            let expected_concurrency = settings
                .max_concurrency
                .map_or(config::DEFAULT_MAX_CONCURRENCY, |n| {
                    usize::try_from(n).unwrap()
                });
            assert_eq!(read.max_concurrency.get(), expected_concurrency);
        }
    }
}
