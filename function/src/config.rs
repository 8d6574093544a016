//! Function settings, read and validated once at cold start.
//!
//! This module is the function's configuration contract: the names of its environment
//! variables ([`vars`]), their defaults, and the rule each value must follow
//! ([`check_bucket_name`], [`check_key_prefix`], [`check_object_name`],
//! [`parse_max_concurrency`], [`check_key_attribute`], [`DeleteScope`]'s `FromStr`). The
//! deployer validates its settings with the same rules, so that a stack that deploys also
//! starts. Each rule returns only the reason a value breaks it; callers word the message around
//! it ([`ConfigError`] here, naming the variable and the expected form).

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The names of the function's environment variables.
pub mod vars {
    /// The bucket the users are mirrored to (required).
    pub const BUCKET_NAME: &str = "BUCKET_NAME";
    /// Prefix of every key the function writes (default empty).
    pub const KEY_PREFIX: &str = "KEY_PREFIX";
    /// Name of each user's object under its prefix (default
    /// [`DEFAULT_OBJECT_NAME`](super::DEFAULT_OBJECT_NAME)).
    pub const OBJECT_NAME: &str = "OBJECT_NAME";
    /// What a `REMOVE` deletes: `object` (the default) or `prefix`; see
    /// [`DeleteScope`](super::DeleteScope).
    pub const DELETE_SCOPE: &str = "DELETE_SCOPE";
    /// Most users worked on at once (default
    /// [`DEFAULT_MAX_CONCURRENCY`](super::DEFAULT_MAX_CONCURRENCY)).
    pub const MAX_CONCURRENCY: &str = "MAX_CONCURRENCY";
    /// The table's string hash key attribute (default
    /// [`DEFAULT_KEY_ATTRIBUTE`](super::DEFAULT_KEY_ATTRIBUTE)).
    pub const KEY_ATTRIBUTE: &str = "KEY_ATTRIBUTE";
    /// Path-style S3 addressing, as emulators usually need: `true`/`1` or `false`/`0` (the
    /// default).
    pub const S3_FORCE_PATH_STYLE: &str = "S3_FORCE_PATH_STYLE";

    /// Every variable the function reads.
    pub const ALL: [&str; 7] = [
        BUCKET_NAME,
        KEY_PREFIX,
        OBJECT_NAME,
        DELETE_SCOPE,
        MAX_CONCURRENCY,
        KEY_ATTRIBUTE,
        S3_FORCE_PATH_STYLE,
    ];
}

/// The most users the function works on at once unless `MAX_CONCURRENCY` says otherwise.
///
/// Each user costs one in-flight S3 request, so this bounds the connection pool and the memory
/// held by bodies in flight. Measured by `cargo xtask bench` (README, Benchmarks): throughput is
/// flat from 16 to 128 against the emulator and best at 64; real S3's higher latency rewards
/// concurrency, and 64 keeps a 256 MB function well inside its memory and far from S3's
/// per-prefix limit (3,500 writes per second).
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// The lowest `MAX_CONCURRENCY` accepted.
pub const MIN_MAX_CONCURRENCY: usize = 1;
/// The highest `MAX_CONCURRENCY` accepted.
pub const MAX_MAX_CONCURRENCY: usize = 1024;

/// The longest `KEY_PREFIX` accepted, in bytes.
pub const MAX_KEY_PREFIX_BYTES: usize = 512;
/// The longest `OBJECT_NAME` accepted, in bytes.
pub const MAX_OBJECT_NAME_BYTES: usize = 255;

/// `OBJECT_NAME` when it is not set.
pub const DEFAULT_OBJECT_NAME: &str = "userdata";
/// `KEY_ATTRIBUTE` when it is not set.
pub const DEFAULT_KEY_ATTRIBUTE: &str = "name";

/// What a `REMOVE` deletes (`DELETE_SCOPE`): `object` or `prefix`, as the variable, the
/// deployer's settings file and serde spell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteScope {
    /// Only the user's object, `<KEY_PREFIX><name>/<OBJECT_NAME>`.
    #[default]
    Object,
    /// Every object under the user's prefix, `<KEY_PREFIX><name>/`.
    Prefix,
}

impl DeleteScope {
    /// Both scopes.
    pub const ALL: [DeleteScope; 2] = [DeleteScope::Object, DeleteScope::Prefix];

