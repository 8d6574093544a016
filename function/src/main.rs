//! The `bootstrap` binary for the `provided.al2023` runtime.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;
use usersync_function::{handle_invocation, s3_client, Config, MetricsOut, Mirror, S3Store};

// One thread: S3 calls are I/O that one thread multiplexes, a Lambda environment has at most
// one vCPU below 1,769 MB, and a single allocator arena keeps a 10,000-record batch's peak
// memory lower (measured by `cargo xtask bench`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    keep_large_buffers_out_of_the_heap();
    lambda_runtime::tracing::init_default_subscriber();

    // A bad setting stops the cold start; Lambda reports the message as an init error.
    let config = Config::from_env().map_err(|err| {
        tracing::error!(error = %err, "invalid configuration");
        err
    })?;
    // Lambda sets it for every function (lambda_runtime requires it too); the metrics carry it
    // as their dimension.
    let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").map_err(|_| {
        tracing::error!("AWS_LAMBDA_FUNCTION_NAME is not set");
        "AWS_LAMBDA_FUNCTION_NAME is not set: Lambda sets it for every function"
    })?;
    let client = s3_client(&config).await;
    let mirror = Mirror {
        store: S3Store::new(client, config.bucket.clone()),
        config,
        metrics: MetricsOut::stdout(function_name),
    };
    let mirror = &mirror;

    // The payload stays JSON text: a 10,000-record batch parsed whole would take several
    // times the memory of the batch itself.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            handle_invocation(mirror, &event.payload, &event.context.request_id).await
        },
    ))
    .await
}

/// A batch's payload is megabytes, read into a few large buffers per invocation. glibc maps
/// such a buffer on its own, but after the first one is freed it raises its threshold and
/// serves the next ones from the heap, which it rarely gives back: each large batch then left
/// the process bigger. A fixed threshold keeps them mapped and returned on free (measured at
/// 10,000 records: peak RSS 33-37 MiB before, 31 MiB after, every time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "glibc's mallopt is a foreign function; why the call is sound is under SAFETY"
)]
fn keep_large_buffers_out_of_the_heap() {
    const THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets a parameter of the allocator, which takes its own lock; no
    // memory is touched and no pointer is passed.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES);
    }
}

/// Other allocators (musl's, for static builds) give large buffers back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_out_of_the_heap() {}
