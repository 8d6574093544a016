//! The stack settings users may change, their defaults and their validation.
//!
//! Settings come from [`StackSettings::default`], a small TOML file
//! ([`StackSettings::from_file`]) whose keys are the snake_case field names below, and command
//! line flags applied on top by the caller. Call [`StackSettings::validate`] after the last
//! change: `template::synthesize` trusts what it is given.
//!
//! ```toml
//! # usersync.toml: every key is optional; absent keys keep their defaults.
//! stack_name = "usersync-dev"
//! batch_size = 500
//! # Up to 4 batches of each shard at once, for a hot shard; a user's records stay in order.
//! parallelization_factor = 4
//! delete_scope = "prefix"
//! key_prefix = "users/"
//! max_concurrency = 16
//! architecture = "x86_64"
//! # Attach to a table and a bucket that exist already instead of creating them ("adoption").
//! existing_table = "users"
//! existing_bucket = "users-mirror"
//! # Alarm when the mirror trails the table by more than 2 minutes, and email someone.
//! alarm_iterator_age_seconds = 120
//! alarm_email = "ops@example.com"
//! ```
//!
//! `parallelization_factor` is the standard remedy for a hot shard (one shard of the stream
//! receiving more writes than one batch at a time can apply): the mapping processes up to that
//! many batches of each shard concurrently. Lambda keeps the records of one partition key in
//! order across those batches, and the table's partition key is the user's name, so each
//! user's changes are still applied in stream order. Lambda's parameters for DynamoDB mappings
//! (ParallelizationFactor: default 1, maximum 10):
//! https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html; the per-key order:
//! https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html ("Lambda still ensures in-order
//! processing at the item (partition and sort key) level").
//!
//! The alarm settings (`alarm_iterator_age_seconds`, `alarm_email`, `alarm_topic_arn`) have no
//! deploy flags: a notification target given on one deploy's command line would be dropped by
//! the next deploy without it, deleting the topic and its subscription. They live in the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use usersync_function::config;

/// What a `REMOVE` from the table deletes in the bucket: the function's own type (its
/// `DELETE_SCOPE`), spelt `object` or `prefix` in a settings file as in the variable. To parse
/// one with a settings error, use [`parse_delete_scope`].
pub use usersync_function::config::DeleteScope;

/// Lambda's limit on function names, in characters.
const MAX_FUNCTION_NAME_LEN: usize = 64;

/// Appended to the stack name to form the function's name.
pub const FUNCTION_NAME_SUFFIX: &str = "-mirror";

/// The longest stack name accepted.
///
/// CloudFormation itself allows 128 characters, but the function is named
/// `<stack name>-mirror` (see `template`) and Lambda allows 64. Every other resource
/// is named by CloudFormation, which shortens names as each service requires.
pub const MAX_STACK_NAME_LEN: usize = MAX_FUNCTION_NAME_LEN - FUNCTION_NAME_SUFFIX.len();

/// The retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The most users the function may work on at once: the function's own limit
/// ([`config::MAX_MAX_CONCURRENCY`]), in the type of [`StackSettings::max_concurrency`].
pub const MAX_MAX_CONCURRENCY: u32 = {
    assert!(config::MAX_MAX_CONCURRENCY <= u32::MAX as usize);
    config::MAX_MAX_CONCURRENCY as u32
};

const STACK_NAME_FORM: &str =
    "1 to 57 characters of letters, digits and '-', starting with a letter, such as \"usersync\"";
const PREFIX_FORM: &str =
    "a key prefix of at most 512 bytes without control characters, such as \"users/\"";
const OBJECT_NAME_FORM: &str =
    "an object name of at most 255 bytes without '/' or control characters, not '.' or '..', such as \"userdata\"";
const CONCURRENCY_FORM: &str = "1 to 1024";
const RETENTION_FORM: &str = "one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653";
const DELETE_SCOPE_FORM: &str = "\"object\" or \"prefix\"";
const ARCHITECTURE_FORM: &str = "\"arm64\" or \"x86_64\"";
const TABLE_FORM: &str =
    "the name of an existing DynamoDB table: 3 to 255 characters of letters, digits, '_', '.' and '-', such as \"users\"";
const BUCKET_FORM: &str = "the name of an existing S3 bucket: 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit, such as \"users-mirror\"";
const ALARM_AGE_FORM: &str =
    "1 to 86400 seconds (DynamoDB Streams keep a record 24 hours), such as 60";
const EMAIL_FORM: &str =
    "one email address of at most 254 characters, local-part@domain, such as \"ops@example.com\"";
const TOPIC_ARN_FORM: &str = "the ARN of an existing SNS topic, arn:<partition>:sns:<region>:<12-digit account>:<topic name>, such as \"arn:aws:sns:eu-west-1:123456789012:ops-alarms\"";

/// DynamoDB Streams keep a record 24 hours: no record, and so no iterator age, is older.
/// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html
pub const MAX_ALARM_ITERATOR_AGE_SECONDS: u32 = 86_400;

/// Parses a `delete_scope` given outside a settings file (a command-line flag, say) by the
/// function's rule; the error names the setting, the value and the allowed form.
pub fn parse_delete_scope(text: &str) -> Result<DeleteScope, SettingsError> {
    text.parse()
        .map_err(|reason| invalid("delete_scope", text, reason, DELETE_SCOPE_FORM))
}

