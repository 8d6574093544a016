//! The benchmark's machinery, end to end on the embedded emulator, at a tiny scale: every
//! section runs and the report holds what the README promises. Timings are not asserted
//! (performance is measured by `cargo xtask bench`, never by tests).

use usersync_bench::{report, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_section_of_the_benchmark_runs_and_is_reported() {
    let options = BenchOptions {
        batch_sizes: vec![10, 50],
        repetitions: 1,
        limit_concurrencies: vec![4, 8],
        function_concurrencies: vec![2, 4],
        cold_start_repetitions: 2,
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
    assert!([4, 8].contains(&report.limit_concurrency));
    assert_eq!(report.function_concurrency_sweep.len(), 2);
    assert!(report.cold_start_ms > 0.0);
    assert!(report.cold_start.to_first_response_ms.median >= report.cold_start_ms);
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
    assert_eq!(report.targets.len(), 6);

    let dir = tempfile::tempdir().unwrap();
    report::write(&report, dir.path()).unwrap();
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["throughput"][1]["records"], 50);
    assert_eq!(latest["versions"]["fakecloud"], "0.51.0");
    assert_eq!(latest["reconcile"]["backfill"]["items"], 300);
}
