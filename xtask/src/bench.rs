//! `cargo xtask bench`: measures the function, the pipeline and the deployer; see
//! `usersync_bench`.

use anyhow::{bail, Context, Result};
use deployer::project::{cargo_command, project_root};
use usersync_bench::{report, BenchOptions};

/// A section of the benchmark, for `--only` and `--skip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// The raw S3 limit, the function by batch size against it, its MAX_CONCURRENCY sweep
    Throughput,
    /// Process spawn to the first /next and to the first response
    ColdStart,
    /// The function in a cgroup per Lambda memory size (CPU share and memory limit), S3 20 ms
    /// away through a latency proxy; MAX_CONCURRENCY and parallelization factor at 128 MB
    Lambda,
    /// Users written with BatchWriteItem through the local pipeline
    EndToEnd,
    /// A new stack, a no-change deploy, a teardown
    Deploy,
    /// The whole-table reconcile
    Reconcile,
}

impl Section {
    const ALL: [Section; 6] = [
        Section::Throughput,
        Section::ColdStart,
        Section::Lambda,
        Section::EndToEnd,
        Section::Deploy,
        Section::Reconcile,
    ];

    /// Leaves this section out of `options`.
    fn skip(self, options: &mut BenchOptions) {
        match self {
            Section::Throughput => options.throughput = false,
            Section::ColdStart => options.cold_start_repetitions = 0,
            Section::Lambda => options.lambda = None,
            Section::EndToEnd => options.end_to_end_users = 0,
            Section::Deploy => options.deploy_repetitions = 0,
            Section::Reconcile => options.reconcile_users = 0,
        }
    }
}

use crate::args::{print_json, OutputFormat, TargetArgs};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Batch sizes to measure the function on (records per invocation) [default: 100,1000,10000;
    /// with --quick: 100,1000]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=10_000))]
    sizes: Option<Vec<u16>>,
    /// Repetitions of each measurement (medians and spreads are over these) [default: 5; with
    /// --quick: 2]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    repetitions: Option<u16>,
    /// Users in the table the whole-table reconcile is measured on; 0 skips it [default:
    /// 100000; with --quick: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    reconcile_users: Option<u32>,
    /// A short run to try the command: sizes 100 and 1000, two repetitions, one deploy cycle,
    /// 200 users end to end, no MAX_CONCURRENCY sweep, a quarter of the Lambda-sized batches
    /// and shorter sweeps there, 10000 users reconciled (the function is still measured on
    /// 10000-record batches for the reconcile to be compared with); --sizes, --repetitions and
    /// --reconcile-users still apply
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "SECTION",
        conflicts_with = "skip"
    )]
    only: Vec<Section>,
    /// Leave these sections out (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTION")]
    skip: Vec<Section>,
}

pub async fn run(args: BenchArgs, target_args: &TargetArgs) -> Result<()> {
    if target_args.local {
        bail!("--local: the benchmark starts an emulator of its own, so that nothing else runs on it; to measure another endpoint, pass --endpoint-url URL");
    }
    if cfg!(debug_assertions) {
        return rerun_in_release();
    }
    let mut options = if args.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::default()
    };
    if let Some(sizes) = &args.sizes {
        options.batch_sizes = sizes.iter().map(|&n| usize::from(n)).collect();
    }
    if let Some(repetitions) = args.repetitions {
        options.repetitions = usize::from(repetitions);
    }
    if let Some(users) = args.reconcile_users {
        options.reconcile_users = users as usize;
    }
    let skipped = if args.only.is_empty() {
        args.skip.clone()
    } else {
        Section::ALL
            .into_iter()
            .filter(|section| !args.only.contains(section))
            .collect()
    };
    for section in skipped {
        section.skip(&mut options);
    }
    if target_args.endpoint_url.is_some() {
        let target = target_args.connect().await?;
        options.endpoint = Some(target);
    }

    let report = usersync_bench::run(&options, &mut |line| eprintln!("{line}"))
        .await
        .context("failed to run the benchmark")?;
    let written = report::write(&report, &report::output_dir())
        .context("failed to write the benchmark's results")?;
    match target_args.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Text => {
            eprintln!();
            print!("{}", report::render_table(&report));
        }
    }
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The host, the poller and the raw S3 loop run in this process: measured in an unoptimised
/// build they would measure the build. So a debug `cargo xtask bench` builds and runs the
/// release `xtask` with the same arguments (the first time takes a few minutes).
fn rerun_in_release() -> Result<()> {
    eprintln!(
        "benchmarks run in a release build of xtask; building it (cached after the first time)"
    );
    let status = cargo_command()
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .current_dir(project_root())
        .status()
        .context("failed to run cargo for the release build of the benchmark")?;
    if !status.success() {
        bail!("the benchmark failed ({status}); its output is above");
    }
    Ok(())
}
