//! Measures the function's batch throughput against the embedded emulator's S3 for several
//! `MAX_CONCURRENCY` values; the evidence behind the function's default.
//!
//! `cargo run --release -p itests --example concurrency_sweep [RECORDS]`

use std::num::NonZeroUsize;
use std::time::Instant;

use itests::emulator::{s3_client, start, unique_bucket};
use itests::records::stream_record;
use serde_json::json;
use usersync_function::{process_batch, Config, Mirror, S3Store};

#[tokio::main]
async fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let emulator = start().await;
    let client = s3_client(&emulator);
    let bucket = unique_bucket("sweep");
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the bucket");
    let mut config = Config::from_lookup(|name| (name == "BUCKET_NAME").then(|| bucket.clone()))
        .expect("valid settings");
    config.force_path_style = true;

    println!("records  concurrency  seconds  records/s");
    for concurrency in [1usize, 4, 16, 32, 64, 128, 256] {
        config.max_concurrency = NonZeroUsize::new(concurrency).expect("non-zero");
        let mirror = Mirror {
            store: S3Store::new(client.clone(), bucket.clone()),
            config: config.clone(),
        };
        let mut best = f64::MAX;
        for round in 0..3 {
            // Alternate writes and removes so every round does the same amount of work.
            let event = if round % 2 == 0 { "INSERT" } else { "REMOVE" };
            let batch = (0..records)
                .map(|i| {
                    stream_record(
                        event,
                        &format!("user-{i:05}"),
                        i,
                        (event == "INSERT").then(|| json!({"i": {"N": i.to_string()}})),
                    )
                })
                .collect();
            let started = Instant::now();
            let (response, _) = process_batch(&mirror, batch).await;
            assert!(response.batch_item_failures.is_empty());
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{records:>7}  {concurrency:>11}  {best:>7.3}  {:>9.0}",
            records as f64 / best
        );
    }
}
