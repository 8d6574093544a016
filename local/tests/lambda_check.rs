//! The AWS archive built with cargo-lambda and run once under the local host
//! (`usersync_local::lambda_check`), on its own: `cargo xtask test` runs the same check as
//! its lambda step, with cargo-lambda from usersync's cache. Ignored by default (a cold
//! cargo-lambda build takes minutes); run it with
//! `CARGO_LAMBDA=<venv>/bin/cargo-lambda cargo test -p usersync-local --test lambda_check -- --ignored`.

use deployer::artifact::CARGO_LAMBDA_VARIABLE;
use deployer::settings::Architecture;
use usersync_local::emulator::ensure_binary;
use usersync_local::lambda_check;

#[test]
#[ignore = "builds the function with cargo-lambda (minutes when cold); needs CARGO_LAMBDA"]
fn the_cargo_lambda_build_runs_under_the_local_host() {
    let Some(cargo_lambda) = std::env::var_os(CARGO_LAMBDA_VARIABLE).filter(|v| !v.is_empty())
    else {
        panic!("set {CARGO_LAMBDA_VARIABLE} to a cargo-lambda executable (`cargo xtask test` installs one into usersync's cache)");
    };
    let emulator = ensure_binary(&mut |line| eprintln!("[fakecloud] {line}"))
        .unwrap_or_else(|err| panic!("{}", deployer::errors::chain(&err)));
    let architecture = if cfg!(target_arch = "aarch64") {
        Architecture::Arm64
    } else {
        Architecture::X86_64
    };
    for other in [Architecture::Arm64, Architecture::X86_64] {
        if other != architecture {
            eprintln!("{}", lambda_check::skipped_architecture(other));
        }
    }
    let report = lambda_check::check(
        std::path::Path::new(&cargo_lambda),
        &emulator,
        architecture,
        &mut |line| eprintln!("[lambda] {line}"),
    )
    .unwrap_or_else(|err| panic!("{}", deployer::errors::chain(&err)));
    eprintln!("{}", report.summary());
    assert_eq!(report.build.artifact.architecture, architecture);
    assert!(report.build.required_glibc <= Some(deployer::artifact::MAX_AWS_GLIBC));
    assert!(report.run.size > 0, "the object is empty");
}
