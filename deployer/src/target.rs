//! Where a command acts: real AWS, any AWS-compatible endpoint, or the embedded emulator at
//! a known address. Starting that emulator is the local stack's job (`usersync_local::target`).

use std::net::SocketAddr;
use std::time::Duration;

use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

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
    /// What the person should know about how the target was resolved, one line each: an
    /// endpoint override in the environment or the AWS config file that was ignored. The
    /// command prints them.
    pub notices: Vec<String>,
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
        let loader = aws_config::defaults(BehaviorVersion::latest());
        let (sdk, notices) = sdk_config(loader, &kind, options, &process_environment()).await?;
        Ok(Self { kind, sdk, notices })
    }

    /// The embedded emulator that answers at `addr`, with the region and profile of `options`.
    pub async fn local_emulator(
        addr: SocketAddr,
        options: &TargetOptions,
    ) -> Result<Self, TargetError> {
        let kind = TargetKind::Local(addr);
        let loader = aws_config::defaults(BehaviorVersion::latest());
        let (sdk, notices) = sdk_config(loader, &kind, options, &process_environment()).await?;
        Ok(Self { kind, sdk, notices })
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
        Self {
            kind,
            sdk,
            notices: Vec::new(),
        }
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

    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk)
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

/// The variable that names an endpoint for every service; `AWS_ENDPOINT_URL_<SERVICE>` names
/// one for a single service.
pub const ENDPOINT_URL_VARIABLE: &str = "AWS_ENDPOINT_URL";

/// The services the deployer talks to, by the service id the SDK resolves their configured
/// endpoint under (each crate's `service_config_key(...)`), with the suffix of their
/// `AWS_ENDPOINT_URL_<SERVICE>` variable: the id upper-cased, spaces as underscores
/// (https://docs.aws.amazon.com/sdkref/latest/guide/ss-endpoints-table.html).
const SERVICES: [(&str, &str); 8] = [
    ("CloudFormation", "CLOUDFORMATION"),
    ("CloudWatch", "CLOUDWATCH"),
    ("S3", "S3"),
    ("Lambda", "LAMBDA"),
    ("SQS", "SQS"),
    ("DynamoDB", "DYNAMODB"),
    ("DynamoDB Streams", "DYNAMODB_STREAMS"),
    ("STS", "STS"),
];

/// The endpoint variables set (to something) in `environment`, as `(name, value)` sorted by
/// name: `AWS_ENDPOINT_URL` and every `AWS_ENDPOINT_URL_<SERVICE>`. The AWS SDKs send a
/// service's requests to them when no endpoint is given in code
/// (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html>), and aws-config
/// does (aws-config 1.13 `default_provider::endpoint_url`, `env_service_config`).
pub fn stray_endpoint_variables<I, K, V>(environment: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut found: Vec<(String, String)> = environment
        .into_iter()
        .filter(|(name, value)| {
            let name = name.as_ref();
            let endpoint_variable = name == ENDPOINT_URL_VARIABLE
                || name
                    .strip_prefix(ENDPOINT_URL_VARIABLE)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|service| !service.is_empty());
            endpoint_variable && !value.as_ref().trim().is_empty()
        })
        .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()))
        .collect();
    found.sort();
    found
}

/// The process environment, as far as it is Unicode (the SDK reads no other).
fn process_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// One notice per ignored endpoint setting: each variable of `variables`, and the config file's
/// `endpoint_url` for `from_profile` (service id and URL).
fn ignored_endpoint_notices(
    variables: &[(String, String)],
    from_profile: &[(&str, String)],
) -> Vec<String> {
    let notice = |setting: &str, url: &str| {
        format!(
            "{setting} is set ({url}) but ignored: without --endpoint-url the target is real AWS; \
             pass --endpoint-url {url} to use that endpoint"
        )
    };
    let mut notices: Vec<String> = variables
        .iter()
        .map(|(name, url)| notice(name, url))
        .collect();
    let mut by_url: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (service, url) in from_profile {
        by_url.entry(url).or_default().push(service);
    }
    for (url, services) in by_url {
        notices.push(notice(
            &format!(
                "endpoint_url in the AWS config file (for {})",
                services.join(", ")
            ),
            url,
        ));
    }
    notices
}

