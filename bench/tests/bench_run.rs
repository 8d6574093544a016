//! The benchmark's machinery, end to end on the embedded emulator, at a tiny scale: every
//! section runs and the report holds what the README promises. Timings are not asserted
//! (performance is measured by `cargo xtask bench`, never by tests).

use std::time::Duration;

use usersync_bench::cgroup::Cgroups;
use usersync_bench::lambda_sized::LambdaOptions;
use usersync_bench::{report, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_section_of_the_benchmark_runs_and_is_reported() {
    let options = BenchOptions {
        batch_sizes: vec![10, 50],
        repetitions: 1,
        limit_concurrencies: vec![4, 8],
        function_concurrencies: vec![2, 4],
        cold_start_repetitions: 2,
        lambda: Some(LambdaOptions {
            memory_sizes: vec![128, 1769],
            batch_sizes: vec![100],
            records_per_run: 200,
            min_batches: 2,
            s3_latency: Duration::from_millis(20),
            jitter: (Duration::from_millis(1), Duration::from_millis(5)),
            jitter_batch_sizes: vec![100],
            max_concurrency_sweep: vec![4],
            parallelization_factors: vec![2],
            ..LambdaOptions::default()
        }),
        end_to_end_users: 30,
        deploy_repetitions: 1,
        reconcile_users: 300,
        ..BenchOptions::default()
    };
    let mut lines = Vec::new();
    let report = usersync_bench::run(&options, &mut |line| lines.push(line.to_owned()))
        .await
        .unwrap_or_else(|err| {
            panic!(
                "the benchmark failed: {}\n{}",
                deployer::errors::chain(&err),
                lines.join("\n")
            )
        });

    assert_eq!(report.throughput.len(), 2);
    for (size, records) in report.throughput.iter().zip([10, 50]) {
        assert_eq!(size.records, records);
        assert!(size.records_per_s > 0.0 && size.limit_records_per_s > 0.0);
        assert!((size.ratio - size.records_per_s / size.limit_records_per_s).abs() < 1e-9);
        assert!(size.peak_rss_bytes > 1 << 20, "{size:?}");
        assert_eq!(size.churn.records, records);
    }
    assert!([Some(4), Some(8)].contains(&report.limit_concurrency));
    assert_eq!(report.function_concurrency_sweep.len(), 2);
    let cold_start_ms = report.cold_start_ms.expect("cold starts ran");
    assert!(cold_start_ms > 0.0);
    let cold_start = report.cold_start.as_ref().expect("cold starts ran");
    assert!(cold_start.to_first_response_ms.median >= cold_start_ms);
    let lambda = report
        .lambda
        .as_ref()
        .expect("the Lambda-sized section was asked for");
    // It runs where this process can make cgroups, and says why not elsewhere.
    match Cgroups::detect_here().and_then(|cgroups| cgroups.try_out()) {
        Ok(()) => {
            assert_eq!(lambda.skipped, None, "{}", lines.join("\n"));
            let with = |memory: u32, jitter: bool| {
                lambda.rows.iter().any(|row| {
                    row.is_base() && row.memory_mb == memory && row.jitter_ms.is_some() == jitter
                })
            };
            assert!(with(128, false) && with(128, true) && with(1769, false) && with(1769, true));
            assert_eq!(lambda.rows.len(), 6, "{:?}", lambda.rows);
            assert!(lambda.rows.iter().any(|row| row.max_concurrency == Some(4)));
            assert!(lambda
                .rows
                .iter()
                .any(|row| row.parallelization_factor == Some(2)));
            for row in &lambda.rows {
                assert!(row.records_per_s > 0.0, "{row:?}");
                assert!(row.batch_p99_ms >= row.batch_p50_ms, "{row:?}");
                assert!(row.cpu_us_per_record > 0.0, "{row:?}");
                assert!(row.peak_rss_bytes > 1 << 20, "{row:?}");
            }
            assert!(lines.iter().any(|line| line.contains("128 MB, batch  100")));
        }
        Err(unusable) => {
            let reason = lambda.skipped.as_deref().expect("skipped, with the reason");
            assert!(reason.contains(&unusable.to_string()), "{reason}");
            assert!(lambda.rows.is_empty());
            assert!(lines
                .iter()
                .any(|line| line.starts_with("lambda-sized section skipped: ")));
        }
    }
    let e2e = report.end_to_end.as_ref().expect("end to end ran");
    assert_eq!(e2e.users, 30);
    assert!(e2e.p99_ms >= e2e.p50_ms);
    let deploy = report.deploy.as_ref().expect("deploy ran");
    assert_eq!(deploy.noop_deploy_ms.samples, 1);
    assert_eq!(report.noop_deploy_ms, Some(deploy.noop_deploy_ms.median));
    let reconcile = report.reconcile.as_ref().expect("the reconcile ran");
    assert_eq!(reconcile.users, 300);
    // The section measures the function on 10,000-record batches itself, just before the
    // backfill.
    assert_eq!(reconcile.function.records, 10_000);
    assert!(reconcile.function.records_per_s > 0.0);
    for (pass, repair) in [(&reconcile.backfill, true), (&reconcile.check_only, false)] {
        assert_eq!((pass.repair, pass.items), (repair, 300));
        assert!(pass.items_per_s > 0.0);
        // Read from the reconcile process itself, once it had reported.
        assert!(pass.peak_rss_bytes > 1 << 20, "{pass:?}");
    }
    assert_eq!(reconcile.backfill.repaired, 300);
    assert_eq!(reconcile.check_only.drifted_users, 0);
    let lambda_ran = lambda.skipped.is_none();
    assert_eq!(report.targets.len(), if lambda_ran { 7 } else { 6 });

    let dir = tempfile::tempdir().unwrap();
    report::write(&report, dir.path()).unwrap();
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["throughput"][1]["records"], 50);
    assert_eq!(latest["versions"]["fakecloud"], "0.51.0");
    assert_eq!(latest["reconcile"]["backfill"]["items"], 300);
    assert!(latest["lambda"]["rows"].is_array());
    assert_eq!(dir.path().join("lambda.svg").is_file(), lambda_ran);
}
