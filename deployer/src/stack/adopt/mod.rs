//! Adopting an existing table and bucket: what a deploy checks before anything changes, and what
//! a deployed stack's outputs say it adopted before.
//!
//! [`check_adoption`] decides which table and bucket a deploy attaches to ([`adoption_names`]:
//! the settings' `existing_table` and `existing_bucket`, checked against the `AdoptedTable` and
//! `AdoptedBucket` outputs of the deployed stack), then reads each from AWS and refuses what the
//! function cannot mirror, with the fix. Nothing here changes anything.
//!
//! One file per part: `names.rs` decides which table and bucket are adopted, `table.rs` checks a
//! table, `bucket.rs` a bucket; this one holds what they share (what can be adopted, and why it
//! cannot) and [`check_adoption`], which runs them in turn.

mod bucket;
mod names;
mod table;
#[cfg(test)]
mod test_support;

use std::fmt;

use usersync_function::config::vars;

pub use bucket::check_bucket;
pub use names::{adopted_names, adoption_names, AdoptedNames};
pub use table::check_table;

use super::assets::account_id;
use super::{describe_stack, outputs_of, StackError};
use crate::console::Console;
use crate::settings::StackSettings;
use crate::target::Target;
use crate::template::Adoption;

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
