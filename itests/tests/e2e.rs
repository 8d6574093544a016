//! The end-to-end suite: every scenario of `itests::scenarios` on the selected backend
//! (`ITESTS_BACKEND`; see `itests::backend`). Prints the backend it used and how many scenarios
//! ran. A backend that was asked for and cannot run fails the run, saying why.

use std::process::ExitCode;
use std::sync::Arc;

use itests::backend::select_from_env;
use itests::harness::Backend;
use itests::scenarios;
use libtest_mimic::{Arguments, Failed, Trial};
use tokio::sync::OnceCell;

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
    let trials = scenarios::all()
        .into_iter()
        .map(|scenario| {
            let runtime = Arc::clone(&runtime);
            let backend = Arc::clone(&backend);
            let selection = selection.clone();
            Trial::test(scenario.name, move || {
                runtime.block_on(async {
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
                })
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