    /// The value as `DELETE_SCOPE` spells it: `object` or `prefix`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Prefix => "prefix",
        }
    }
}

impl fmt::Display for DeleteScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeleteScope {
    /// The reason the text is no scope.
    type Err = &'static str;

    /// Parses `object` or `prefix`, exactly (the function trims `DELETE_SCOPE` first).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "object" => Ok(Self::Object),
            "prefix" => Ok(Self::Prefix),
            _ => Err("unknown scope"),
        }
    }
}

/// Validated settings of the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub bucket: String,
    pub key_prefix: String,
    pub object_name: String,
    pub delete_scope: DeleteScope,
    pub max_concurrency: NonZeroUsize,
    pub key_attribute: String,
    pub force_path_style: bool,
}

/// A setting that is missing or malformed; the message names the variable and the expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{variable} is not set: set it to {expected}")]
    Missing {
        variable: &'static str,
        expected: &'static str,
    },
    #[error("{variable}={value:?} is invalid: {reason}; expected {expected}")]
    Invalid {
        variable: &'static str,
        value: String,
        reason: String,
        expected: &'static str,
    },
}

const BUCKET_FORM: &str = "an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)";
const PREFIX_FORM: &str =
    "a key prefix of at most 512 bytes without control characters, such as \"users/\"";
const OBJECT_NAME_FORM: &str =
    "an object name of at most 255 bytes without '/' or control characters, not '.' or '..', such as \"userdata\"";
const SCOPE_FORM: &str = "\"object\" or \"prefix\"";
const CONCURRENCY_FORM: &str = "a whole number from 1 to 1024";
const ATTRIBUTE_FORM: &str = "the name of the table's string hash key attribute, such as \"name\"";
const BOOL_FORM: &str = "\"true\" or \"false\"";

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, which returns a variable's value if it is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bucket = lookup(vars::BUCKET_NAME).ok_or(ConfigError::Missing {
            variable: vars::BUCKET_NAME,
            expected: BUCKET_FORM,
        })?;
        check_bucket_name(&bucket)
            .map_err(|reason| invalid(vars::BUCKET_NAME, &bucket, reason, BUCKET_FORM))?;

        let key_prefix = lookup(vars::KEY_PREFIX).unwrap_or_default();
        check_key_prefix(&key_prefix)
            .map_err(|reason| invalid(vars::KEY_PREFIX, &key_prefix, reason, PREFIX_FORM))?;

        let object_name =
            lookup(vars::OBJECT_NAME).unwrap_or_else(|| DEFAULT_OBJECT_NAME.to_owned());
        check_object_name(&object_name)
            .map_err(|reason| invalid(vars::OBJECT_NAME, &object_name, reason, OBJECT_NAME_FORM))?;

        let delete_scope = match lookup(vars::DELETE_SCOPE).as_deref().map(str::trim) {
            None => DeleteScope::Object,
            Some(text) => text
                .parse()
                .map_err(|reason| invalid(vars::DELETE_SCOPE, text, reason, SCOPE_FORM))?,
        };

        let max_concurrency = match lookup(vars::MAX_CONCURRENCY) {
            None => NonZeroUsize::new(DEFAULT_MAX_CONCURRENCY).expect("default is non-zero"),
            Some(raw) => parse_max_concurrency(&raw)
                .map_err(|reason| invalid(vars::MAX_CONCURRENCY, &raw, reason, CONCURRENCY_FORM))?,
        };

        let key_attribute =
            lookup(vars::KEY_ATTRIBUTE).unwrap_or_else(|| DEFAULT_KEY_ATTRIBUTE.to_owned());
        check_key_attribute(&key_attribute).map_err(|reason| {
            invalid(vars::KEY_ATTRIBUTE, &key_attribute, reason, ATTRIBUTE_FORM)
        })?;

        let force_path_style = match lookup(vars::S3_FORCE_PATH_STYLE).as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(invalid(
                    vars::S3_FORCE_PATH_STYLE,
                    other,
                    "not a boolean",
                    BOOL_FORM,
                ))
            }
        };

        Ok(Self {
            bucket,
            key_prefix,
            object_name,
            delete_scope,
            max_concurrency,
            key_attribute,
            force_path_style,
        })
    }
}

fn invalid(
    variable: &'static str,
    value: &str,
    reason: impl Into<String>,
    expected: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
        expected,
    }
}

