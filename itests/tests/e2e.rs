//! The end-to-end suite: every scenario of `itests::scenarios` on the selected backend
//! (`ITESTS_BACKEND`; see `itests::backend`). Prints the backend it used and how many scenarios
//! ran. A backend that was asked for and cannot run fails the run, saying why.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use serde_json::json;

use itests::backend::select_from_env;
use itests::harness::Backend;
use itests::scenarios;
use libtest_mimic::{Arguments, Failed, Trial};
use tokio::sync::OnceCell;

/// Where the run's outcome is written for `cargo xtask test` to summarise.
fn report_path() -> std::path::PathBuf {
    deployer::project::state_dir().join("e2e-report.json")
}

fn write_report(report: &serde_json::Value) {
    let path = report_path();
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, format!("{report:#}\n")));
    if let Err(err) = written {
        eprintln!("e2e: failed to write the report {}: {err}", path.display());
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => Arc::new(runtime),
        Err(err) => {
            eprintln!("e2e: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let selection = match runtime.block_on(select_from_env()) {
        Ok(selection) => selection,
        Err(err) => {
            eprintln!("e2e: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("e2e: backend {} ({})", selection.kind, selection.reason);

    // Started by the first scenario that runs, so a filtered or listing run starts nothing.
    let backend: Arc<OnceCell<Result<Backend, String>>> = Arc::new(OnceCell::new());
    let failures: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let trials = scenarios::all()
        .into_iter()
        .map(|scenario| {
            let runtime = Arc::clone(&runtime);
            let backend = Arc::clone(&backend);
            let selection = selection.clone();
            let failures = Arc::clone(&failures);
            Trial::test(scenario.name, move || {
                let outcome = runtime.block_on(async {
                    let backend = backend
                        .get_or_init(|| async {
                            Backend::start(&selection).await.map_err(|err| {
                                format!("failed to start the {} backend: {err:#}", selection.kind)
                            })
                        })
                        .await
                        .as_ref()
                        .map_err(|err| Failed::from(err.clone()))?;
                    (scenario.run)(backend)
                        .await
                        .map_err(|err| Failed::from(format!("{err:#}")))
                });
                if outcome.is_err() {
                    if let Ok(mut failures) = failures.lock() {
                        failures.push(scenario.name);
                    }
                }
                outcome
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    eprintln!(
        "e2e: {} scenario(s) run on the {} backend: {} passed, {} failed",
        conclusion.num_passed + conclusion.num_failed,
        selection.kind,
        conclusion.num_passed,
        conclusion.num_failed
    );
    let failed: Vec<&str> = failures.lock().map(|f| f.clone()).unwrap_or_default();
    write_report(&json!({
        "backend": selection.kind.as_str(),
        "reason": selection.reason,
        "scenarios_run": conclusion.num_passed + conclusion.num_failed,
        "passed": conclusion.num_passed,
        "failed": conclusion.num_failed,
        "filtered_out": conclusion.num_filtered_out,
        "failed_scenarios": failed,
    }));
    if let Some(Ok(backend)) = Arc::into_inner(backend).and_then(OnceCell::into_inner) {
        if let Err(err) = runtime.block_on(backend.stop()) {
            eprintln!(
                "e2e: failed to stop the {} backend: {err:#}",
                selection.kind
            );
        }
    }
    if conclusion.has_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
