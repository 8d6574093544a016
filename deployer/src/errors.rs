//! An error as one line of text, with its causes.
//!
//! The workspace's errors leave their source out of their own message: the source is the
//! next layer of the chain ([`std::error::Error::source`]), and whoever reports the error
//! prints the layers joined by `": "`, so that each cause appears once. `cargo xtask` does so
//! with anyhow's `{:#}`; [`chain`] does the same wherever an error becomes text (a message
//! field, a log line, an HTTP body). An error's `Display` alone is its top layer only.

use std::error::Error;

/// `err` and each of its sources, joined by `": "`, as anyhow's `{:#}` prints them.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer {
        path: &'static str,
        source: std::io::Error,
    }

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to read {}", self.path)
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn every_layer_once() {
        let err = Outer {
            path: "a.toml",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(chain(&err), "failed to read a.toml: no such file");
        assert_eq!(chain(&err.source), "no such file");
    }
}