/// Checks `BUCKET_NAME`: the general-purpose bucket naming rules that apply in every region
/// (3 to 63 characters of `a-z`, `0-9`, `.` and `-`, starting and ending with a letter or
/// digit, no `..`). Returns the reason a name breaks them.
pub fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("may hold only lowercase letters, digits, '.' and '-'");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("must not contain two adjacent periods");
    }
    Ok(())
}

/// Checks `KEY_PREFIX`: at most [`MAX_KEY_PREFIX_BYTES`] bytes, no control characters; empty
/// is allowed. Returns the reason a prefix breaks the rule.
pub fn check_key_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.len() > MAX_KEY_PREFIX_BYTES {
        return Err("longer than 512 bytes");
    }
    if prefix.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    Ok(())
}

/// Checks `OBJECT_NAME`: one key segment of 1 to [`MAX_OBJECT_NAME_BYTES`] bytes, without `/`
/// or control characters, and not `.` or `..`. Returns the reason a name breaks the rule.
pub fn check_object_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty")
    } else if name.contains('/') {
        Err("contains '/'")
    } else if name == "." || name == ".." {
        Err("is a relative path segment")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.len() > MAX_OBJECT_NAME_BYTES {
        Err("longer than 255 bytes")
    } else {
        Ok(())
    }
}

/// Checks a concurrency: [`MIN_MAX_CONCURRENCY`] to [`MAX_MAX_CONCURRENCY`]. Returns it as
/// the function holds it, or the reason it is refused.
pub fn check_max_concurrency(n: usize) -> Result<NonZeroUsize, &'static str> {
    if (MIN_MAX_CONCURRENCY..=MAX_MAX_CONCURRENCY).contains(&n) {
        NonZeroUsize::new(n).ok_or("out of range")
    } else {
        Err("out of range")
    }
}

/// Parses `MAX_CONCURRENCY`: a whole number (surrounding whitespace ignored) that
/// [`check_max_concurrency`] accepts. Returns the reason the text is refused.
pub fn parse_max_concurrency(text: &str) -> Result<NonZeroUsize, &'static str> {
    let n = text
        .trim()
        .parse::<usize>()
        .map_err(|_| "not a whole number")?;
    check_max_concurrency(n)
}

