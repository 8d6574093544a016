//! Cold start: from spawning `bootstrap` to its first `/invocation/next`, and to its first
//! response.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::stats::Summary;
use super::throughput::{invoke_checked, start_function, S3Target};
use super::workload::{Variant, Workload};
use super::BenchError;

#[derive(Clone, Debug, Serialize)]
pub struct ColdStartRun {
    pub repetitions: usize,
    /// Process spawn to the first `GET /2018-06-01/runtime/invocation/next`.
    pub to_first_next_ms: Summary,
    /// Host start (spawn included) to the answer of a first one-record batch.
    pub to_first_response_ms: Summary,
}

pub async fn measure(
    binary: &Path,
    s3: &S3Target,
    repetitions: usize,
) -> Result<ColdStartRun, BenchError> {
    let event = Workload::new(Variant::Mixed, 1, "cold").event();
    let mut to_next = Vec::with_capacity(repetitions);
    let mut to_response = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let started = Instant::now();
        let host = start_function(binary, s3, None).await?;
        invoke_checked(&host, event.clone()).await?;
        to_response.push(started.elapsed().as_secs_f64() * 1000.0);
        let cold = host.last_cold_start().ok_or(BenchError::FunctionGone)?;
        to_next.push(cold.to_first_next.as_secs_f64() * 1000.0);
        host.shutdown().await;
    }
    Ok(ColdStartRun {
        repetitions,
        to_first_next_ms: Summary::of(&to_next),
        to_first_response_ms: Summary::of(&to_response),
    })
}
