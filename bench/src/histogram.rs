//! Latency histograms (microseconds) and the percentile summary every report row carries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// One histogram shape for the harness and `decree bench` (their baselines are merged and
/// compared with the load's histograms).
pub use decree_tools::bench_baseline::{merge, new_histogram_us, MAX_LATENCY_US};

/// The percentiles a row prints, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarizes `histogram` (all zeros when empty).
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let q = |quantile: f64| histogram.value_at_quantile(quantile);
        LatencySummary {
            count: histogram.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// (latency µs, fraction of samples at or below it) points for a CDF plot, one per distinct bucket.
pub fn cdf_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = histogram.len() as f64;
    if total == 0.0 {
        return Vec::new();
    }
    histogram
        .iter_recorded()
        .map(|bucket| {
            (
                bucket.value_iterated_to().max(1) as f64,
                bucket.count_since_last_iteration() as f64,
            )
        })
        .scan(0.0, |seen, (value, count)| {
            *seen += count;
            Some((value, *seen / total))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_keeps_extremes() {
        let (mut a, mut b) = (new_histogram_us(), new_histogram_us());
        for v in 1..=100 {
            a.record(v).unwrap();
        }
        b.record(5_000).unwrap();
        let all = merge([&a, &b]);
        let summary = LatencySummary::of(&all);
        assert_eq!(summary.count, 101);
        assert_eq!(
            summary.max_us,
            all.highest_equivalent(5_000),
            "max is the top of 5000's bucket"
        );
        assert!(summary.max_us >= 5_000 && summary.max_us < 5_010);
        assert_eq!(summary.p50_us, 51);
        assert!(summary.p99_us >= 99 && summary.p99_us <= 100, "{summary:?}");
    }

    #[test]
    fn empty_histogram_summarizes_to_zeros() {
        assert_eq!(
            LatencySummary::of(&new_histogram_us()),
            LatencySummary::default()
        );
        assert!(cdf_points(&new_histogram_us()).is_empty());
    }

    #[test]
    fn cdf_rises_to_one_and_is_monotonic() {
        let mut h = new_histogram_us();
        for v in [10, 10, 20, 40, 1_000] {
            h.record(v).unwrap();
        }
        let points = cdf_points(&h);
        assert_eq!(points.len(), 4);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!((points[0].1 - 0.4).abs() < 1e-9);
        assert!((points.last().unwrap().1 - 1.0).abs() < 1e-9);
    }
}
