//! A [`Config`] for tests: the function's defaults, with the bucket and the delete scope a test
//! names, so that a test spells out only what it depends on.

use std::num::NonZeroUsize;

use crate::config::{
    Config, DeleteScope, DEFAULT_KEY_ATTRIBUTE, DEFAULT_MAX_CONCURRENCY, DEFAULT_OBJECT_NAME,
};

/// The configuration [`Config::from_lookup`] reads when only `BUCKET_NAME` (`bucket`) and
/// `DELETE_SCOPE` (`delete_scope`) are set: no key prefix, objects named
/// [`DEFAULT_OBJECT_NAME`], up to [`DEFAULT_MAX_CONCURRENCY`] users at once, users keyed by
/// [`DEFAULT_KEY_ATTRIBUTE`], virtual-hosted-style S3 addressing. A test that needs another value
/// sets that field on the result.
///
/// `bucket` is taken as it is, not checked against the bucket naming rules, so that a test may
/// name its bucket `b`.
pub fn config(bucket: &str, delete_scope: DeleteScope) -> Config {
    Config {
        bucket: bucket.to_owned(),
        key_prefix: String::new(),
        object_name: DEFAULT_OBJECT_NAME.to_owned(),
        delete_scope,
        max_concurrency: NonZeroUsize::new(DEFAULT_MAX_CONCURRENCY)
            .expect("the default is non-zero"),
        key_attribute: DEFAULT_KEY_ATTRIBUTE.to_owned(),
        force_path_style: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars;

    #[test]
    fn the_defaults_are_the_function_s_own() {
        for scope in DeleteScope::ALL {
            let read = Config::from_lookup(|name| match name {
                vars::BUCKET_NAME => Some("users-data".to_owned()),
                vars::DELETE_SCOPE => Some(scope.as_str().to_owned()),
                _ => None,
            })
            .unwrap();
            assert_eq!(config("users-data", scope), read);
        }
    }
}