/// The instruction set the function runs on; it must match the built `bootstrap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// AWS Graviton, `arm64` (the default: cheaper per millisecond than x86_64).
    #[default]
    #[serde(rename = "arm64")]
    Arm64,
    /// `x86_64`.
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Architecture {
    /// The value as Lambda's `Architectures` property spells it: `arm64` or `x86_64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arm64 => "arm64",
            Self::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Architecture {
    type Err = SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" => Ok(Self::Arm64),
            "x86_64" => Ok(Self::X86_64),
            _ => Err(SettingsError::Invalid {
                setting: "architecture",
                value: s.to_owned(),
                reason: "unknown architecture",
                expected: ARCHITECTURE_FORM,
            }),
        }
    }
}

/// Where the function's code archive (`bootstrap.zip`) was uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactLocation {
    /// The assets bucket, in the stack's region.
    pub bucket: String,
    /// The archive's key in that bucket.
    pub key: String,
}

/// The settings of one usersync stack; see each field for its default and allowed values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackSettings {
    /// The CloudFormation stack name. Default `usersync`; 1 to 57 characters matching
    /// `[a-zA-Z][-a-zA-Z0-9]*` (the function is named `<stack_name>-mirror`, at most 64).
    pub stack_name: String,
    /// Most stream records per invocation. Default 100; 1 to 10000.
    pub batch_size: u32,
    /// Seconds the mapping may wait to fill a batch. Default 1; 0 to 300.
    pub maximum_batching_window_seconds: u32,
    /// Batches of one shard the mapping processes at once (`ParallelizationFactor`). Default
    /// 1; 1 to 10. Raise it for a hot shard: records of one user (one partition key) stay in
    /// order across the concurrent batches.
    pub parallelization_factor: u32,
    /// Retries of a failed batch before it goes to the failure queue. Default 5; -1 (retry
    /// until the record expires) or 0 to 10000.
    pub maximum_retry_attempts: i32,
    /// Age after which a record is sent to the failure queue instead of being retried.
    /// Default 3600; -1 (no limit) or 60 to 604800 seconds.
    pub maximum_record_age_seconds: i32,
    /// Split a failing batch in two and retry each half. Default `true`.
    pub bisect_batch_on_function_error: bool,
    /// The function's memory in MB. Default 256; 128 to 10240.
    pub memory_mb: u32,
    /// The function's timeout in seconds. Default 60; 1 to 900.
    pub timeout_seconds: u32,
    /// What a `REMOVE` deletes. Default `object`; `object` or `prefix`.
    pub delete_scope: DeleteScope,
    /// Prefix of every key the function writes. Default empty; at most 512 bytes, no control
    /// characters.
    pub key_prefix: String,
    /// Name of each user's object under its prefix. Default `userdata`.
    pub object_name: String,
    /// Most users the function works on at once. Default unset (the function's own default,
    /// 64); 1 to 1024.
    pub max_concurrency: Option<u32>,
    /// Days CloudWatch Logs keeps the function's logs. Default 14; one of CloudWatch's
    /// allowed periods ([`LOG_RETENTION_DAYS`]).
    pub log_retention_days: u32,
    /// Keep the users table when the stack is deleted or the table replaced. Default `false`.
    pub retain_data_on_teardown: bool,
    /// The function's architecture. Default `arm64`; `arm64` or `x86_64`.
    pub architecture: Architecture,
    /// An existing DynamoDB table to mirror instead of one the stack creates ("adopting" it).
    /// Default unset; 3 to 255 characters of letters, digits, `_`, `.` and `-`. Deploy checks
    /// it (a single string hash key, a stream with new images) and the stack never changes or
    /// deletes it. A stack remembers what it adopted: leaving this unset later keeps it.
    pub existing_table: Option<String>,
    /// An existing S3 bucket to mirror into instead of one the stack creates. Default unset;
    /// an S3 bucket name, in the stack's region and account. The stack never changes, empties
    /// or deletes it.
    pub existing_bucket: Option<String>,
    /// How far, in seconds, the mirror may trail the table before the stack's alarms say so:
    /// the mapping's `IteratorAge` and the function's `LagMs` maxima above it for 3
    /// consecutive minutes. Default 60; 1 to 86400. Keep it below `maximum_record_age_seconds`:
    /// older records go to the failure queue instead (and its alarm fires), so a threshold at
    /// or above that age is never crossed.
    pub alarm_iterator_age_seconds: u32,
    /// Who is told when an alarm fires or recovers: the stack creates an SNS topic (encrypted
    /// with a key of its own) with this one email subscription, which AWS asks the address to
    /// confirm first. Default unset; an email address. At most one of `alarm_email` and
    /// `alarm_topic_arn`; with neither, the alarms have no actions.
    pub alarm_email: Option<String>,
    /// An existing SNS topic the alarms notify instead of one the stack creates. Default unset;
    /// an SNS topic ARN. If the topic is encrypted, its key must let `cloudwatch.amazonaws.com`
    /// use it (`kms:GenerateDataKey*`, `kms:Decrypt`); the AWS managed key `alias/aws/sns`
    /// cannot, and alarm notifications to such a topic are dropped.
    pub alarm_topic_arn: Option<String>,
}