/// The services whose endpoint `sdk` resolves from the AWS config file (`endpoint_url` in the
/// profile or its `services` section) rather than from `environment`, where a variable would
/// take precedence.
fn endpoints_from_profile(
    sdk: &SdkConfig,
    environment: &[(String, String)],
) -> Vec<(&'static str, String)> {
    let Some(config) = sdk.service_config() else {
        return Vec::new();
    };
    let variables = stray_endpoint_variables(environment.iter().map(|(k, v)| (k, v)));
    let set = |name: &str| variables.iter().any(|(n, _)| n == name);
    SERVICES
        .iter()
        .filter(|(_, suffix)| {
            !set(ENDPOINT_URL_VARIABLE) && !set(&format!("{ENDPOINT_URL_VARIABLE}_{suffix}"))
        })
        .filter_map(|(service, _)| {
            let url = config.load_config(endpoint_key(service))?;
            Some((*service, url))
        })
        .collect()
}

/// The key under which the SDK looks up a service's configured endpoint.
fn endpoint_key(service: &str) -> ServiceConfigKey<'_> {
    ServiceConfigKey::builder()
        .service_id(service)
        .env(ENDPOINT_URL_VARIABLE)
        .profile("endpoint_url")
        .build()
        .expect("service id, variable and profile key are all set")
}

/// The loaded configuration's service settings without its endpoints. aws-config applies the
/// same filter when `ignore_configured_endpoint_urls` / `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
/// is set (aws-config 1.13 `env_service_config.rs`: it answers no key whose variable is
/// `AWS_ENDPOINT_URL`, the key of every service's endpoint, whose service-specific variable and
/// config-file section are derived from it); that flag can be set only in the environment or
/// the profile, not in code.
#[derive(Debug)]
struct WithoutEndpointUrls(SdkConfig);

impl LoadServiceConfig for WithoutEndpointUrls {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() == ENDPOINT_URL_VARIABLE {
            return None;
        }
        self.0.service_config()?.load_config(key)
    }
}

/// `sdk` as if `ignore_configured_endpoint_urls` were set: no endpoint from the environment or
/// the config file, for the shared configuration nor for any service.
///
/// The credential providers aws-config builds (assume-role, SSO) resolve their own STS and
/// SSO clients and are outside this: aws-config 1.13 `ProviderConfig::client_config` honours
/// configured endpoints whatever the flag says.
fn without_configured_endpoint_urls(sdk: SdkConfig) -> SdkConfig {
    let mut builder = sdk.clone().into_builder();
    builder.set_endpoint_url(None);
    builder.set_service_config(Some(WithoutEndpointUrls(sdk)));
    builder.build()
}

