//! Where a command acts: real AWS, any AWS-compatible endpoint, or the embedded emulator at
//! a known address. Starting that emulator is the local stack's job (`usersync_local::target`).

use std::net::SocketAddr;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

/// The region used for emulators when none is given.
pub const DEFAULT_LOCAL_REGION: &str = "us-east-1";

/// How long `--endpoint-url` may take to accept a connection before it counts as unreachable.
pub const ENDPOINT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The target flags every command takes (`--local` is the local stack's, which resolves it to
/// an address before it gets here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// What kind of target a command acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Real AWS, through the standard credential chain.
    Aws,
    /// An AWS-compatible endpoint, such as LocalStack.
    Endpoint(String),
    /// The embedded emulator on loopback, at this address.
    Local(SocketAddr),
}

/// Failures of reaching a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--endpoint-url {0:?} is not an http(s) URL: pass one such as http://localhost:4566")]
    BadEndpoint(String),
    #[error(
        "the endpoint {url} is not reachable ({reason}): start the service there, or pass the \
         right --endpoint-url"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "no AWS region is configured: pass --region, or set AWS_REGION or a region in the profile"
    )]
    NoRegion,
}

/// A connected target: SDK configuration for every client the deployer needs.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: TargetKind,
    pub sdk: SdkConfig,
}

impl Target {
    /// Resolves the target flags to real AWS or an endpoint, checking that an endpoint
    /// accepts connections before any request is sent.
    pub async fn connect(options: &TargetOptions) -> Result<Self, TargetError> {
        let kind = match &options.endpoint_url {
            Some(url) => {
                let Some((host, port)) = host_and_port(url) else {
                    return Err(TargetError::BadEndpoint(url.clone()));
                };
                let url = url.trim_end_matches('/').to_owned();
                // Checked here, once and quickly, rather than through the SDK's retries on
                // every request, which end in a message naming no endpoint.
                check_reachable(&url, &host, port).await?;
                TargetKind::Endpoint(url)
            }
            None => TargetKind::Aws,
        };
        let sdk = sdk_config(&kind, options).await?;
        Ok(Self { kind, sdk })
    }

    /// The embedded emulator that answers at `addr`, with the region and profile of `options`.
    pub async fn local_emulator(
        addr: SocketAddr,
        options: &TargetOptions,
    ) -> Result<Self, TargetError> {
        let kind = TargetKind::Local(addr);
        let sdk = sdk_config(&kind, options).await?;
        Ok(Self { kind, sdk })
    }

    /// A target for an already known endpoint with static test credentials; for tests and the
    /// local stack, which know their emulator.
    pub fn for_endpoint(endpoint_url: &str, region: &str) -> Self {
        let kind = TargetKind::Endpoint(endpoint_url.to_owned());
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint_url)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(test_credentials()),
            )
            .build();
        Self { kind, sdk }
    }

    /// Whether this is real AWS, where changes cost money and ask for confirmation.
    pub fn is_aws(&self) -> bool {
        self.kind == TargetKind::Aws
    }

    /// The endpoint URL of an emulator or custom endpoint.
    pub fn endpoint_url(&self) -> Option<String> {
        match &self.kind {
            TargetKind::Aws => None,
            TargetKind::Endpoint(url) => Some(url.clone()),
            TargetKind::Local(addr) => Some(format!("http://{addr}")),
        }
    }

    pub fn region(&self) -> String {
        self.sdk
            .region()
            .map_or_else(|| DEFAULT_LOCAL_REGION.to_owned(), |r| r.to_string())
    }

    /// A short description for messages: "AWS us-east-1", "endpoint http://…", "local emulator http://…".
    pub fn describe(&self) -> String {
        match &self.kind {
            TargetKind::Aws => format!("AWS {}", self.region()),
            TargetKind::Endpoint(url) => format!("endpoint {url}"),
            TargetKind::Local(addr) => format!("local emulator http://{addr}"),
        }
    }

    pub fn cloudformation(&self) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.sdk)
    }

    /// S3 with path-style addressing on emulators, which rarely serve virtual-hosted buckets.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(!self.is_aws())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    pub fn dynamodb_streams(&self) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.sdk)
    }

    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk)
    }
}

/// The host and port of an `http://` or `https://` URL (the scheme's port when none is given).
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:4566
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some((host.to_owned(), port))
}

async fn check_reachable(url: &str, host: &str, port: u16) -> Result<(), TargetError> {
    let unreachable = |reason: String| TargetError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    match tokio::time::timeout(
        ENDPOINT_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_connection)) => Ok(()),
        Ok(Err(err)) => Err(unreachable(lowercase_first(&err.to_string()))),
        Err(_) => Err(unreachable(format!(
            "no connection within {} s",
            ENDPOINT_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// "Connection refused (os error 111)" reads as "connection refused (os error 111)" mid-sentence.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

fn test_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "usersync-local")
}

async fn sdk_config(kind: &TargetKind, options: &TargetOptions) -> Result<SdkConfig, TargetError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    match kind {
        TargetKind::Aws => {}
        TargetKind::Endpoint(url) => {
            loader = loader.endpoint_url(url);
            // Emulators accept any credentials; use the environment's when it has some.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && options.profile.is_none() {
                loader = loader.credentials_provider(test_credentials());
            }
        }
        TargetKind::Local(addr) => {
            loader = loader
                .endpoint_url(format!("http://{addr}"))
                .credentials_provider(test_credentials());
        }
    }
    let mut sdk = loader.load().await;
    if sdk.region().is_none() {
        if *kind == TargetKind::Aws {
            return Err(TargetError::NoRegion);
        }
        sdk = sdk
            .into_builder()
            .region(Region::new(DEFAULT_LOCAL_REGION))
            .build();
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_give_their_host_and_port() {
        let cases = [
            ("http://localhost:4566", Some(("localhost", 4566))),
            ("http://127.0.0.1:4566/", Some(("127.0.0.1", 4566))),
            ("https://s3.example.com", Some(("s3.example.com", 443))),
            ("http://example.com/path?x=1", Some(("example.com", 80))),
            ("http://user:secret@host:81", Some(("host", 81))),
            ("http://[::1]:4566", Some(("::1", 4566))),
            ("http://[::1]", Some(("::1", 80))),
            ("localhost:4566", None),
            ("ftp://host", None),
            ("http://", None),
            ("http://host:port", None),
            ("http://host:70000", None),
        ];
        for (url, expected) in cases {
            let expected = expected.map(|(host, port)| (host.to_owned(), port));
            assert_eq!(host_and_port(url), expected, "{url}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_at_once_with_the_url_and_the_fix() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let options = TargetOptions {
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            ..TargetOptions::default()
        };
        let started = std::time::Instant::now();
        let err = Target::connect(&options).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let message = err.to_string();
        assert!(matches!(err, TargetError::Unreachable { .. }), "{err:?}");
        assert!(
            message.contains(&format!("http://127.0.0.1:{port} is not reachable")),
            "{message}"
        );
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("--endpoint-url"), "{message}");
    }
}
