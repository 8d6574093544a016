//! The endpoint backend: an AWS-compatible emulator that is already running and runs Lambdas
//! itself, named by `ITESTS_ENDPOINT_URL`. The suite deploys to it and only reads it; starting
//! and stopping it is up to whoever runs the suite.

use http::uri::{Scheme, Uri};

use super::BackendError;

/// The variable naming the emulator's URL.
pub const ENDPOINT_URL_VARIABLE: &str = "ITESTS_ENDPOINT_URL";

/// A validated emulator endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointBackend {
    url: String,
}

impl EndpointBackend {
    /// The endpoint named by `ITESTS_ENDPOINT_URL` in `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BackendError> {
        let value = lookup(ENDPOINT_URL_VARIABLE)
            .filter(|value| !value.trim().is_empty())
            .ok_or(BackendError::MissingEndpointUrl)?;
        Self::from_url(&value)
    }

    /// The endpoint `ITESTS_ENDPOINT_URL` names in this process's environment.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Checks that `value` is an `http` or `https` URL with a host and nothing after the
    /// path; a trailing `/` is dropped, as SDK endpoint URLs have none.
    pub fn from_url(value: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadEndpointUrl {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = value
            .trim()
            .parse()
            .map_err(|err: http::uri::InvalidUri| bad(&format!("it is not a URL ({err})")))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => {}
            Some(_) => return Err(bad("only http(s) URLs are supported")),
            None => return Err(bad("it has no http:// or https:// in front")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("it names no host"));
        }
        if uri.query().is_some() {
            return Err(bad("an endpoint URL has no query"));
        }
        let url = uri.to_string().trim_end_matches('/').to_owned();
        Ok(Self { url })
    }

    /// The URL to point every SDK client at, without a trailing `/`.
    pub fn endpoint_url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::env;

    #[test]
    fn http_and_https_urls_are_accepted_without_a_trailing_slash() {
        assert_eq!(
            EndpointBackend::from_url("http://localhost:4566/")
                .unwrap()
                .endpoint_url(),
            "http://localhost:4566"
        );
        assert_eq!(
            EndpointBackend::from_url(" https://emulator.example:8443 ")
                .unwrap()
                .endpoint_url(),
            "https://emulator.example:8443"
        );
    }

    #[test]
    fn the_url_comes_from_its_variable() {
        let backend =
            EndpointBackend::from_lookup(env(&[("ITESTS_ENDPOINT_URL", "http://127.0.0.1:4566")]))
                .unwrap();
        assert_eq!(backend.endpoint_url(), "http://127.0.0.1:4566");
        assert!(matches!(
            EndpointBackend::from_lookup(env(&[("ITESTS_ENDPOINT_URL", "")])),
            Err(BackendError::MissingEndpointUrl)
        ));
    }

    #[test]
    fn urls_that_are_not_http_endpoints_are_refused_with_the_reason() {
        for (value, reason) in [
            ("localhost:4566", "it has no http:// or https:// in front"),
            ("/just/a/path", "it has no http:// or https:// in front"),
            ("ftp://localhost:21", "only http(s) URLs are supported"),
            ("http://localhost:4566/?x=1", "an endpoint URL has no query"),
            ("http://local host", "it is not a URL"),
        ] {
            let err = EndpointBackend::from_url(value).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("ITESTS_ENDPOINT_URL={value:?} is not usable: ")),
                "{message}"
            );
            assert!(message.contains(reason), "{value}: {message}");
            assert!(
                message.ends_with("such as http://localhost:4566"),
                "{message}"
            );
        }
    }
}