impl Default for StackSettings {
    fn default() -> Self {
        Self {
            stack_name: "usersync".to_owned(),
            batch_size: 100,
            maximum_batching_window_seconds: 1,
            parallelization_factor: 1,
            maximum_retry_attempts: 5,
            maximum_record_age_seconds: 3600,
            bisect_batch_on_function_error: true,
            memory_mb: 256,
            timeout_seconds: 60,
            delete_scope: DeleteScope::Object,
            key_prefix: String::new(),
            object_name: config::DEFAULT_OBJECT_NAME.to_owned(),
            max_concurrency: None,
            log_retention_days: 14,
            retain_data_on_teardown: false,
            architecture: Architecture::Arm64,
            existing_table: None,
            existing_bucket: None,
            alarm_iterator_age_seconds: 60,
            alarm_email: None,
            alarm_topic_arn: None,
        }
    }
}

/// A setting that is invalid or a settings file that cannot be read; every message names the
/// setting (or file), the bad value and the allowed form.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A number outside its allowed range.
    #[error("{setting} {value} is out of range: expected {expected}")]
    OutOfRange {
        /// The setting's name, as in the config file.
        setting: &'static str,
        /// The rejected value.
        value: i64,
        /// The allowed values.
        expected: &'static str,
    },
    /// A text value that breaks a rule.
    #[error("{setting} {value:?} is invalid: {reason}; expected {expected}")]
    Invalid {
        /// The setting's name, as in the config file.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
        /// The allowed form.
        expected: &'static str,
    },
    /// Two settings that exclude each other are both set.
    #[error("{first} and {second} are both set: {fix}")]
    Conflict {
        /// The first setting's name, as in the config file.
        first: &'static str,
        /// The second setting's name.
        second: &'static str,
        /// Which one to keep for what.
        fix: &'static str,
    },
    /// The settings file could not be read.
    #[error("cannot read settings file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The settings are not valid TOML or hold an unknown key or a value of the wrong type.
    #[error("invalid settings in {origin}: {message}")]
    Parse {
        /// The file's path, or `TOML text` when parsing a string.
        origin: String,
        /// The TOML parser's message, with the line, column and key.
        message: String,
    },
    /// A setting in a file breaks a rule; the message names the file, then the setting.
    #[error("invalid settings in {}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: Box<SettingsError>,
    },
}

impl StackSettings {
    /// Parses settings from TOML text (snake_case keys, all optional) and validates them.
    ///
    /// Absent keys keep their defaults; unknown keys are an error naming the key.
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        let settings = parse(text, "TOML text")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads, parses and validates a settings file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let settings = parse(&text, &path.display().to_string())?;
        settings.validate().map_err(|error| SettingsError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })?;
        Ok(settings)
    }

    /// Checks every setting against its allowed values; returns the first problem found.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_stack_name(&self.stack_name)?;
        check_range("batch_size", self.batch_size, 1, 10_000, "1 to 10000")?;
        check_range(
            "maximum_batching_window_seconds",
            self.maximum_batching_window_seconds,
            0,
            300,
            "0 to 300",
        )?;
        check_range(
            "parallelization_factor",
            self.parallelization_factor,
            1,
            10,
            "1 to 10",
        )?;
        check_range(
            "maximum_retry_attempts",
            self.maximum_retry_attempts,
            -1,
            10_000,
            "-1 (retry until the record expires) or 0 to 10000",
        )?;
        if self.maximum_record_age_seconds != -1 {
            check_range(
                "maximum_record_age_seconds",
                self.maximum_record_age_seconds,
                60,
                604_800,
                "-1 (no limit) or 60 to 604800",
            )?;
        }
        check_range("memory_mb", self.memory_mb, 128, 10_240, "128 to 10240")?;
        check_range("timeout_seconds", self.timeout_seconds, 1, 900, "1 to 900")?;
        // The function's own rules, so that a stack that deploys also starts.
        config::check_key_prefix(&self.key_prefix)
            .map_err(|reason| invalid("key_prefix", &self.key_prefix, reason, PREFIX_FORM))?;
        config::check_object_name(&self.object_name).map_err(|reason| {
            invalid("object_name", &self.object_name, reason, OBJECT_NAME_FORM)
        })?;
        if let Some(n) = self.max_concurrency {
            check_max_concurrency(n)?;
        }
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            return Err(SettingsError::OutOfRange {
                setting: "log_retention_days",
                value: i64::from(self.log_retention_days),
                expected: RETENTION_FORM,
            });
        }
        if let Some(table) = &self.existing_table {
            check_existing_table(table)?;
        }
        if let Some(bucket) = &self.existing_bucket {
            check_existing_bucket(bucket)?;
        }
        self.check_alarms()
    }

    /// The alarm settings: the threshold's range, the notification target's form, and at most
    /// one target.
    fn check_alarms(&self) -> Result<(), SettingsError> {
        check_range(
            "alarm_iterator_age_seconds",
            self.alarm_iterator_age_seconds,
            1,
            i64::from(MAX_ALARM_ITERATOR_AGE_SECONDS),
            ALARM_AGE_FORM,
        )?;
        if let Some(email) = &self.alarm_email {
            check_alarm_email(email)?;
        }
        if let Some(arn) = &self.alarm_topic_arn {
            check_alarm_topic_arn(arn)?;
        }
        if self.alarm_email.is_some() && self.alarm_topic_arn.is_some() {
            return Err(SettingsError::Conflict {
                first: "alarm_email",
                second: "alarm_topic_arn",
                fix: "keep alarm_email for a topic the stack creates with that one subscription, \
                      or alarm_topic_arn to notify a topic that exists already, not both",
            });
        }
        Ok(())
    }
}

