//! `decree-bench run --runs N`: the whole run made N times and summed up. On the 2-vCPU hosts this
//! project runs on, the same build's throughput swings 2x between minutes and a low-load verdict
//! turns on a few microseconds of one fdatasync (docs/benchmarks.md, sessions 10-16), so what a
//! build is worth is each point's median over runs and how many runs met each target.

use crate::cli::RunArgs;
use crate::error::BenchError;
use crate::report::{Ratio, Report, Row, TargetCheck, Verdict};
use crate::run_command;
use serde::Serialize;
use std::fmt::Write as _;

/// The parts of one run's report a series sums up.
#[derive(Clone, Copy, Debug)]
pub struct RunOutcome<'a> {
    /// Every measured point.
    pub rows: &'a [Row],
    /// decree/etcd where both ran.
    pub ratios: &'a [Ratio],
    /// The targets, in the report's order.
    pub targets: &'a [TargetCheck],
}

impl<'a> RunOutcome<'a> {
    /// Borrows them from `report`.
    pub fn of(report: &'a Report) -> RunOutcome<'a> {
        RunOutcome { rows: &report.rows, ratios: &report.ratios, targets: &report.targets }
    }
}

/// Smallest, median and largest of a value over the runs that measured it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread { min: sorted[0], median, max: sorted[n - 1] })
    }
}

/// One (system, mode, client count) point over the runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointSummary {
    /// "decree" or "etcd".
    pub system: String,
    /// "closed" or "open".
    pub mode: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Runs that measured this point.
    pub runs: usize,
    /// Committed operations per second.
    pub ops_per_s: Spread,
    /// Median latency (coordinated-omission corrected), µs.
    pub p50_us: Spread,
    /// 99th percentile latency, µs.
    pub p99_us: Spread,
    /// decree's throughput over etcd's at this client count (decree rows where etcd also ran).
    pub throughput_ratio: Option<Spread>,
}

/// One target over the runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetTally {
    /// What is required.
    pub target: String,
    /// Runs that met it.
    pub met: usize,
    /// Runs that missed it.
    pub missed: usize,
    /// Runs that did not measure it.
    pub not_measured: usize,
    /// What each run measured, in run order.
    pub measured: Vec<String>,
}

/// The series: its points and targets over every run that finished, and the runs that failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSummary {
    /// Runs that finished.
    pub runs: usize,
    /// Runs that stopped with an error: (run number from 1, the error).
    pub failed: Vec<(u32, String)>,
    /// Points in the order the runs measured them.
    pub points: Vec<PointSummary>,
    /// Targets in the report's order.
    pub targets: Vec<TargetTally>,
}

