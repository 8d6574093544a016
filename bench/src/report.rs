//! The benchmark's results: the report (stable JSON field names), the targets it is held to,
//! the terminal table, the throughput chart and the Lambda-sized chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::cold_start::ColdStartRun;
use super::deploy_times::DeployRun;
use super::end_to_end::EndToEndRun;
use super::lambda_sized::{LambdaRow, LambdaSection};
use super::reconcile::ReconcileRun;
use super::throughput::{FunctionRun, LimitRun, SizeResult};
use super::BenchError;

/// Bumped when a field changes meaning or goes away.
///
/// 2: adds `lambda` (the Lambda-sized section, null when not run) and `settings.sections`;
/// `limit_concurrency`, `limit_runtime`, `cold_start_ms` and `cold_start` are null when their
/// section was not run (`cargo xtask bench --only` / `--skip`).
pub const SCHEMA_VERSION: u32 = 2;

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: u32,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: RunSettings,
    /// The function's archive as this run built it (the `lambda-artifact` profile, for this
    /// machine's architecture): `architecture`, `zip_bytes`, `binary_bytes`.
    pub archive: Archive,
    /// Per batch size: `records`, `records_per_s`, `limit_records_per_s`, `ratio`,
    /// `peak_rss_bytes`, and the runs behind them.
    pub throughput: Vec<SizeResult>,
    /// The raw loop at each concurrency tried; the best one is the limit.
    pub limit_sweep: Vec<LimitRun>,
    pub limit_concurrency: Option<usize>,
    pub limit_runtime: Option<super::throughput::LoopRuntime>,
    /// The function at each `MAX_CONCURRENCY` tried (mixed batches).
    pub function_concurrency_sweep: Vec<FunctionRun>,
    /// Median spawn to first `/next`.
    pub cold_start_ms: Option<f64>,
    pub cold_start: Option<ColdStartRun>,
    /// The function sized as Lambda sizes it: `skipped` (the reason, or null), `setup` and
    /// `rows`, one per run with `memory_mb`, `batch_size`, `s3_latency_ms`, `jitter_ms`,
    /// `records_per_s`, `batch_p50_ms`, `batch_p99_ms`, `cpu_us_per_record`,
    /// `peak_rss_bytes`, and `max_concurrency` or `parallelization_factor` on the rows of
    /// those sweeps.
    pub lambda: Option<LambdaSection>,
    pub end_to_end: Option<EndToEndRun>,
    /// Median no-change `deploy`.
    pub noop_deploy_ms: Option<f64>,
    pub deploy: Option<DeployRun>,
    /// The whole-table reconcile: `backfill` and `check_only`, each with `items_per_s` and
    /// `peak_rss_bytes`; `function` (the records/s it is held to) and `backfill_ratio`.
    pub reconcile: Option<ReconcileRun>,
    pub targets: Vec<TargetCheck>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Archive {
    pub architecture: String,
    pub zip_bytes: u64,
    pub binary_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub os: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Versions {
    pub usersync: String,
    pub rustc: String,
    pub fakecloud: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSettings {
    /// `embedded emulator` or the endpoint URL.
    pub target: String,
    pub batch_sizes: Vec<usize>,
    pub repetitions: usize,
    pub function_max_concurrency: String,
    pub limit_concurrency_candidates: Vec<usize>,
    pub cold_start_repetitions: usize,
    pub end_to_end_users: usize,
    pub deploy_repetitions: usize,
    pub reconcile_users: usize,
    /// The sections run: `throughput`, `cold-start`, `lambda`, `end-to-end`, `deploy`,
    /// `reconcile`.
    pub sections: Vec<String>,
}

/// One target and whether this run met it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetCheck {
    pub name: String,
    /// Such as `>= 0.90` or `< 40 MiB`.
    pub target: String,
    pub measured: f64,
    pub unit: String,
    pub met: bool,
}

/// The targets of the benchmark, checked against `report`.
pub fn check_targets(report: &BenchReport) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    if let Some(largest) = report.throughput.iter().max_by_key(|r| r.records) {
        checks.push(TargetCheck {
            name: format!("throughput at {} records / raw S3 limit", largest.records),
            target: ">= 0.90".into(),
            measured: round(largest.ratio, 3),
            unit: "ratio".into(),
            met: largest.ratio >= 0.90,
        });
        let mib = largest.peak_rss_bytes as f64 / (1024.0 * 1024.0);
        checks.push(TargetCheck {
            name: format!("peak RSS of bootstrap at {} records", largest.records),
            target: "< 40 MiB".into(),
            measured: round(mib, 1),
            unit: "MiB".into(),
            met: mib < 40.0,
        });
    }
    if let Some(cold_start_ms) = report.cold_start_ms {
        checks.push(TargetCheck {
            name: "cold start to first /next".into(),
            target: "< 50 ms".into(),
            measured: round(cold_start_ms, 1),
            unit: "ms".into(),
            met: cold_start_ms < 50.0,
        });
    }
    if let Some(row) = report
        .lambda
        .as_ref()
        .and_then(|lambda| lambda.base_row(128, 100, 20))
    {
        checks.push(TargetCheck {
            name: "records/s per shard at 128 MB, batches of 100, S3 20 ms away".into(),
            target: ">= 1000".into(),
            measured: round(row.records_per_s, 0),
            unit: "records/s".into(),
            met: row.records_per_s >= 1000.0,
        });
    }
    if let Some(noop) = report.noop_deploy_ms {
        checks.push(TargetCheck {
            name: "no-change deploy".into(),
            target: "< 3 s".into(),
            measured: round(noop / 1000.0, 2),
            unit: "s".into(),
            met: noop < 3000.0,
        });
    }
    if let Some(reconcile) = &report.reconcile {
        checks.push(TargetCheck {
            name: format!(
                "reconcile backfill of {} users / function at {} mixed records",
                reconcile.users, reconcile.function.records
            ),
            target: ">= 0.90".into(),
            measured: round(reconcile.backfill_ratio, 3),
            unit: "ratio".into(),
            met: reconcile.backfill_ratio >= 0.90,
        });
        let peak = reconcile
            .backfill
            .peak_rss_bytes
            .max(reconcile.check_only.peak_rss_bytes);
        let mib = peak as f64 / (1024.0 * 1024.0);
        checks.push(TargetCheck {
            name: format!(
                "peak RSS of the reconcile process at {} users",
                reconcile.users
            ),
            target: "< 200 MiB".into(),
            measured: round(mib, 1),
            unit: "MiB".into(),
            met: mib < 200.0,
        });
    }
    checks
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The terminal table.
pub fn render_table(report: &BenchReport) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "machine: {} ({} cores, {:.1} GiB), {}",
        m.cpu,
        m.cores,
        m.memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0),
        m.os
    );
    let _ = writeln!(
        out,
        "versions: usersync {}, {}, fakecloud {}; target: {}; {} repetitions, medians (min-max)",
        report.versions.usersync,
        report.versions.rustc,
        report.versions.fakecloud.as_deref().unwrap_or("-"),
        report.settings.target,
        report.settings.repetitions
    );
    let _ = writeln!(
        out,
        "archive: {:.2} MB zip ({}), bootstrap {:.2} MB",
        report.archive.zip_bytes as f64 / 1e6,
        report.archive.architecture,
        report.archive.binary_bytes as f64 / 1e6
    );
    if !report.throughput.is_empty() {
        render_throughput(&mut out, report);
    }
    if let Some(c) = &report.cold_start {
        let _ = writeln!(
            out,
            "cold start: first /next {} ms, first response {} ms ({} starts)",
            spread(
                c.to_first_next_ms.median,
                c.to_first_next_ms.min,
                c.to_first_next_ms.max
            ),
            spread(
                c.to_first_response_ms.median,
                c.to_first_response_ms.min,
                c.to_first_response_ms.max
            ),
            c.repetitions
        );
    }
    if let Some(lambda) = &report.lambda {
        render_lambda(&mut out, lambda);
    }
    render_rest(&mut out, report);
    out
}

