//! The `bootstrap` binary for the `provided.al2023` runtime.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;
use usersync_function::{handle_payload, s3_client, Config, Mirror, S3Store};

// mimalloc rather than glibc's malloc: each S3 request makes and frees hundreds of small
// allocations (the SDK's request, signing and response), and glibc's malloc, free and
// consolidation took a fifth of the function's CPU in the profile
// (docs/bench/function-flamegraph.svg). At 128 MB Lambda gives the function 7% of a core,
// so CPU per record is its throughput. mimalloc also gives large freed buffers back to the
// system on its own, which is what glibc needed a fixed mmap threshold for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread: S3 calls are I/O that one thread multiplexes, a Lambda environment has at most
// one vCPU below 1,769 MB, and a single thread's heap keeps a 10,000-record batch's peak
// memory lower (measured by `cargo xtask bench`).
#[tokio::main(flavor = "current_thread")]
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

    // The payload stays JSON text: a 10,000-record batch parsed whole would take several
    // times the memory of the batch itself.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            handle_payload(mirror, &event.payload).await
        },
    ))
    .await
}
