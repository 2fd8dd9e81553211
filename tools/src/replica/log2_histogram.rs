//! A Prometheus histogram with doubling bucket bounds and no lock. prometheus-client's `Histogram`
//! takes a write lock and scans its bounds as floats on every observation; the request latency is
//! observed for every request on the leader's core thread, where that was 5% of the leader's time.
//! Here an observation is three relaxed atomic adds, and the bucket is found from the value's
//! leading zeros. A batch of values (`observe_all`, one applied slot's replies) is tallied first
//! and added once per run of equal buckets: each add is a locked instruction, which waits for the
//! thread's pending stores (the apply's cache-missing map writes) to drain. A scrape reads the
//! counters one by one, so it may see an observation in the count before its bucket; Prometheus'
//! own clients accept the same.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts of values in buckets bounded by `first_bound * 2^i` (i < `bounds`) and +Inf. Values
/// are whole units (microseconds, requests), exposed divided by `units_per_exposed` (1e6 for
/// microseconds shown as seconds; dividing, the bounds print as prometheus-client prints them).
#[derive(Clone, Debug)]
pub struct Log2Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    first_bound: u64,
    units_per_exposed: f64,
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Log2Histogram {
    /// A histogram whose first bucket holds values up to `first_bound` units, with `bounds`
    /// doubling bounds before +Inf.
    pub fn new(first_bound: u64, bounds: usize, units_per_exposed: f64) -> Self {
        assert!(first_bound > 0, "contract: a first bound of at least one unit");
        let buckets = (0..=bounds).map(|_| AtomicU64::new(0)).collect();
        Log2Histogram {
            inner: Arc::new(Inner { first_bound, units_per_exposed, buckets, count: AtomicU64::new(0), sum: AtomicU64::new(0) }),
        }
    }

    /// Records `value` units.
    pub fn observe(&self, value: u64) {
        self.observe_all(&[value]);
    }

    /// Records every one of `values` (units each).
    pub fn observe_all(&self, values: &[u64]) {
        let inner = &*self.inner;
        // One atomic add per run of equal buckets, each value's bucket computed once (a division).
        let mut buckets = values.iter().map(|&value| inner.bucket_of(value));
        if let Some(first) = buckets.next() {
            let (last, count) = buckets.fold((first, 1u64), |(held, count), bucket| {
                if bucket == held {
                    (held, count + 1)
                } else {
                    inner.buckets[held].fetch_add(count, Ordering::Relaxed);
                    (bucket, 1)
                }
            });
            inner.buckets[last].fetch_add(count, Ordering::Relaxed);
        }
        inner.count.fetch_add(values.len() as u64, Ordering::Relaxed);
        inner.sum.fetch_add(values.iter().sum(), Ordering::Relaxed);
    }
}

impl Inner {
    /// The first bucket whose bound is at least `value`: ceil(log2(value / first_bound)).
    fn bucket_of(&self, value: u64) -> usize {
        let inf = self.buckets.len() - 1;
        if value <= self.first_bound {
            return 0;
        }
        let multiple = value.div_ceil(self.first_bound);
        ((u64::BITS - (multiple - 1).leading_zeros()) as usize).min(inf)
    }

    fn bound(&self, bucket: usize) -> f64 {
        if bucket + 1 == self.buckets.len() {
            f64::MAX
        } else {
            self.first_bound as f64 * 2f64.powi(bucket as i32) / self.units_per_exposed
        }
    }
}

impl EncodeMetric for Log2Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> =
            (0..inner.buckets.len()).map(|i| (inner.bound(i), inner.buckets[i].load(Ordering::Relaxed))).collect();
        let sum = inner.sum.load(Ordering::Relaxed) as f64 / inner.units_per_exposed;
        encoder.encode_histogram::<()>(sum, inner.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    fn render(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn it_exposes_what_prometheus_clients_histogram_exposes_for_the_same_values() {
        let ours = Log2Histogram::new(25, 18, 1e6);
        let theirs = Histogram::new(exponential_buckets(25e-6, 2.0, 18));
        for us in [0, 1, 24, 25, 26, 49, 50, 51, 100, 101, 3_000, 6_553_600, 6_553_601, u32::MAX as u64] {
            ours.observe(us);
            theirs.observe(us as f64 / 1e6);
        }
        let (ours, theirs) = (render("latency_seconds", ours), render("latency_seconds", theirs));
        let buckets = |text: &str| -> Vec<String> {
            text.lines().filter(|line| line.contains("_bucket") || line.contains("_count")).map(String::from).collect()
        };
        assert_eq!(buckets(&ours), buckets(&theirs));
        assert!(ours.contains("latency_seconds_count 14"), "{ours}");
    }

    #[test]
    fn observing_a_batch_exposes_what_observing_each_value_exposes() {
        let (each, batch) = (Log2Histogram::new(25, 18, 1e6), Log2Histogram::new(25, 18, 1e6));
        let values = [30, 31, 40, 3_000, 3_100, 30, 0, 0, u32::MAX as u64, 26];
        for value in values {
            each.observe(value);
        }
        batch.observe_all(&values[..4]);
        batch.observe_all(&[]);
        batch.observe_all(&values[4..]);
        assert_eq!(render("latency_seconds", batch), render("latency_seconds", each));
    }

    #[test]
    fn values_land_in_the_first_bucket_that_bounds_them() {
        let histogram = Log2Histogram::new(1, 3, 1.0);
        let inner = &*histogram.inner;
        let cases = [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 3), (u64::MAX, 3)];
        for (value, bucket) in cases {
            assert_eq!(inner.bucket_of(value), bucket, "value {value}");
        }
        assert_eq!((inner.bound(0), inner.bound(2), inner.bound(3)), (1.0, 4.0, f64::MAX));
    }
}
