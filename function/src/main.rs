//! The `bootstrap` binary for the `provided.al2023` runtime.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use usersync_function::{handle_event, s3_client, Config, Mirror, S3Store};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    // A bad setting stops the cold start; Lambda reports the message as an init error.
    let config = Config::from_env().map_err(|err| {
        tracing::error!(error = %err, "invalid configuration");
        err
    })?;
    let client = s3_client(&config).await;
    let mirror = Mirror {
        store: S3Store::new(client, config.bucket.clone()),
        config,
    };
    let mirror = &mirror;

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_event(mirror, event.payload).await
    }))
    .await
}