/// Checks `KEY_ATTRIBUTE`: not empty or only whitespace. Returns the reason a name is refused.
pub fn check_key_attribute(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        Err("empty")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_bucket_is_set() {
        let config = config(&[("BUCKET_NAME", "users-data")]).unwrap();
        assert_eq!(config.bucket, "users-data");
        assert_eq!(config.key_prefix, "");
        assert_eq!(config.object_name, "userdata");
        assert_eq!(config.delete_scope, DeleteScope::Object);
        assert_eq!(config.max_concurrency.get(), DEFAULT_MAX_CONCURRENCY);
        assert_eq!(config.key_attribute, "name");
        assert!(!config.force_path_style);
    }

    #[test]
    fn every_setting_is_read() {
        let config = config(&[
            ("BUCKET_NAME", "b.example-1"),
            ("KEY_PREFIX", "users/"),
            ("OBJECT_NAME", "profile.json"),
            ("DELETE_SCOPE", "prefix"),
            ("MAX_CONCURRENCY", "8"),
            ("KEY_ATTRIBUTE", "id"),
            ("S3_FORCE_PATH_STYLE", "true"),
        ])
        .unwrap();
        assert_eq!(config.key_prefix, "users/");
        assert_eq!(config.object_name, "profile.json");
        assert_eq!(config.delete_scope, DeleteScope::Prefix);
        assert_eq!(config.max_concurrency.get(), 8);
        assert_eq!(config.key_attribute, "id");
        assert!(config.force_path_style);
    }

    #[test]
    fn a_missing_bucket_names_the_variable() {
        let err = config(&[]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                variable: "BUCKET_NAME",
                ..
            }
        ));
        assert!(err
            .to_string()
            .starts_with("BUCKET_NAME is not set: set it to an S3 bucket name"));
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_expected_form() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: &[(Vars, &str, &str)] = &[
            (&[("BUCKET_NAME", "Users")], "BUCKET_NAME", "lowercase"),
            (&[("BUCKET_NAME", "ab")], "BUCKET_NAME", "3 to 63"),
            (&[("BUCKET_NAME", "-abc")], "BUCKET_NAME", "start and end"),
            (
                &[("BUCKET_NAME", "a..b")],
                "BUCKET_NAME",
                "adjacent periods",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("OBJECT_NAME", "a/b")],
                "OBJECT_NAME",
                "'/'",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("OBJECT_NAME", "..")],
                "OBJECT_NAME",
                "relative",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("OBJECT_NAME", "")],
                "OBJECT_NAME",
                "empty",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("KEY_PREFIX", "a\nb")],
                "KEY_PREFIX",
                "control",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("DELETE_SCOPE", "all")],
                "DELETE_SCOPE",
                "\"object\" or \"prefix\"",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("MAX_CONCURRENCY", "0")],
                "MAX_CONCURRENCY",
                "1 to 1024",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("MAX_CONCURRENCY", "many")],
                "MAX_CONCURRENCY",
                "whole number",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("MAX_CONCURRENCY", "5000")],
                "MAX_CONCURRENCY",
                "out of range",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("KEY_ATTRIBUTE", " ")],
                "KEY_ATTRIBUTE",
                "empty",
            ),
            (
                &[("BUCKET_NAME", "ok-bucket"), ("S3_FORCE_PATH_STYLE", "yes")],
                "S3_FORCE_PATH_STYLE",
                "\"true\" or \"false\"",
            ),
        ];
        for (vars, variable, fragment) in cases {
            let message = config(vars).unwrap_err().to_string();
            assert!(
                message.starts_with(variable),
                "{message:?} should start with {variable}"
            );
            assert!(
                message.contains(fragment),
                "{message:?} should mention {fragment:?}"
            );
        }
    }

    #[test]
    fn the_variable_names_are_the_documented_ones() {
        assert_eq!(
            vars::ALL,
            [
                "BUCKET_NAME",
                "KEY_PREFIX",
                "OBJECT_NAME",
                "DELETE_SCOPE",
                "MAX_CONCURRENCY",
                "KEY_ATTRIBUTE",
                "S3_FORCE_PATH_STYLE",
            ]
        );
    }

    #[test]
    fn the_forms_state_the_limits_of_the_rules() {
        assert!(CONCURRENCY_FORM.ends_with(&format!(
            "from {MIN_MAX_CONCURRENCY} to {MAX_MAX_CONCURRENCY}"
        )));
        assert!(PREFIX_FORM.contains(&format!("at most {MAX_KEY_PREFIX_BYTES} bytes")));
        assert!(OBJECT_NAME_FORM.contains(&format!("at most {MAX_OBJECT_NAME_BYTES} bytes")));
        assert!((MIN_MAX_CONCURRENCY..=MAX_MAX_CONCURRENCY).contains(&DEFAULT_MAX_CONCURRENCY));
        assert_eq!(check_object_name(DEFAULT_OBJECT_NAME), Ok(()));
        assert_eq!(check_key_attribute(DEFAULT_KEY_ATTRIBUTE), Ok(()));
    }

    #[test]
    fn bucket_name_rule() {
        for good in ["abc", "users-data", "b.example-1", "0ab", &"a".repeat(63)] {
            assert_eq!(check_bucket_name(good), Ok(()), "{good:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "must be 3 to 63 characters long"),
            ("ab", "must be 3 to 63 characters long"),
            (&"a".repeat(64), "must be 3 to 63 characters long"),
            (
                "Users",
                "may hold only lowercase letters, digits, '.' and '-'",
            ),
            (
                "a_b",
                "may hold only lowercase letters, digits, '.' and '-'",
            ),
            ("-abc", "must start and end with a letter or digit"),
            ("abc.", "must start and end with a letter or digit"),
            ("a..b", "must not contain two adjacent periods"),
        ];
        for (bad, reason) in cases {
            assert_eq!(check_bucket_name(bad), Err(*reason), "{bad:?}");
        }
    }

    #[test]
    fn key_prefix_rule() {
        for good in ["", "users/", "a b/ü/", &"p".repeat(MAX_KEY_PREFIX_BYTES)] {
            assert_eq!(check_key_prefix(good), Ok(()), "{good:?}");
        }
        let cases: &[(&str, &str)] = &[
            (
                &"p".repeat(MAX_KEY_PREFIX_BYTES + 1),
                "longer than 512 bytes",
            ),
            // Bytes, not characters: 257 two-byte characters are 514 bytes.
            (&"é".repeat(257), "longer than 512 bytes"),
            ("a\nb", "contains a control character"),
            ("users\u{7f}/", "contains a control character"),
        ];
        for (bad, reason) in cases {
            assert_eq!(check_key_prefix(bad), Err(*reason), "{bad:?}");
        }
    }

    #[test]
    fn object_name_rule() {
        for good in [
            "userdata",
            "profile.json",
            "...",
            ".hidden",
            &"o".repeat(MAX_OBJECT_NAME_BYTES),
        ] {
            assert_eq!(check_object_name(good), Ok(()), "{good:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("a/b", "contains '/'"),
            ("/", "contains '/'"),
            (".", "is a relative path segment"),
            ("..", "is a relative path segment"),
            ("a\tb", "contains a control character"),
            (
                &"o".repeat(MAX_OBJECT_NAME_BYTES + 1),
                "longer than 255 bytes",
            ),
            (&"é".repeat(128), "longer than 255 bytes"),
        ];
        for (bad, reason) in cases {
            assert_eq!(check_object_name(bad), Err(*reason), "{bad:?}");
        }
    }

    #[test]
    fn an_object_name_over_255_bytes_is_refused_with_the_limit() {
        let name = "o".repeat(256);
        let message = config(&[("BUCKET_NAME", "ok-bucket"), ("OBJECT_NAME", &name)])
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("OBJECT_NAME="), "{message}");
        assert!(message.contains("longer than 255 bytes"), "{message}");
        assert!(message.contains("at most 255 bytes"), "{message}");
    }

    #[test]
    fn max_concurrency_rule() {
        assert_eq!(check_max_concurrency(MIN_MAX_CONCURRENCY).unwrap().get(), 1);
        assert_eq!(check_max_concurrency(64).unwrap().get(), 64);
        assert_eq!(
            check_max_concurrency(MAX_MAX_CONCURRENCY).unwrap().get(),
            1024
        );
        assert_eq!(check_max_concurrency(0), Err("out of range"));
        assert_eq!(
            check_max_concurrency(MAX_MAX_CONCURRENCY + 1),
            Err("out of range")
        );

        assert_eq!(parse_max_concurrency("8").unwrap().get(), 8);
        assert_eq!(parse_max_concurrency(" 16\n").unwrap().get(), 16);
        let cases: &[(&str, &str)] = &[
            ("0", "out of range"),
            ("1025", "out of range"),
            ("5000", "out of range"),
            ("", "not a whole number"),
            ("many", "not a whole number"),
            ("-1", "not a whole number"),
            ("1.5", "not a whole number"),
            ("99999999999999999999999", "not a whole number"),
        ];
        for (bad, reason) in cases {
            assert_eq!(parse_max_concurrency(bad), Err(*reason), "{bad:?}");
        }
    }

    #[test]
    fn key_attribute_rule() {
        for good in ["name", "id", " id", "user name"] {
            assert_eq!(check_key_attribute(good), Ok(()), "{good:?}");
        }
        for bad in ["", " ", "\t\n"] {
            assert_eq!(check_key_attribute(bad), Err("empty"), "{bad:?}");
        }
    }

    #[test]
    fn delete_scope_spellings() {
        for scope in DeleteScope::ALL {
            assert_eq!(scope.as_str().parse::<DeleteScope>(), Ok(scope));
            assert_eq!(scope.to_string(), scope.as_str());
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::Value::from(scope.as_str())
            );
            assert_eq!(
                serde_json::from_value::<DeleteScope>(scope.as_str().into()).unwrap(),
                scope
            );
        }
        assert_eq!(DeleteScope::Object.as_str(), "object");
        assert_eq!(DeleteScope::Prefix.as_str(), "prefix");
        assert_eq!(DeleteScope::default(), DeleteScope::Object);
        for bad in ["all", "", "Object", " prefix"] {
            assert_eq!(bad.parse::<DeleteScope>(), Err("unknown scope"), "{bad:?}");
        }
        assert!(serde_json::from_value::<DeleteScope>("Prefix".into()).is_err());
        // The variable is trimmed before it is parsed.
        let config = config(&[("BUCKET_NAME", "ok-bucket"), ("DELETE_SCOPE", " prefix ")]);
        assert_eq!(config.unwrap().delete_scope, DeleteScope::Prefix);
    }
}
