//! The short fuzz pass CI runs (`deployer::fuzz::run_short_pass`), as a test that runs only
//! when asked for: it installs cargo-fuzz on first use and builds the instrumented targets.
//!
//!     cargo test -p deployer --test fuzz_pass -- --ignored --nocapture
//!
//! `USERSYNC_FUZZ_SECONDS` sets the seconds per target (default 20).

use deployer::fuzz::{run_short_pass, TARGETS};

#[test]
#[ignore = "minutes: builds the fuzz targets and fuzzes each for 20 s; run with --ignored"]
fn a_short_fuzz_pass_finds_no_failing_input() {
    let seconds = std::env::var("USERSYNC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let report = run_short_pass(seconds, &mut |line| eprintln!("[fuzz] {line}"))
        .unwrap_or_else(|err| panic!("{err}"));
    let ran: Vec<&str> = report.targets.iter().map(|run| run.target).collect();
    assert_eq!(ran, TARGETS);
    for run in &report.targets {
        assert!(run.runs.is_some_and(|n| n > 0), "{run:?}");
    }
}