/// The throughput table, the raw limit's settings and the `MAX_CONCURRENCY` sweep.
fn render_throughput(out: &mut String, report: &BenchReport) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>8}  {:>20}  {:>20}  {:>6}  {:>20}  {:>9}  {:>14}  {:>9}",
        "records",
        "function rec/s",
        "raw S3 limit op/s",
        "ratio",
        "churn variant rec/s",
        "batch ms",
        "CPU ms fn/loop",
        "peak RSS"
    );
    for size in &report.throughput {
        let f = &size.function;
        let _ = writeln!(
            out,
            "{:>8}  {:>20}  {:>20}  {:>6.2}  {:>20}  {:>9}  {:>14}  {:>5.1} MiB",
            size.records,
            spread(
                f.records_per_s_spread.median,
                f.records_per_s_spread.min,
                f.records_per_s_spread.max
            ),
            spread(
                size.limit.operations_per_s_spread.median,
                size.limit.operations_per_s_spread.min,
                size.limit.operations_per_s_spread.max
            ),
            size.ratio,
            spread(
                size.churn.records_per_s_spread.median,
                size.churn.records_per_s_spread.min,
                size.churn.records_per_s_spread.max
            ),
            format!("{:.0}", f.batch_ms.median),
            format!("{:.0}/{:.0}", f.cpu_ms.median, size.limit.cpu_ms.median),
            size.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let (Some(concurrency), Some(runtime)) = (report.limit_concurrency, report.limit_runtime) {
        let _ = writeln!(
            out,
            "raw S3 limit measured at concurrency {concurrency} on {} (the best of {:?} on one thread and on a thread per core)",
            runtime.as_str(),
            report.settings.limit_concurrency_candidates
        );
    }
    if !report.function_concurrency_sweep.is_empty() {
        let sweep: Vec<String> = report
            .function_concurrency_sweep
            .iter()
            .map(|run| {
                format!(
                    "{}: {:.0}",
                    run.max_concurrency.unwrap_or_default(),
                    run.records_per_s
                )
            })
            .collect();
        let records = report
            .function_concurrency_sweep
            .first()
            .map_or(0, |r| r.records);
        let _ = writeln!(
            out,
            "function by MAX_CONCURRENCY ({records} records, rec/s): {}",
            sweep.join(", ")
        );
    }
}

/// The Lambda-sized section: a line per run, or why it was skipped.
fn render_lambda(out: &mut String, lambda: &LambdaSection) {
    if let Some(reason) = &lambda.skipped {
        let _ = writeln!(out, "lambda-sized section skipped: {reason}");
        return;
    }
    let _ = writeln!(out);
    if let Some(setup) = &lambda.setup {
        let _ = writeln!(
            out,
            "Lambda-sized ({} groups: CPU {}, memory limit {}; S3 over {} through a latency proxy; CPU from {}; peak RSS from {}):",
            setup.cgroup.as_str(),
            setup.cpu_quota,
            setup.memory_limit,
            setup.s3_scheme.as_str(),
            setup.cpu_time_from,
            setup.peak_rss_from
        );
    }
    let _ = writeln!(
        out,
        "{:>7}  {:>6}  {:>10}  {:>9}  {:>16}  {:>10}  {:>9}  sweep",
        "memory", "batch", "S3 latency", "records/s", "batch p50/p99 ms", "CPU µs/rec", "peak RSS",
    );
    for row in &lambda.rows {
        let latency = match row.jitter_ms {
            Some([low, high]) => format!("+{low}-{high} ms"),
            None => format!("+{} ms", row.s3_latency_ms),
        };
        let sweep = match (row.max_concurrency, row.parallelization_factor) {
            (Some(n), _) => format!("MAX_CONCURRENCY {n}"),
            (None, Some(n)) => format!("parallelization {n}"),
            (None, None) => String::new(),
        };
        let line = format!(
            "{:>4} MB  {:>6}  {:>10}  {:>9.0}  {:>16}  {:>10.0}  {:>5.1} MiB  {}",
            row.memory_mb,
            row.batch_size,
            latency,
            row.records_per_s,
            format!("{:.0}/{:.0}", row.batch_p50_ms, row.batch_p99_ms),
            row.cpu_us_per_record,
            row.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            sweep
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// End to end, deploy, reconcile and the targets.
fn render_rest(out: &mut String, report: &BenchReport) {
    if let Some(e2e) = &report.end_to_end {
        let _ = writeln!(
            out,
            "end to end ({} users, BatchWriteItem; batch size {}, window {} s): p50 {:.0} ms, p99 {:.0} ms, last write to last object {:.0} ms",
            e2e.users, e2e.batch_size, e2e.maximum_batching_window_seconds, e2e.p50_ms, e2e.p99_ms, e2e.last_write_to_last_object_ms
        );
    }
    if let Some(d) = &report.deploy {
        let _ = writeln!(
            out,
            "deploy: create {} ms, no-change {} ms, teardown {} ms",
            spread(d.create_ms.median, d.create_ms.min, d.create_ms.max),
            spread(
                d.noop_deploy_ms.median,
                d.noop_deploy_ms.min,
                d.noop_deploy_ms.max
            ),
            spread(d.teardown_ms.median, d.teardown_ms.min, d.teardown_ms.max)
        );
    }
    if let Some(r) = &report.reconcile {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let _ = writeln!(
            out,
            "reconcile ({} users, concurrency {}, {} segments; loaded in {:.1} s): backfill {:.0} items/s ({:.1} s, {:.1} s of it reading; peak RSS {:.1} MiB), check-only {:.0} items/s ({:.1} s, {:.1} s reading; peak RSS {:.1} MiB)",
            r.users,
            r.concurrency,
            r.segments,
            r.loading_s,
            r.backfill.items_per_s,
            r.backfill.seconds,
            r.backfill.reading_s,
            mib(r.backfill.peak_rss_bytes),
            r.check_only.items_per_s,
            r.check_only.seconds,
            r.check_only.reading_s,
            mib(r.check_only.peak_rss_bytes)
        );
        let _ = writeln!(
            out,
            "reconcile backfill / function: {:.2} (the function at {} mixed records: {:.0} rec/s, measured in {})",
            r.backfill_ratio, r.function.records, r.function.records_per_s, r.function.measured_in
        );
    }
    let _ = writeln!(out);
    for check in &report.targets {
        let _ = writeln!(
            out,
            "{} {}: {} {} (target {})",
            if check.met { "met   " } else { "MISSED" },
            check.name,
            check.measured,
            check.unit,
            check.target
        );
    }
}

fn spread(median: f64, min: f64, max: f64) -> String {
    format!("{median:.0} ({min:.0}-{max:.0})")
}

/// Where a run's files go: `<target>/bench/`.
pub fn output_dir() -> PathBuf {
    deployer::project::target_dir().join("bench")
}

/// Writes `<dir>/<started_at>.json`, `<dir>/latest.json`, and the charts of the sections run:
/// `<dir>/throughput.svg` and `<dir>/lambda.svg`; returns the paths written.
pub fn write(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json = serde_json::to_string_pretty(report).expect("the report always serializes");
    let stamp: String = report
        .started_at
        .chars()
        .map(|c| if c == ':' { '-' } else { c })
        .collect();
    let run_path = dir.join(format!("{stamp}.json"));
    let latest_path = dir.join("latest.json");
    std::fs::write(&run_path, &json).map_err(io(&run_path))?;
    std::fs::write(&latest_path, &json).map_err(io(&latest_path))?;
    let mut written = vec![run_path, latest_path];
    if !report.throughput.is_empty() {
        let chart_path = dir.join("throughput.svg");
        std::fs::write(&chart_path, throughput_chart(report)?).map_err(io(&chart_path))?;
        written.push(chart_path);
    }
    if let Some(lambda) = report.lambda.as_ref().filter(|l| !l.rows.is_empty()) {
        let chart_path = dir.join("lambda.svg");
        std::fs::write(&chart_path, lambda_chart(lambda)?).map_err(io(&chart_path))?;
        written.push(chart_path);
    }
    Ok(written)
}

/// The records per second of one partition's writes DynamoDB accepts, drawn on the Lambda
/// chart: a function slower than this falls behind a busy shard.
pub const PARTITION_WRITE_LIMIT: f64 = 1000.0;

/// An SVG chart of records per second against memory size (logarithmic), a line per batch
/// size and S3 latency, with one partition's write limit drawn in.
pub fn lambda_chart(lambda: &LambdaSection) -> Result<String, BenchError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        draw_lambda_chart(&root, lambda).map_err(|err| BenchError::Chart(err.to_string()))?;
        root.present()
            .map_err(|err| BenchError::Chart(err.to_string()))?;
    }
    Ok(svg)
}

/// The chart's lines: the rows at the function's own `MAX_CONCURRENCY`, in one lane, by batch
/// size and latency, each sorted by memory size.
fn lambda_lines(lambda: &LambdaSection) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for row in lambda.rows.iter().filter(|r| r.is_base()) {
        let label = lambda_line_label(row);
        let point = (f64::from(row.memory_mb), row.records_per_s);
        match lines.iter_mut().find(|(name, _)| *name == label) {
            Some((_, points)) => points.push(point),
            None => lines.push((label, vec![point])),
        }
    }
    for (_, points) in &mut lines {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

fn lambda_line_label(row: &LambdaRow) -> String {
    match row.jitter_ms {
        Some([low, high]) => format!("batch {}, S3 +{low}-{high} ms", row.batch_size),
        None => format!("batch {}, S3 +{} ms", row.batch_size, row.s3_latency_ms),
    }
}

fn draw_lambda_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    lambda: &LambdaSection,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let lines = lambda_lines(lambda);
    // The memory sizes measured, evenly spaced: they about double from one to the next.
    let mut sizes: Vec<f64> = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let slot = |memory: f64| {
        SegmentValue::CenterOf(sizes.iter().position(|&m| m == memory).unwrap_or(0) as u32)
    };
    let max_y = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(PARTITION_WRITE_LIMIT, f64::max)
        * 1.15;
    // A segmented `0..n` has a segment for each of 0 to n.
    let last_slot = sizes.len().saturating_sub(1) as u32;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "usersync: the function sized as Lambda sizes it (CPU share and memory limit)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..last_slot).into_segmented(), 0.0..max_y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(sizes.len().max(1))
        .x_desc("memory size, MB (1769 MB = one vCPU)")
        .y_desc("records per second per shard")
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => sizes
                .get(*i as usize)
                .map(|m| format!("{m:.0}"))
                .unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let limit = RGBColor(110, 110, 110);
    chart.draw_series(LineSeries::new(
        [
            (SegmentValue::Exact(0), PARTITION_WRITE_LIMIT),
            (SegmentValue::Last, PARTITION_WRITE_LIMIT),
        ],
        limit.stroke_width(2),
    ))?;
    chart.draw_series(std::iter::once(Text::new(
        "one partition's write limit",
        (SegmentValue::Last, PARTITION_WRITE_LIMIT),
        ("sans-serif", 14)
            .into_font()
            .color(&limit)
            .pos(Pos::new(HPos::Right, VPos::Bottom)),
    )))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(SegmentValue<u32>, f64)> = points
            .into_iter()
            .map(|(memory, rate)| (slot(memory), rate))
            .collect();
        draw_line(&mut chart, &label, color, points)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws `points` as a labelled line with a dot on each point.
fn draw_line<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    label: &str,
    color: RGBColor,
    points: Vec<(X::ValueType, Y::ValueType)>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    chart.draw_series(
        points
            .into_iter()
            .map(|point| Circle::new(point, 4, color.filled())),
    )?;
    Ok(())
}

/// An SVG chart of records per second against batch size (logarithmic), for the function's
/// two mixes, with the raw S3 limit drawn in.
pub fn throughput_chart(report: &BenchReport) -> Result<String, BenchError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        draw_chart(&root, report).map_err(|err| BenchError::Chart(err.to_string()))?;
        root.present()
            .map_err(|err| BenchError::Chart(err.to_string()))?;
    }
    Ok(svg)
}

