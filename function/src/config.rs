//! Function settings, read and validated once at cold start.

use std::num::NonZeroUsize;

/// The most users the function works on at once unless `MAX_CONCURRENCY` says otherwise.
///
/// Each user costs one in-flight S3 request, so this bounds the connection pool and the memory
/// held by bodies in flight. Measured by `cargo xtask bench` (README, Benchmarks): throughput is
/// flat from 16 to 128 against the emulator and best at 64; real S3's higher latency rewards
/// concurrency, and 64 keeps a 256 MB function well inside its memory and far from S3's
/// per-prefix limit (3,500 writes per second).
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
const MAX_MAX_CONCURRENCY: usize = 1024;

/// What a `REMOVE` deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteScope {
    /// Only the user's object, `<KEY_PREFIX><name>/<OBJECT_NAME>`.
    Object,
    /// Every object under the user's prefix, `<KEY_PREFIX><name>/`.
    Prefix,
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
    "an object name without '/' or control characters, not '.' or '..', such as \"userdata\"";
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
        let bucket = lookup("BUCKET_NAME").ok_or(ConfigError::Missing {
            variable: "BUCKET_NAME",
            expected: BUCKET_FORM,
        })?;
        check_bucket_name(&bucket)
            .map_err(|reason| invalid("BUCKET_NAME", &bucket, reason, BUCKET_FORM))?;

        let key_prefix = lookup("KEY_PREFIX").unwrap_or_default();
        if key_prefix.len() > 512 {
            return Err(invalid(
                "KEY_PREFIX",
                &key_prefix,
                "longer than 512 bytes",
                PREFIX_FORM,
            ));
        }
        if key_prefix.chars().any(char::is_control) {
            return Err(invalid(
                "KEY_PREFIX",
                &key_prefix,
                "contains a control character",
                PREFIX_FORM,
            ));
        }

        let object_name = lookup("OBJECT_NAME").unwrap_or_else(|| "userdata".to_owned());
        let object_problem = if object_name.is_empty() {
            Some("empty")
        } else if object_name.contains('/') {
            Some("contains '/'")
        } else if object_name == "." || object_name == ".." {
            Some("is a relative path segment")
        } else if object_name.chars().any(char::is_control) {
            Some("contains a control character")
        } else if object_name.len() > 255 {
            Some("longer than 255 bytes")
        } else {
            None
        };
        if let Some(reason) = object_problem {
            return Err(invalid(
                "OBJECT_NAME",
                &object_name,
                reason,
                OBJECT_NAME_FORM,
            ));
        }

        let delete_scope = match lookup("DELETE_SCOPE").as_deref().map(str::trim) {
            None | Some("object") => DeleteScope::Object,
            Some("prefix") => DeleteScope::Prefix,
            Some(other) => return Err(invalid("DELETE_SCOPE", other, "unknown scope", SCOPE_FORM)),
        };

        let max_concurrency = match lookup("MAX_CONCURRENCY") {
            None => NonZeroUsize::new(DEFAULT_MAX_CONCURRENCY).expect("default is non-zero"),
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_MAX_CONCURRENCY).contains(&n) => {
                    NonZeroUsize::new(n).expect("checked non-zero")
                }
                Ok(_) => {
                    return Err(invalid(
                        "MAX_CONCURRENCY",
                        &raw,
                        "out of range",
                        CONCURRENCY_FORM,
                    ))
                }
                Err(_) => {
                    return Err(invalid(
                        "MAX_CONCURRENCY",
                        &raw,
                        "not a whole number",
                        CONCURRENCY_FORM,
                    ))
                }
            },
        };

        let key_attribute = lookup("KEY_ATTRIBUTE").unwrap_or_else(|| "name".to_owned());
        if key_attribute.trim().is_empty() {
            return Err(invalid(
                "KEY_ATTRIBUTE",
                &key_attribute,
                "empty",
                ATTRIBUTE_FORM,
            ));
        }

        let force_path_style = match lookup("S3_FORCE_PATH_STYLE").as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(invalid(
                    "S3_FORCE_PATH_STYLE",
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

/// Checks the general-purpose bucket naming rules that apply in every region.
fn check_bucket_name(name: &str) -> Result<(), &'static str> {
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
}