/// Sums up `runs` (the ones that finished) beside the ones that `failed`.
pub fn summarize(runs: &[RunOutcome<'_>], failed: Vec<(u32, String)>) -> SeriesSummary {
    let mut keys: Vec<(&str, &str, usize)> = Vec::new();
    for row in runs.iter().flat_map(|run| run.rows) {
        let key = (row.system.as_str(), row.mode.as_str(), row.clients);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let points = keys
        .into_iter()
        .map(|(system, mode, clients)| {
            let rows: Vec<&Row> = runs
                .iter()
                .flat_map(|run| run.rows)
                .filter(|row| row.system == system && row.mode == mode && row.clients == clients)
                .collect();
            let spread = |value: fn(&Row) -> f64| {
                Spread::of(&rows.iter().map(|row| value(row)).collect::<Vec<_>>()).expect("a point has a row")
            };
            let ratios: Vec<f64> = runs
                .iter()
                .flat_map(|run| run.ratios)
                .filter(|ratio| system == "decree" && ratio.clients == clients)
                .map(|ratio| ratio.throughput_ratio)
                .collect();
            PointSummary {
                system: system.into(),
                mode: mode.into(),
                clients,
                runs: rows.len(),
                ops_per_s: spread(|row| row.ops_per_s),
                p50_us: spread(|row| row.latency.p50_us as f64),
                p99_us: spread(|row| row.latency.p99_us as f64),
                throughput_ratio: Spread::of(&ratios),
            }
        })
        .collect();
    let target_count = runs.iter().map(|run| run.targets.len()).max().unwrap_or(0);
    let targets = (0..target_count)
        .map(|at| {
            let checks: Vec<&TargetCheck> = runs.iter().filter_map(|run| run.targets.get(at)).collect();
            let count = |verdict| checks.iter().filter(|check| check.verdict == verdict).count();
            TargetTally {
                target: checks[0].target.clone(),
                met: count(Verdict::Met),
                missed: count(Verdict::Missed),
                not_measured: count(Verdict::NotMeasured),
                measured: checks.iter().map(|check| check.measured.clone()).collect(),
            }
        })
        .collect();
    SeriesSummary { runs: runs.len(), failed, points, targets }
}

/// The summary as text: a table of the points, then each target's count.
pub fn render(summary: &SeriesSummary) -> String {
    let mut out = format!("series: {} runs finished", summary.runs);
    for (run, error) in &summary.failed {
        let _ = write!(out, "; run {run} failed: {error}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:>7} {:>6} {:>7} {:>5}   {:>29}   {:>23}   {:>23}   {:>20}",
        "system",
        "mode",
        "clients",
        "runs",
        "ops/s min / median / max",
        "p50 us min/med/max",
        "p99 us min/med/max",
        "x etcd min/med/max"
    );
    for point in &summary.points {
        let triple = |s: &Spread, decimals: usize| {
            format!("{:.d$} / {:.d$} / {:.d$}", s.min, s.median, s.max, d = decimals)
        };
        let ratio = point.throughput_ratio.as_ref().map_or("-".into(), |s| triple(s, 1));
        let _ = writeln!(
            out,
            "{:>7} {:>6} {:>7} {:>5}   {:>29}   {:>23}   {:>23}   {:>20}",
            point.system,
            point.mode,
            point.clients,
            point.runs,
            triple(&point.ops_per_s, 0),
            triple(&point.p50_us, 0),
            triple(&point.p99_us, 0),
            ratio
        );
    }
    let _ = writeln!(out, "targets over {} runs:", summary.runs);
    for tally in &summary.targets {
        let measured_in = tally.met + tally.missed;
        let verdict = if measured_in == 0 {
            "not measured".to_string()
        } else {
            format!("met in {} of {measured_in}", tally.met)
        };
        let _ = writeln!(out, "  {:<14} {}", verdict, tally.target);
    }
    out
}

/// The series as JSON: the summary and every finished run's full report.
#[derive(Serialize)]
struct SeriesJson<'a> {
    summary: &'a SeriesSummary,
    reports: &'a [Report],
}

/// Makes `args.runs` whole runs, each written to `<out>/run-N/`, and prints the summary (JSON with
/// `--json`). A run that stops with an error is counted as failed and the series goes on; the
/// series fails only when no run finished.
pub fn run(args: &RunArgs) -> Result<SeriesSummary, BenchError> {
    args.validate()?;
    let (mut reports, mut failed, mut last_error) = (Vec::new(), Vec::new(), None);
    for n in 1..=args.runs {
        eprintln!("== run {n} of {}", args.runs);
        let report = match run_command::measure(args) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("decree-bench: run {n} failed: {error}");
                failed.push((n, error.to_string()));
                last_error = Some(error);
                continue;
            }
        };
        let out = args.out.join(format!("run-{n}"));
        run_command::write_outputs(&report, &out)?;
        if !args.json {
            run_command::print_table(&report, &out);
        }
        reports.push(report);
    }
    if reports.is_empty() {
        return Err(last_error.expect("at least one run was made"));
    }
    let outcomes: Vec<RunOutcome> = reports.iter().map(RunOutcome::of).collect();
    let summary = summarize(&outcomes, failed);
    let json = serde_json::to_string_pretty(&SeriesJson { summary: &summary, reports: &reports })
        .expect("a series serializes");
    let path = args.out.join("series.json");
    std::fs::write(&path, &json)
        .map_err(|e| BenchError::Output { path: path.display().to_string(), detail: e.to_string() })?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", render(&summary));
        println!("wrote {}", path.display());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &str, verdict: Verdict, measured: &str) -> TargetCheck {
        TargetCheck { target: target.into(), measured: measured.into(), verdict }
    }

    fn ratio(clients: usize, throughput_ratio: f64) -> Ratio {
        Ratio { clients, throughput_ratio, p50_latency_ratio: 0.1, p99_latency_ratio: 0.1 }
    }

    /// One run's rows, ratios and targets, owned (`RunOutcome` borrows them).
    type Parts = (Vec<Row>, Vec<Ratio>, Vec<TargetCheck>);

    fn parts(decree_ops: f64, p50_us: u64, etcd_ops: f64, p50_met: bool) -> Parts {
        let verdict = if p50_met { Verdict::Met } else { Verdict::Missed };
        (
            vec![Row::for_test("decree", 64, decree_ops, p50_us), Row::for_test("etcd", 64, etcd_ops, 5_000)],
            vec![ratio(64, decree_ops / etcd_ops)],
            vec![
                check("throughput", Verdict::Met, &format!("{decree_ops}")),
                check("p50", verdict, &format!("p50 {p50_us}")),
                check("shm", Verdict::NotMeasured, "not this run"),
            ],
        )
    }

    fn three_runs() -> [Parts; 3] {
        [parts(300.0, 200, 10.0, true), parts(100.0, 400, 10.0, false), parts(200.0, 300, 5.0, false)]
    }

    fn outcomes(runs: &[Parts]) -> Vec<RunOutcome<'_>> {
        runs.iter().map(|(rows, ratios, targets)| RunOutcome { rows, ratios, targets }).collect()
    }

    #[test]
    fn a_point_gets_its_min_median_and_max_over_the_runs() {
        let runs = three_runs();
        let summary = summarize(&outcomes(&runs), Vec::new());
        assert_eq!(summary.runs, 3);
        let decree = &summary.points[0];
        assert_eq!((decree.system.as_str(), decree.clients, decree.runs), ("decree", 64, 3));
        assert_eq!(decree.ops_per_s, Spread { min: 100.0, median: 200.0, max: 300.0 });
        assert_eq!(decree.p50_us, Spread { min: 200.0, median: 300.0, max: 400.0 });
        assert_eq!(decree.p99_us.median, 600.0);
        assert_eq!(decree.throughput_ratio, Some(Spread { min: 10.0, median: 30.0, max: 40.0 }));
        let etcd = &summary.points[1];
        assert_eq!((etcd.system.as_str(), etcd.throughput_ratio.clone()), ("etcd", None));
        assert_eq!(etcd.ops_per_s.median, 10.0);
    }

    #[test]
    fn each_target_counts_the_runs_that_met_and_missed_it_and_keeps_what_each_measured() {
        let runs = three_runs();
        let summary = summarize(&outcomes(&runs), vec![(4, "the leader changed".into())]);
        let p50 = &summary.targets[1];
        assert_eq!((p50.target.as_str(), p50.met, p50.missed, p50.not_measured), ("p50", 1, 2, 0));
        assert_eq!(p50.measured, ["p50 200", "p50 400", "p50 300"]);
        assert_eq!((summary.targets[0].met, summary.targets[2].not_measured), (3, 3));
        let text = render(&summary);
        assert!(text.contains("run 4 failed: the leader changed"), "{text}");
        assert!(text.contains("met in 1 of 3  p50"), "{text}");
        assert!(text.contains("not measured   shm"), "{text}");
    }

    #[test]
    fn an_even_count_takes_the_mean_of_the_middle_two_and_no_values_give_no_spread() {
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]), Some(Spread { min: 1.0, median: 2.5, max: 4.0 }));
        assert_eq!(Spread::of(&[]), None);
    }
}