/// A line of the chart: its label, colour and points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    report: &BenchReport,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let sizes: Vec<f64> = report.throughput.iter().map(|r| r.records as f64).collect();
    let (min_x, max_x) = (
        sizes.iter().copied().fold(f64::INFINITY, f64::min).max(1.0),
        sizes.iter().copied().fold(0.0, f64::max).max(2.0),
    );
    let max_y = report
        .throughput
        .iter()
        .flat_map(|r| {
            [
                r.records_per_s,
                r.limit_records_per_s,
                r.churn.records_per_s,
            ]
        })
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "usersync: function throughput against the raw S3 limit",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((min_x * 0.8..max_x * 1.25).log_scale(), 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc("records per batch")
        .y_desc("records per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series: [Series; 3] = [
        (
            "function, 80% insert / 20% remove",
            BLUE,
            report
                .throughput
                .iter()
                .map(|r| (r.records as f64, r.records_per_s))
                .collect(),
        ),
        (
            "function, a tenth inserted and removed",
            GREEN,
            report
                .throughput
                .iter()
                .map(|r| (r.records as f64, r.churn.records_per_s))
                .collect(),
        ),
        (
            "raw S3 limit (plain SDK loop)",
            RED,
            report
                .throughput
                .iter()
                .map(|r| (r.records as f64, r.limit_records_per_s))
                .collect(),
        ),
    ];
    for (label, color, points) in series {
        draw_line(&mut chart, label, color, points)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::reconcile::{FunctionReference, ReconcilePass};
    use super::super::stats::Summary;
    use super::super::workload::Variant;
    use super::*;

    fn function_run(variant: Variant, records: usize, rate: f64, rss: u64) -> FunctionRun {
        FunctionRun {
            variant,
            records,
            max_concurrency: None,
            repetitions: 3,
            records_per_s: rate,
            records_per_s_spread: Summary::of(&[rate]),
            batch_ms: Summary::of(&[records as f64 / rate * 1000.0]),
            cpu_ms: Summary::of(&[1.0]),
            peak_rss_bytes: rss,
        }
    }

    fn limit_run(records: usize, rate: f64) -> LimitRun {
        LimitRun {
            operations: records,
            concurrency: 64,
            runtime: super::super::throughput::LoopRuntime::OneThread,
            repetitions: 3,
            operations_per_s: rate,
            operations_per_s_spread: Summary::of(&[rate]),
            cpu_ms: Summary::of(&[1.0]),
        }
    }

    fn sample() -> BenchReport {
        let sizes = [(100, 900.0, 1000.0), (10_000, 950.0, 1000.0)];
        BenchReport {
            schema: SCHEMA_VERSION,
            started_at: "2026-12-02T10:00:00Z".into(),
            duration_s: 1.0,
            machine: Machine {
                cpu: "test".into(),
                cores: 2,
                memory_bytes: 1 << 30,
                os: "test".into(),
            },
            versions: Versions {
                usersync: "0.1.0".into(),
                rustc: "rustc".into(),
                fakecloud: Some("0.51.0".into()),
            },
            archive: Archive {
                architecture: "x86_64".into(),
                zip_bytes: 2_900_000,
                binary_bytes: 7_000_000,
            },
            settings: RunSettings {
                target: "embedded emulator".into(),
                batch_sizes: vec![100, 10_000],
                repetitions: 3,
                function_max_concurrency: "default".into(),
                limit_concurrency_candidates: vec![64],
                cold_start_repetitions: 1,
                end_to_end_users: 0,
                deploy_repetitions: 0,
                reconcile_users: 1000,
                sections: vec!["throughput".into(), "cold-start".into(), "reconcile".into()],
            },
            throughput: sizes
                .iter()
                .map(|&(records, rate, limit)| {
                    SizeResult::new(
                        function_run(Variant::Mixed, records, rate, 30 << 20),
                        function_run(Variant::Churn, records, rate * 1.1, 31 << 20),
                        limit_run(records, limit),
                    )
                })
                .collect(),
            limit_sweep: vec![limit_run(1000, 1000.0)],
            limit_concurrency: Some(64),
            limit_runtime: Some(super::super::throughput::LoopRuntime::OneThread),
            function_concurrency_sweep: Vec::new(),
            cold_start_ms: Some(12.0),
            cold_start: Some(ColdStartRun {
                repetitions: 1,
                to_first_next_ms: Summary::of(&[12.0]),
                to_first_response_ms: Summary::of(&[20.0]),
            }),
            lambda: None,
            end_to_end: None,
            noop_deploy_ms: Some(3500.0),
            deploy: None,
            reconcile: Some(reconcile_run()),
            targets: Vec::new(),
        }
    }

    fn reconcile_pass(repair: bool, rate: f64, rss: u64) -> ReconcilePass {
        ReconcilePass {
            repair,
            items: 1000,
            seconds: 1000.0 / rate,
            reading_s: 100.0 / rate,
            items_per_s: rate,
            peak_rss_bytes: rss,
            cpu_ms: 1.0,
            drifted_users: if repair { 1000 } else { 0 },
            repaired: if repair { 1000 } else { 0 },
        }
    }

    fn reconcile_run() -> ReconcileRun {
        ReconcileRun {
            users: 1000,
            concurrency: 16,
            segments: 4,
            loading_s: 1.0,
            backfill: reconcile_pass(true, 850.0, 60 << 20),
            check_only: reconcile_pass(false, 5000.0, 210 << 20),
            function: FunctionReference {
                records: 10_000,
                records_per_s: 1000.0,
                measured_in: "the reconcile section".into(),
                function: function_run(Variant::Mixed, 10_000, 1000.0, 20 << 20),
            },
            backfill_ratio: 0.85,
        }
    }

    #[test]
    fn targets_are_judged_on_the_largest_batch() {
        let checks = check_targets(&sample());
        let by_name = |prefix: &str| {
            checks
                .iter()
                .find(|c| c.name.starts_with(prefix))
                .unwrap_or_else(|| panic!("no check {prefix}"))
                .clone()
        };
        let ratio = by_name("throughput at 10000");
        assert_eq!(ratio.measured, 0.95);
        assert!(ratio.met);
        let rss = by_name("peak RSS");
        assert_eq!(rss.measured, 31.0);
        assert!(rss.met);
        assert!(by_name("cold start").met);
        let deploy = by_name("no-change deploy");
        assert_eq!(deploy.measured, 3.5);
        assert!(!deploy.met);
    }

    #[test]
    fn the_reconcile_is_held_to_the_function_and_to_its_memory_at_the_larger_pass() {
        let checks = check_targets(&sample());
        let backfill = checks
            .iter()
            .find(|c| c.name.starts_with("reconcile backfill of 1000 users"))
            .expect("a backfill check");
        assert_eq!((backfill.measured, backfill.met), (0.85, false));
        assert!(backfill.name.ends_with("function at 10000 mixed records"));
        let rss = checks
            .iter()
            .find(|c| c.name == "peak RSS of the reconcile process at 1000 users")
            .expect("a memory check");
        assert_eq!((rss.measured, rss.met), (210.0, false));
        let table = render_table(&sample());
        assert!(table.contains("backfill 850 items/s"), "{table}");
        assert!(table.contains("check-only 5000 items/s"), "{table}");
        assert!(
            table.contains("measured in the reconcile section"),
            "{table}"
        );
        let json = serde_json::to_value(sample()).unwrap();
        for field in ["items_per_s", "peak_rss_bytes"] {
            assert!(
                json["reconcile"]["backfill"].get(field).is_some(),
                "{field}"
            );
            assert!(
                json["reconcile"]["check_only"].get(field).is_some(),
                "{field}"
            );
        }
        assert_eq!(json["reconcile"]["backfill_ratio"], 0.85);
    }

    #[test]
    fn the_report_has_its_stable_field_names() {
        let json = serde_json::to_value(sample()).unwrap();
        for field in [
            "records",
            "records_per_s",
            "limit_records_per_s",
            "ratio",
            "peak_rss_bytes",
        ] {
            assert!(json["throughput"][0].get(field).is_some(), "{field}");
        }
        assert_eq!(json["cold_start_ms"], 12.0);
        assert_eq!(json["noop_deploy_ms"], 3500.0);
    }

    #[test]
    fn the_chart_is_an_svg_with_the_three_series_and_the_table_names_every_size() {
        let mut report = sample();
        report.targets = check_targets(&report);
        let svg = throughput_chart(&report).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for label in ["raw S3 limit", "80% insert", "a tenth inserted"] {
            assert!(svg.contains(label), "{label}");
        }
        let table = render_table(&report);
        assert!(
            table.contains("  10000 ") || table.contains("   10000"),
            "{table}"
        );
        assert!(table.contains("MISSED no-change deploy"), "{table}");
    }

    #[test]
    fn runs_are_written_as_json_latest_and_the_chart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write(&sample(), dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(dir.path().join("latest.json").is_file());
        assert!(dir.path().join("2026-12-02T10-00-00Z.json").is_file());
        assert!(dir.path().join("throughput.svg").is_file());
        assert!(!dir.path().join("lambda.svg").exists(), "no Lambda section");
    }

    fn lambda_row(memory_mb: u32, batch_size: usize, rate: f64) -> LambdaRow {
        LambdaRow::sample(memory_mb, batch_size, rate)
    }

    fn lambda_section(rate_at_128: f64) -> LambdaSection {
        let mut rows = Vec::new();
        for (memory, factor) in [(128, 1.0), (256, 1.9), (512, 3.5), (1024, 5.0), (1769, 6.0)] {
            rows.push(lambda_row(memory, 100, rate_at_128 * factor));
            rows.push(lambda_row(memory, 1000, rate_at_128 * factor * 1.1));
            rows.push(LambdaRow {
                s3_latency_ms: 0,
                jitter_ms: Some([10, 40]),
                ..lambda_row(memory, 100, rate_at_128 * factor * 0.8)
            });
        }
        rows.push(LambdaRow {
            max_concurrency: Some(256),
            ..lambda_row(128, 100, 5000.0)
        });
        rows.push(LambdaRow {
            parallelization_factor: Some(4),
            ..lambda_row(128, 100, 3000.0)
        });
        LambdaSection {
            skipped: None,
            setup: None,
            rows,
        }
    }

    #[test]
    fn the_lambda_target_is_judged_on_128_mb_batches_of_100_at_20_ms() {
        let mut report = sample();
        report.lambda = Some(lambda_section(800.0));
        let checks = check_targets(&report);
        let check = checks
            .iter()
            .find(|c| c.name.starts_with("records/s per shard at 128 MB"))
            .expect("a Lambda-sized check");
        assert_eq!((check.measured, check.met), (800.0, false));
        assert_eq!(check.target, ">= 1000");

        report.lambda = Some(lambda_section(1250.0));
        let check = check_targets(&report)
            .into_iter()
            .find(|c| c.name.starts_with("records/s per shard at 128 MB"))
            .unwrap();
        assert!(check.met);

        report.lambda = Some(LambdaSection {
            skipped: Some("cgroups cannot be used: not running as root".into()),
            setup: None,
            rows: Vec::new(),
        });
        assert!(!check_targets(&report)
            .iter()
            .any(|c| c.name.contains("128 MB")));
        let table = render_table(&report);
        assert!(
            table.contains(
                "lambda-sized section skipped: cgroups cannot be used: not running as root"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["lambda"]["skipped"],
            "cgroups cannot be used: not running as root"
        );
        assert_eq!(json["schema"], 2);
    }

    #[test]
    fn the_lambda_chart_has_a_line_per_batch_size_and_latency_and_the_partition_limit() {
        let section = lambda_section(800.0);
        let lines = lambda_lines(&section);
        let labels: Vec<&str> = lines.iter().map(|(label, _)| label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "batch 100, S3 +20 ms",
                "batch 1000, S3 +20 ms",
                "batch 100, S3 +10-40 ms"
            ]
        );
        assert!(lines.iter().all(|(_, points)| points.len() == 5));
        assert_eq!(lines[0].1[0], (128.0, 800.0));
        let svg = lambda_chart(&section).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in [
            "batch 100, S3 +20 ms",
            "batch 100, S3 +10-40 ms",
            "write limit",
        ] {
            assert!(svg.contains(label), "{label}");
        }

        // One memory size is a chart of one column.
        let one_size = LambdaSection {
            rows: vec![lambda_row(128, 100, 700.0), lambda_row(128, 1000, 650.0)],
            ..lambda_section(1.0)
        };
        assert!(lambda_chart(&one_size)
            .unwrap()
            .contains("batch 1000, S3 +20 ms"));

        let mut report = sample();
        report.lambda = Some(section);
        let table = render_table(&report);
        assert!(table.contains("MAX_CONCURRENCY 256"), "{table}");
        assert!(table.contains("parallelization 4"), "{table}");
        assert!(table.contains(" 128 MB "), "{table}");
        let dir = tempfile::tempdir().unwrap();
        let paths = write(&report, dir.path()).unwrap();
        assert_eq!(paths.len(), 4);
        assert!(dir.path().join("lambda.svg").is_file());
    }

    #[test]
    fn a_run_of_one_section_leaves_the_others_null_and_draws_only_its_chart() {
        let mut report = sample();
        report.throughput.clear();
        report.limit_sweep.clear();
        report.limit_concurrency = None;
        report.limit_runtime = None;
        report.cold_start = None;
        report.cold_start_ms = None;
        report.noop_deploy_ms = None;
        report.reconcile = None;
        report.lambda = Some(lambda_section(900.0));
        let checks = check_targets(&report);
        assert_eq!(checks.len(), 1, "{checks:?}");
        let table = render_table(&report);
        assert!(!table.contains("raw S3 limit"), "{table}");
        assert!(!table.contains("cold start"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["cold_start_ms"], serde_json::Value::Null);
        assert_eq!(json["limit_concurrency"], serde_json::Value::Null);
        let dir = tempfile::tempdir().unwrap();
        let paths = write(&report, dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(!dir.path().join("throughput.svg").exists());
        assert!(dir.path().join("lambda.svg").is_file());
    }
}