/// Loads the SDK configuration for `kind` through `loader` (the defaults; a scripted one in
/// tests), with `environment` being what the loader reads. Returns the notices the person
/// should see.
///
/// Real AWS (no --endpoint-url, no --local) ignores endpoints configured in the environment or
/// the config file, saying so: a variable left over from work with an emulator would otherwise
/// silently send real-AWS commands there. An endpoint given in code (--endpoint-url, --local)
/// takes precedence over any configured one anyway
/// (https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html).
async fn sdk_config(
    mut loader: ConfigLoader,
    kind: &TargetKind,
    options: &TargetOptions,
    environment: &[(String, String)],
) -> Result<(SdkConfig, Vec<String>), TargetError> {
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
            let has_keys = environment
                .iter()
                .any(|(name, _)| name == "AWS_ACCESS_KEY_ID");
            if !has_keys && options.profile.is_none() {
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
    let mut notices = Vec::new();
    if *kind == TargetKind::Aws {
        notices = ignored_endpoint_notices(
            &stray_endpoint_variables(environment.iter().map(|(k, v)| (k, v))),
            &endpoints_from_profile(&sdk, environment),
        );
        sdk = without_configured_endpoint_urls(sdk);
    }
    if sdk.region().is_none() {
        if *kind == TargetKind::Aws {
            return Err(TargetError::NoRegion);
        }
        sdk = sdk
            .into_builder()
            .region(Region::new(DEFAULT_LOCAL_REGION))
            .build();
    }
    Ok((sdk, notices))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_config::retry::RetryConfig;
    use aws_smithy_http_client::test_util::infallible_client_fn;
    use aws_smithy_types::body::SdkBody;
    use aws_types::os_shim_internal::{Env, Fs};

    use super::*;

    #[test]
    fn stray_endpoint_variables_are_listed_by_name() {
        let environment = [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL_S3", "http://localhost:4566"),
            ("AWS_ENDPOINT_URL", "http://localhost:4566"),
            ("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", "http://localhost:8000"),
            // Set to nothing: the SDK ignores it too.
            ("AWS_ENDPOINT_URL_SQS", " "),
            // Not endpoint variables.
            ("AWS_ENDPOINT_URL_", "http://localhost:1"),
            ("AWS_ENDPOINT_URLS", "http://localhost:2"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ("MY_AWS_ENDPOINT_URL", "http://localhost:3"),
        ];
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            stray_endpoint_variables(environment),
            pairs(&[
                ("AWS_ENDPOINT_URL", "http://localhost:4566"),
                ("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", "http://localhost:8000"),
                ("AWS_ENDPOINT_URL_S3", "http://localhost:4566"),
            ])
        );
        assert!(stray_endpoint_variables([("HOME", "/root")]).is_empty());
    }

    const HOME: &str = "/home/tester";

    /// The configuration loader as `Target::connect` starts it, reading `environment` and, as
    /// ~/.aws/config, `config_file`, its clients recording each request's URI in `uris`
    /// (and getting an error back: no request leaves the process).
    fn scripted_loader(
        environment: &[(&str, &str)],
        config_file: &str,
        uris: &Arc<Mutex<Vec<String>>>,
    ) -> ConfigLoader {
        let mut variables = vec![("HOME", HOME)];
        variables.extend_from_slice(environment);
        let recorded = Arc::clone(uris);
        let http_client = infallible_client_fn(move |request| {
            recorded
                .lock()
                .expect("not poisoned")
                .push(request.uri().to_string());
            http::Response::builder()
                .status(400)
                .body(SdkBody::empty())
                .expect("a valid response")
        });
        aws_config::defaults(BehaviorVersion::latest())
            .env(Env::from_slice(&variables))
            .fs(Fs::from_slice(&[(
                &format!("{HOME}/.aws/config"),
                config_file,
            )]))
            .http_client(http_client)
            .retry_config(RetryConfig::disabled())
            .credentials_provider(test_credentials())
    }

    /// An AWS target (no --endpoint-url, no --local) loaded from `environment` and `config_file`.
    async fn aws_target(
        environment: &[(&str, &str)],
        config_file: &str,
        uris: &Arc<Mutex<Vec<String>>>,
    ) -> Target {
        let loader = scripted_loader(environment, config_file, uris);
        let environment: Vec<(String, String)> = environment
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let options = TargetOptions {
            region: Some("eu-west-1".to_owned()),
            ..TargetOptions::default()
        };
        let (sdk, notices) = sdk_config(loader, &TargetKind::Aws, &options, &environment)
            .await
            .expect("the target loads");
        Target {
            kind: TargetKind::Aws,
            sdk,
            notices,
        }
    }

    /// Sends one request through each client the deployer uses; returns the URIs they went to.
    async fn request_every_service(target: &Target, uris: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        let _ = target.cloudformation().describe_stacks().send().await;
        let _ = target.cloudwatch().describe_alarms().send().await;
        let _ = target.s3().list_buckets().send().await;
        let _ = target.lambda().list_functions().send().await;
        let _ = target.sqs().list_queues().send().await;
        let _ = target.dynamodb().list_tables().send().await;
        let _ = target.dynamodb_streams().list_streams().send().await;
        let _ = target.sts().get_caller_identity().send().await;
        let sent = uris.lock().expect("not poisoned").clone();
        assert_eq!(sent.len(), 8, "{sent:#?}");
        sent
    }

    fn all_to_aws(uris: &[String]) -> bool {
        uris.iter().all(|uri| {
            uri.starts_with("https://")
                && uri
                    .split('/')
                    .nth(2)
                    .is_some_and(|host| host.ends_with(".amazonaws.com"))
        })
    }

    /// A leftover `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_S3`) would send every request of an
    /// AWS target to the emulator; the target ignores them, every client goes to AWS, and a
    /// notice names each variable and --endpoint-url.
    #[tokio::test]
    async fn an_aws_target_ignores_endpoint_variables_and_says_so() {
        let environment = [
            ("AWS_ENDPOINT_URL", "http://localhost:4566"),
            ("AWS_ENDPOINT_URL_S3", "http://localhost:4567"),
        ];
        // What the loader alone makes of that environment: the emulator.
        let uris = Arc::new(Mutex::new(Vec::new()));
        let plain = scripted_loader(&environment, "", &uris)
            .region(Region::new("eu-west-1"))
            .load()
            .await;
        assert_eq!(plain.endpoint_url(), Some("http://localhost:4566"));

        let uris = Arc::new(Mutex::new(Vec::new()));
        let target = aws_target(&environment, "", &uris).await;

        assert_eq!(target.sdk.endpoint_url(), None);
        let sent = request_every_service(&target, &uris).await;
        assert!(all_to_aws(&sent), "{sent:#?}");
        assert_eq!(
            target.notices,
            [
                "AWS_ENDPOINT_URL is set (http://localhost:4566) but ignored: without \
                 --endpoint-url the target is real AWS; pass --endpoint-url \
                 http://localhost:4566 to use that endpoint",
                "AWS_ENDPOINT_URL_S3 is set (http://localhost:4567) but ignored: without \
                 --endpoint-url the target is real AWS; pass --endpoint-url \
                 http://localhost:4567 to use that endpoint",
            ]
        );
    }

    /// The same for a profile's `endpoint_url` and its `services` section in ~/.aws/config.
    #[tokio::test]
    async fn an_aws_target_ignores_endpoints_from_the_config_file_and_says_so() {
        let config_file = "[default]\nendpoint_url = http://localhost:4566\nservices = local\n\n\
                           [services local]\ns3 =\n  endpoint_url = http://localhost:4567\n";
        let uris = Arc::new(Mutex::new(Vec::new()));
        let plain = scripted_loader(&[], config_file, &uris)
            .region(Region::new("eu-west-1"))
            .load()
            .await;
        assert_eq!(plain.endpoint_url(), Some("http://localhost:4566"));

        let target = aws_target(&[], config_file, &uris).await;

        assert_eq!(target.sdk.endpoint_url(), None);
        let sent = request_every_service(&target, &uris).await;
        assert!(all_to_aws(&sent), "{sent:#?}");
        assert_eq!(
            target.notices,
            [
                "endpoint_url in the AWS config file (for CloudFormation, CloudWatch, Lambda, SQS, \
                 DynamoDB, DynamoDB Streams, STS) is set (http://localhost:4566) but ignored: without \
                 --endpoint-url the target is real AWS; pass --endpoint-url \
                 http://localhost:4566 to use that endpoint",
                "endpoint_url in the AWS config file (for S3) is set (http://localhost:4567) but \
                 ignored: without --endpoint-url the target is real AWS; pass --endpoint-url \
                 http://localhost:4567 to use that endpoint",
            ]
        );
    }

    /// An explicit endpoint (--endpoint-url) is used as given, whatever the environment says,
    /// and needs no notice.
    #[tokio::test]
    async fn an_endpoint_target_uses_its_endpoint_over_the_variables() {
        let environment = [("AWS_ENDPOINT_URL_S3", "http://localhost:4567")];
        let uris = Arc::new(Mutex::new(Vec::new()));
        let loader = scripted_loader(&environment, "", &uris);
        let kind = TargetKind::Endpoint("http://localhost:9999".to_owned());
        let options = TargetOptions {
            region: Some("eu-west-1".to_owned()),
            ..TargetOptions::default()
        };
        let environment = vec![(
            "AWS_ENDPOINT_URL_S3".to_owned(),
            "http://localhost:4567".to_owned(),
        )];
        let (sdk, notices) = sdk_config(loader, &kind, &options, &environment)
            .await
            .expect("the target loads");
        let target = Target { kind, sdk, notices };

        assert!(target.notices.is_empty());
        let sent = request_every_service(&target, &uris).await;
        assert!(
            sent.iter()
                .all(|uri| uri.starts_with("http://localhost:9999/")),
            "{sent:#?}"
        );
    }

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