fn parse(text: &str, origin: &str) -> Result<StackSettings, SettingsError> {
    toml::from_str(text).map_err(|err: toml::de::Error| SettingsError::Parse {
        origin: origin.to_owned(),
        message: err.to_string().trim_end().to_owned(),
    })
}

fn check_range<T: Into<i64>>(
    setting: &'static str,
    value: T,
    min: i64,
    max: i64,
    expected: &'static str,
) -> Result<(), SettingsError> {
    let value = value.into();
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::OutOfRange {
            setting,
            value,
            expected,
        })
    }
}

fn invalid(
    setting: &'static str,
    value: &str,
    reason: &'static str,
    expected: &'static str,
) -> SettingsError {
    SettingsError::Invalid {
        setting,
        value: value.to_owned(),
        reason,
        expected,
    }
}

/// Checks a stack name: 1 to 57 characters of letters, digits and `-`, starting with a letter.
///
/// [`StackSettings::validate`] applies it too; it is public so that a command line can refuse
/// a bad `--stack` while parsing its arguments.
pub fn check_stack_name(name: &str) -> Result<(), SettingsError> {
    let problem = if name.is_empty() {
        Some("empty")
    } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("does not start with a letter")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Some("holds a character other than a letter, digit or '-'")
    } else if name.len() > MAX_STACK_NAME_LEN {
        Some("longer than 57 characters")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(invalid("stack_name", name, reason, STACK_NAME_FORM)),
        None => Ok(()),
    }
}

/// Checks `existing_table`: a DynamoDB table name, 3 to 255 characters of `[A-Za-z0-9_.-]`
/// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html).
///
/// [`StackSettings::validate`] applies it too; it is public so that a command line can refuse a
/// bad `--existing-table` while parsing its arguments.
pub fn check_existing_table(name: &str) -> Result<(), SettingsError> {
    let problem = if name.len() < 3 {
        Some("shorter than 3 characters")
    } else if name.len() > 255 {
        Some("longer than 255 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Some("holds a character other than a letter, digit, '_', '.' or '-'")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(invalid("existing_table", name, reason, TABLE_FORM)),
        None => Ok(()),
    }
}

/// Checks `existing_bucket` by the function's rule for its `BUCKET_NAME`.
///
/// [`StackSettings::validate`] applies it too; it is public so that a command line can refuse a
/// bad `--existing-bucket` while parsing its arguments.
pub fn check_existing_bucket(name: &str) -> Result<(), SettingsError> {
    config::check_bucket_name(name)
        .map_err(|reason| invalid("existing_bucket", name, reason, BUCKET_FORM))
}

/// Checks `alarm_email`: the shape of one address as SNS takes it for an `email` subscription
/// (local-part@domain, the domain with a dot), at most 254 characters (RFC 5321's limit on a
/// path), with no spaces, control characters, commas or angle brackets (a list or a display
/// name, not an address).
fn check_alarm_email(email: &str) -> Result<(), SettingsError> {
    let problem = if email.is_empty() {
        Some("empty")
    } else if email.len() > 254 {
        Some("longer than 254 characters")
    } else if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '<' | '>'))
    {
        Some("holds a space, control character, ',', ';', '<' or '>'")
    } else {
        match email.split_once('@') {
            None => Some("has no '@'"),
            Some((_, domain)) if domain.contains('@') => Some("has more than one '@'"),
            Some(("", _)) => Some("has nothing before the '@'"),
            Some((_, domain))
                if !domain.contains('.')
                    || domain.starts_with('.')
                    || domain.ends_with('.')
                    || domain.contains("..") =>
            {
                Some("has no domain such as example.com after the '@'")
            }
            Some(_) => None,
        }
    };
    match problem {
        Some(reason) => Err(invalid("alarm_email", email, reason, EMAIL_FORM)),
        None => Ok(()),
    }
}

/// Checks `alarm_topic_arn`: `arn:<partition>:sns:<region>:<account>:<topic name>`, the account
/// 12 digits and the name 1 to 256 letters, digits, `-` and `_` (optionally ending in `.fifo`),
/// as SNS names topics
/// (https://docs.aws.amazon.com/sns/latest/api/API_CreateTopic.html#API_CreateTopic_RequestParameters).
fn check_alarm_topic_arn(arn: &str) -> Result<(), SettingsError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let lower_word = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let problem = match parts.as_slice() {
        ["arn", partition, service, region, account, name] => {
            let base = name.strip_suffix(".fifo").unwrap_or(name);
            if !partition.starts_with("aws") || !lower_word(partition) {
                Some("the partition is not aws, aws-cn, aws-us-gov or another aws partition")
            } else if *service != "sns" {
                Some("not an SNS ARN (the service is not sns)")
            } else if !lower_word(region) {
                Some("has no region such as eu-west-1")
            } else if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                Some("the account is not 12 digits")
            } else if base.is_empty()
                || name.len() > 256
                || !base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                Some("the topic name is not 1 to 256 letters, digits, '-' and '_'")
            } else {
                None
            }
        }
        ["arn", ..] => Some("not an SNS topic ARN: a topic ARN has six ':'-separated parts"),
        _ => Some("does not start with \"arn:\""),
    };
    match problem {
        Some(reason) => Err(invalid("alarm_topic_arn", arn, reason, TOPIC_ARN_FORM)),
        None => Ok(()),
    }
}

