//! A private emulator per test: found or installed through `deployer::local`, started on a
//! free loopback port, stopped when the test ends (whether it passed or not).

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::{Credentials, Region};
use deployer::errors::chain;
use usersync_local::emulator::{ensure_binary, Emulator};

/// The region every test talks to.
pub const REGION: &str = "us-east-1";

/// Starts an emulator for one test, installing fakecloud into the cache on first use.
///
/// Panics with the launcher's message when that fails: a test that needs the emulator cannot
/// run without it, and must say why rather than pass.
pub async fn start() -> Emulator {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let binary =
        tokio::task::spawn_blocking(|| ensure_binary(&mut |line| eprintln!("fakecloud: {line}")))
            .await
            .expect("the install task does not panic")
            .unwrap_or_else(|err| panic!("failed to provide the emulator: {}", chain(&err)));
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    let log = deployer::project::state_dir()
        .join("itests")
        .join(format!("fakecloud-{}-{n}.log", std::process::id()));
    Emulator::start(&binary, &log)
        .await
        .unwrap_or_else(|err| panic!("failed to start the emulator: {}", chain(&err)))
}

/// An S3 client for the emulator, configured as the function is there: path-style addressing
/// and static test credentials.
pub fn s3_client(emulator: &Emulator) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(REGION))
        .endpoint_url(emulator.endpoint_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "itests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A bucket name no other test uses.
pub fn unique_bucket(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "itest-{label}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