/// `max_concurrency` by the function's rule (its `MAX_CONCURRENCY`).
fn check_max_concurrency(n: u32) -> Result<(), SettingsError> {
    let accepted = usize::try_from(n).is_ok_and(|n| config::check_max_concurrency(n).is_ok());
    if accepted {
        Ok(())
    } else {
        Err(SettingsError::OutOfRange {
            setting: "max_concurrency",
            value: i64::from(n),
            expected: CONCURRENCY_FORM,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut StackSettings)) -> StackSettings {
        let mut settings = StackSettings::default();
        change(&mut settings);
        settings
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let s = StackSettings::default();
        assert_eq!(s.stack_name, "usersync");
        assert_eq!(s.batch_size, 100);
        assert_eq!(s.maximum_batching_window_seconds, 1);
        assert_eq!(s.parallelization_factor, 1);
        assert_eq!(s.maximum_retry_attempts, 5);
        assert_eq!(s.maximum_record_age_seconds, 3600);
        assert!(s.bisect_batch_on_function_error);
        assert_eq!(s.memory_mb, 256);
        assert_eq!(s.timeout_seconds, 60);
        assert_eq!(s.delete_scope, DeleteScope::Object);
        assert_eq!(s.key_prefix, "");
        assert_eq!(s.object_name, "userdata");
        assert_eq!(s.max_concurrency, None);
        assert_eq!(s.log_retention_days, 14);
        assert!(!s.retain_data_on_teardown);
        assert_eq!(s.architecture, Architecture::Arm64);
        assert_eq!(s.existing_table, None);
        assert_eq!(s.existing_bucket, None);
        assert_eq!(s.alarm_iterator_age_seconds, 60);
        assert_eq!(s.alarm_email, None);
        assert_eq!(s.alarm_topic_arn, None);
        s.validate().unwrap();
    }

    #[test]
    fn the_longest_stack_name_keeps_the_function_name_legal() {
        assert_eq!(MAX_STACK_NAME_LEN, 57);
        with(|s| s.stack_name = format!("a{}", "-".repeat(56)))
            .validate()
            .unwrap();
        assert!(STACK_NAME_FORM.starts_with(&format!("1 to {MAX_STACK_NAME_LEN} ")));
    }

    #[test]
    fn the_retention_form_lists_exactly_the_allowed_periods() {
        let listed: Vec<u32> = RETENTION_FORM
            .trim_start_matches("one of ")
            .split([',', ' '])
            .filter_map(|word| word.parse().ok())
            .collect();
        assert_eq!(listed, LOG_RETENTION_DAYS);
    }

    #[test]
    fn boundary_values_are_accepted() {
        let ok = [
            with(|s| s.batch_size = 1),
            with(|s| s.batch_size = 10_000),
            with(|s| s.maximum_batching_window_seconds = 0),
            with(|s| s.maximum_batching_window_seconds = 300),
            with(|s| s.parallelization_factor = 1),
            with(|s| s.parallelization_factor = 10),
            with(|s| s.maximum_retry_attempts = -1),
            with(|s| s.maximum_retry_attempts = 10_000),
            with(|s| s.maximum_record_age_seconds = -1),
            with(|s| s.maximum_record_age_seconds = 60),
            with(|s| s.maximum_record_age_seconds = 604_800),
            with(|s| s.memory_mb = 128),
            with(|s| s.memory_mb = 10_240),
            with(|s| s.timeout_seconds = 1),
            with(|s| s.timeout_seconds = 900),
            with(|s| s.max_concurrency = Some(1)),
            with(|s| s.max_concurrency = Some(1024)),
            with(|s| s.log_retention_days = 3653),
            with(|s| s.key_prefix = "x".repeat(512)),
            with(|s| s.object_name = "profile.json".to_owned()),
            with(|s| s.existing_table = Some("abc".to_owned())),
            with(|s| s.existing_table = Some("T".repeat(255))),
            with(|s| s.existing_table = Some("Users_v2.prod-1".to_owned())),
            with(|s| s.existing_bucket = Some("abc".to_owned())),
            with(|s| s.existing_bucket = Some("users.mirror-1".to_owned())),
            with(|s| s.alarm_iterator_age_seconds = 1),
            with(|s| s.alarm_iterator_age_seconds = 86_400),
            with(|s| s.alarm_email = Some("ops@example.com".to_owned())),
            with(|s| s.alarm_email = Some("on-call+usersync@ops.example.co.uk".to_owned())),
            with(|s| {
                s.alarm_topic_arn = Some("arn:aws:sns:eu-west-1:123456789012:ops-alarms".to_owned())
            }),
            with(|s| {
                s.alarm_topic_arn =
                    Some("arn:aws-us-gov:sns:us-gov-west-1:123456789012:Ops_Alarms".to_owned())
            }),
            with(|s| {
                s.alarm_topic_arn = Some(format!(
                    "arn:aws-cn:sns:cn-north-1:123456789012:{}",
                    "t".repeat(256)
                ))
            }),
        ];
        for settings in ok {
            settings
                .validate()
                .unwrap_or_else(|err| panic!("{settings:?} should be valid: {err}"));
        }
    }

    #[test]
    fn invalid_values_name_the_setting_the_value_and_the_allowed_form() {
        let cases = [
            (
                with(|s| s.batch_size = 0),
                "batch_size 0 is out of range: expected 1 to 10000",
            ),
            (
                with(|s| s.batch_size = 10_001),
                "batch_size 10001 is out of range: expected 1 to 10000",
            ),
            (
                with(|s| s.maximum_batching_window_seconds = 301),
                "maximum_batching_window_seconds 301 is out of range: expected 0 to 300",
            ),
            (
                with(|s| s.parallelization_factor = 0),
                "parallelization_factor 0 is out of range: expected 1 to 10",
            ),
            (
                with(|s| s.parallelization_factor = 11),
                "parallelization_factor 11 is out of range: expected 1 to 10",
            ),
            (
                with(|s| s.maximum_retry_attempts = -2),
                "maximum_retry_attempts -2 is out of range: expected -1 (retry until the record expires) or 0 to 10000",
            ),
            (
                with(|s| s.maximum_record_age_seconds = 59),
                "maximum_record_age_seconds 59 is out of range: expected -1 (no limit) or 60 to 604800",
            ),
            (
                with(|s| s.maximum_record_age_seconds = 0),
                "maximum_record_age_seconds 0 is out of range",
            ),
            (
                with(|s| s.memory_mb = 127),
                "memory_mb 127 is out of range: expected 128 to 10240",
            ),
            (
                with(|s| s.timeout_seconds = 901),
                "timeout_seconds 901 is out of range: expected 1 to 900",
            ),
            (
                with(|s| s.max_concurrency = Some(0)),
                "max_concurrency 0 is out of range: expected 1 to 1024",
            ),
            (
                with(|s| s.max_concurrency = Some(1025)),
                "max_concurrency 1025 is out of range: expected 1 to 1024",
            ),
            (
                with(|s| s.max_concurrency = Some(u32::MAX)),
                "max_concurrency 4294967295 is out of range: expected 1 to 1024",
            ),
            (
                with(|s| s.log_retention_days = 10),
                "log_retention_days 10 is out of range: expected one of 1, 3, 5, 7, 14,",
            ),
            (
                with(|s| s.stack_name = String::new()),
                "stack_name \"\" is invalid: empty; expected 1 to 57 characters",
            ),
            (
                with(|s| s.stack_name = "1stack".to_owned()),
                "stack_name \"1stack\" is invalid: does not start with a letter",
            ),
            (
                with(|s| s.stack_name = "my_stack".to_owned()),
                "stack_name \"my_stack\" is invalid: holds a character other than",
            ),
            (
                with(|s| s.stack_name = "a".repeat(58)),
                "is invalid: longer than 57 characters",
            ),
            (
                with(|s| s.key_prefix = "a\nb".to_owned()),
                "key_prefix \"a\\nb\" is invalid: contains a control character; expected a key prefix",
            ),
            (
                with(|s| s.key_prefix = "x".repeat(513)),
                "is invalid: longer than 512 bytes",
            ),
            (
                with(|s| s.object_name = "a/b".to_owned()),
                "object_name \"a/b\" is invalid: contains '/'; expected an object name",
            ),
            (
                with(|s| s.object_name = String::new()),
                "object_name \"\" is invalid: empty",
            ),
            (
                with(|s| s.object_name = "..".to_owned()),
                "object_name \"..\" is invalid: is a relative path segment",
            ),
            (
                with(|s| s.object_name = "o".repeat(256)),
                "is invalid: longer than 255 bytes; expected an object name",
            ),
            (
                with(|s| s.existing_table = Some("ab".to_owned())),
                "existing_table \"ab\" is invalid: shorter than 3 characters; expected the name \
                 of an existing DynamoDB table: 3 to 255 characters",
            ),
            (
                with(|s| s.existing_table = Some("t".repeat(256))),
                "is invalid: longer than 255 characters; expected the name of an existing DynamoDB",
            ),
            (
                with(|s| s.existing_table = Some("users table".to_owned())),
                "existing_table \"users table\" is invalid: holds a character other than a \
                 letter, digit, '_', '.' or '-'",
            ),
            (
                with(|s| s.existing_bucket = Some("Users".to_owned())),
                "existing_bucket \"Users\" is invalid: may hold only lowercase letters, digits, \
                 '.' and '-'; expected the name of an existing S3 bucket",
            ),
            (
                with(|s| s.existing_bucket = Some("ab".to_owned())),
                "existing_bucket \"ab\" is invalid: must be 3 to 63 characters long",
            ),
            (
                with(|s| s.alarm_iterator_age_seconds = 0),
                "alarm_iterator_age_seconds 0 is out of range: expected 1 to 86400 seconds \
                 (DynamoDB Streams keep a record 24 hours)",
            ),
            (
                with(|s| s.alarm_iterator_age_seconds = 86_401),
                "alarm_iterator_age_seconds 86401 is out of range: expected 1 to 86400",
            ),
            (
                with(|s| s.alarm_email = Some("ops.example.com".to_owned())),
                "alarm_email \"ops.example.com\" is invalid: has no '@'; expected one email \
                 address of at most 254 characters, local-part@domain, such as \
                 \"ops@example.com\"",
            ),
            (
                with(|s| s.alarm_email = Some(String::new())),
                "alarm_email \"\" is invalid: empty",
            ),
            (
                with(|s| s.alarm_email = Some("@example.com".to_owned())),
                "is invalid: has nothing before the '@'",
            ),
            (
                with(|s| s.alarm_email = Some("ops@localhost".to_owned())),
                "is invalid: has no domain such as example.com after the '@'",
            ),
            (
                with(|s| s.alarm_email = Some("ops@example..com".to_owned())),
                "is invalid: has no domain such as example.com after the '@'",
            ),
            (
                with(|s| s.alarm_email = Some("a@b@example.com".to_owned())),
                "is invalid: has more than one '@'",
            ),
            (
                with(|s| s.alarm_email = Some("ops@example.com, dev@example.com".to_owned())),
                "is invalid: holds a space, control character, ',', ';', '<' or '>'",
            ),
            (
                with(|s| s.alarm_email = Some("Ops <ops@example.com>".to_owned())),
                "is invalid: holds a space",
            ),
            (
                with(|s| s.alarm_email = Some(format!("{}@example.com", "o".repeat(243)))),
                "is invalid: longer than 254 characters",
            ),
            (
                with(|s| s.alarm_topic_arn = Some("ops-alarms".to_owned())),
                "alarm_topic_arn \"ops-alarms\" is invalid: does not start with \"arn:\"; \
                 expected the ARN of an existing SNS topic",
            ),
            (
                with(|s| {
                    s.alarm_topic_arn =
                        Some("arn:aws:sqs:eu-west-1:123456789012:ops-alarms".to_owned())
                }),
                "is invalid: not an SNS ARN (the service is not sns)",
            ),
            (
                with(|s| {
                    s.alarm_topic_arn = Some(
                        "arn:aws:sns:eu-west-1:123456789012:ops-alarms:0f3c2b4e-1a2b-4c5d-8e9f-0a1b2c3d4e5f"
                            .to_owned(),
                    )
                }),
                "is invalid: not an SNS topic ARN: a topic ARN has six ':'-separated parts",
            ),
            (
                with(|s| {
                    s.alarm_topic_arn = Some("arn:aws:sns:eu-west-1:1234:ops-alarms".to_owned())
                }),
                "is invalid: the account is not 12 digits",
            ),
            (
                with(|s| s.alarm_topic_arn = Some("arn:aws:sns::123456789012:ops".to_owned())),
                "is invalid: has no region such as eu-west-1",
            ),
            (
                with(|s| s.alarm_topic_arn = Some("arn:gcp:sns:eu-west-1:123456789012:ops".to_owned())),
                "is invalid: the partition is not aws",
            ),
            (
                with(|s| {
                    s.alarm_topic_arn = Some("arn:aws:sns:eu-west-1:123456789012:ops alarms".to_owned())
                }),
                "is invalid: the topic name is not 1 to 256 letters, digits, '-' and '_'",
            ),
            (
                with(|s| {
                    s.alarm_topic_arn = Some("arn:aws:sns:eu-west-1:123456789012:".to_owned())
                }),
                "is invalid: the topic name is not 1 to 256",
            ),
        ];
        for (settings, expected) in cases {
            let message = settings.validate().unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn an_alarm_email_and_an_alarm_topic_together_are_refused_naming_both() {
        let both = with(|s| {
            s.alarm_email = Some("ops@example.com".to_owned());
            s.alarm_topic_arn = Some("arn:aws:sns:eu-west-1:123456789012:ops-alarms".to_owned());
        });
        let err = both.validate().unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::Conflict {
                    first: "alarm_email",
                    second: "alarm_topic_arn",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "alarm_email and alarm_topic_arn are both set: keep alarm_email for a topic the \
             stack creates with that one subscription, or alarm_topic_arn to notify a topic that \
             exists already, not both"
        );
        // From a file, the message names the file first.
        let message = StackSettings::from_toml_str(
            "alarm_email = \"ops@example.com\"\n\
             alarm_topic_arn = \"arn:aws:sns:eu-west-1:123456789012:ops-alarms\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with("alarm_email and alarm_topic_arn are both set"),
            "{message}"
        );
    }

    #[test]
    fn the_limits_and_defaults_are_the_function_s() {
        assert_eq!(
            usize::try_from(MAX_MAX_CONCURRENCY).unwrap(),
            config::MAX_MAX_CONCURRENCY
        );
        assert_eq!(
            CONCURRENCY_FORM,
            format!(
                "{} to {}",
                config::MIN_MAX_CONCURRENCY,
                config::MAX_MAX_CONCURRENCY
            )
        );
        assert!(PREFIX_FORM.contains(&format!("at most {} bytes", config::MAX_KEY_PREFIX_BYTES)));
        assert!(
            OBJECT_NAME_FORM.contains(&format!("at most {} bytes", config::MAX_OBJECT_NAME_BYTES))
        );
        let defaults = StackSettings::default();
        assert_eq!(defaults.object_name, config::DEFAULT_OBJECT_NAME);
        assert_eq!(defaults.delete_scope, DeleteScope::default());
    }

    #[test]
    fn the_flag_checks_are_the_settings_checks() {
        assert!(check_existing_table("users").is_ok());
        assert!(check_existing_bucket("users-mirror").is_ok());
        for (check, value, setting) in [
            (check_existing_table as fn(&str) -> _, "x", "existing_table"),
            (check_existing_bucket, "a_b", "existing_bucket"),
        ] {
            let err = check(value).unwrap_err();
            assert!(
                matches!(err, SettingsError::Invalid { setting: s, .. } if s == setting),
                "{err:?}"
            );
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(
            StackSettings::from_toml_str("").unwrap(),
            StackSettings::default()
        );
    }

    #[test]
    fn every_key_is_read_from_toml() {
        let text = r#"
            stack_name = "users-dev"
            batch_size = 500
            maximum_batching_window_seconds = 0
            parallelization_factor = 10
            maximum_retry_attempts = -1
            maximum_record_age_seconds = -1
            bisect_batch_on_function_error = false
            memory_mb = 1024
            timeout_seconds = 120
            delete_scope = "prefix"
            key_prefix = "users/"
            object_name = "profile.json"
            max_concurrency = 16
            log_retention_days = 30
            retain_data_on_teardown = true
            architecture = "x86_64"
            existing_table = "users"
            existing_bucket = "users-mirror"
            alarm_iterator_age_seconds = 120
            alarm_email = "ops@example.com"
        "#;
        let expected = StackSettings {
            stack_name: "users-dev".to_owned(),
            batch_size: 500,
            maximum_batching_window_seconds: 0,
            parallelization_factor: 10,
            maximum_retry_attempts: -1,
            maximum_record_age_seconds: -1,
            bisect_batch_on_function_error: false,
            memory_mb: 1024,
            timeout_seconds: 120,
            delete_scope: DeleteScope::Prefix,
            key_prefix: "users/".to_owned(),
            object_name: "profile.json".to_owned(),
            max_concurrency: Some(16),
            log_retention_days: 30,
            retain_data_on_teardown: true,
            architecture: Architecture::X86_64,
            existing_table: Some("users".to_owned()),
            existing_bucket: Some("users-mirror".to_owned()),
            alarm_iterator_age_seconds: 120,
            alarm_email: Some("ops@example.com".to_owned()),
            alarm_topic_arn: None,
        };
        assert_eq!(StackSettings::from_toml_str(text).unwrap(), expected);
        let topic = StackSettings::from_toml_str(
            "alarm_topic_arn = \"arn:aws:sns:eu-west-1:123456789012:ops-alarms\"",
        )
        .unwrap();
        assert_eq!(
            topic.alarm_topic_arn.as_deref(),
            Some("arn:aws:sns:eu-west-1:123456789012:ops-alarms")
        );
    }

    #[test]
    fn settings_survive_a_toml_round_trip() {
        let settings = with(|s| {
            s.delete_scope = DeleteScope::Prefix;
            s.architecture = Architecture::X86_64;
            s.max_concurrency = Some(8);
            s.existing_table = Some("users".to_owned());
            s.alarm_iterator_age_seconds = 300;
            s.alarm_email = Some("ops@example.com".to_owned());
        });
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(StackSettings::from_toml_str(&text).unwrap(), settings);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let message = StackSettings::from_toml_str("batch_size = 10\nbatchsize = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("invalid settings in TOML text: "),
            "{message}"
        );
        assert!(message.contains("unknown field `batchsize`"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn wrong_types_and_unknown_enum_values_are_parse_errors() {
        for (text, fragment) in [
            ("batch_size = \"ten\"", "batch_size"),
            ("batch_size = -1", "batch_size"),
            ("parallelization_factor = 2.5", "parallelization_factor"),
            ("delete_scope = \"all\"", "unknown variant `all`"),
            ("architecture = \"aarch64\"", "unknown variant `aarch64`"),
            ("memory_mb = ", "memory_mb"),
        ] {
            let err = StackSettings::from_toml_str(text).unwrap_err();
            assert!(matches!(err, SettingsError::Parse { .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains(fragment),
                "{message:?} should name {fragment:?}"
            );
        }
    }

    #[test]
    fn a_parsed_value_out_of_range_is_rejected() {
        let message = StackSettings::from_toml_str("timeout_seconds = 0")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "timeout_seconds 0 is out of range: expected 1 to 900"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();

        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "stack = \"x\"\n").unwrap();
        let message = StackSettings::from_file(&unknown).unwrap_err().to_string();
        assert!(
            message.contains(&unknown.display().to_string()),
            "{message}"
        );
        assert!(message.contains("unknown field `stack`"), "{message}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "memory_mb = 64\n").unwrap();
        let message = StackSettings::from_file(&bad).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "invalid settings in {}: memory_mb 64 is out of range: expected 128 to 10240",
                bad.display()
            )
        );

        let missing = dir.path().join("missing.toml");
        // The message names the file; the operating system's error is its source, which the
        // chain prints after it.
        let err = StackSettings::from_file(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read settings file {}", missing.display())
        );
        let source = std::error::Error::source(&err).expect("the I/O error is the source");
        assert!(
            source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound),
            "{source:?}"
        );

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "stack_name = \"users-test\"\n").unwrap();
        assert_eq!(
            StackSettings::from_file(&good).unwrap().stack_name,
            "users-test"
        );
    }

    #[test]
    fn enums_parse_from_flags_and_print_as_aws_spells_them() {
        assert_eq!(
            "prefix".parse::<DeleteScope>().unwrap(),
            DeleteScope::Prefix
        );
        assert_eq!(
            "object".parse::<DeleteScope>().unwrap(),
            DeleteScope::Object
        );
        assert_eq!(
            "x86_64".parse::<Architecture>().unwrap(),
            Architecture::X86_64
        );
        assert_eq!(Architecture::Arm64.to_string(), "arm64");
        assert_eq!(DeleteScope::Prefix.to_string(), "prefix");
        assert_eq!(parse_delete_scope("prefix").unwrap(), DeleteScope::Prefix);
        assert_eq!(parse_delete_scope("object").unwrap(), DeleteScope::Object);
        assert_eq!(
            parse_delete_scope("all").unwrap_err().to_string(),
            "delete_scope \"all\" is invalid: unknown scope; expected \"object\" or \"prefix\""
        );
        assert_eq!(
            "amd64".parse::<Architecture>().unwrap_err().to_string(),
            "architecture \"amd64\" is invalid: unknown architecture; expected \"arm64\" or \"x86_64\""
        );
    }
}
