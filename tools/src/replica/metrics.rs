//! Prometheus metrics of one replica (prometheus-client), fed by the runtime's `Observer` hooks and
//! served as text on `GET /metrics` (any path answers).

use super::log2_histogram::Log2Histogram;
use decree_engine::runtime::Observer;
use decree_engine::types::Ballot;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

/// The replica's metrics.
pub struct Metrics {
    registry: Registry,
    applied_slots: Counter,
    executed_requests: Counter,
    elections_won: Counter,
    checkpoints: Counter,
    checkpoint_slot: Gauge,
    leading: Gauge,
    log_bytes: Gauge,
    writes_shed: Counter,
    spares_awaited: Gauge,
    commit_path_stalls: Counter,
    batch_requests: Log2Histogram,
    group_commit_writes: Log2Histogram,
    request_latency_seconds: Log2Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(replica_id: u32) -> Self {
        let mut registry = Registry::with_prefix_and_labels("decree", [("replica".into(), replica_id.to_string().into())].into_iter());
        let m = Metrics {
            applied_slots: Counter::default(),
            executed_requests: Counter::default(),
            elections_won: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_slot: Gauge::default(),
            leading: Gauge::default(),
            log_bytes: Gauge::default(),
            writes_shed: Counter::default(),
            spares_awaited: Gauge::default(),
            commit_path_stalls: Counter::default(),
            batch_requests: Log2Histogram::new(1, 14, 1.0),
            group_commit_writes: Log2Histogram::new(1, 12, 1.0),
            // Observed per applied slot on the core thread: no lock there (log2_histogram.rs).
            request_latency_seconds: Log2Histogram::new(25, 18, 1e6),
            registry: Registry::default(),
        };
        registry.register("applied_slots", "Log slots committed and applied here", m.applied_slots.clone());
        registry.register("applied_requests", "Client requests in applied slots", m.executed_requests.clone());
        registry.register("elections_won", "Times this replica became leader", m.elections_won.clone());
        registry.register("checkpoints", "Checkpoints taken here", m.checkpoints.clone());
        registry.register("checkpoint_slot", "Slot of the newest checkpoint taken here", m.checkpoint_slot.clone());
        registry.register("leading", "1 while this replica leads", m.leading.clone());
        registry.register("log_bytes", "Bytes held by the persistent log", m.log_bytes.clone());
        registry.register(
            "writes_shed",
            "Client writes answered Busy because the log was three quarters full",
            m.writes_shed.clone(),
        );
        registry.register(
            "spares_awaited",
            "1 while this leader awaits its spares: a follower on its commit path stalled or answers slower",
            m.spares_awaited.clone(),
        );
        registry.register(
            "commit_path_stalls",
            "Times this leader began awaiting its spares (a commit-path follower slow or down)",
            m.commit_path_stalls.clone(),
        );
        registry.register("batch_requests", "Client requests per proposal", m.batch_requests.clone());
        registry.register("group_commit_writes", "Durable writes per log sync", m.group_commit_writes.clone());
        registry.register(
            "request_latency_seconds",
            "Request arrival to reply at this replica",
            m.request_latency_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Observer for Metrics {
    fn on_batch(&self, requests: usize) {
        self.batch_requests.observe(requests as u64);
    }
    fn on_applied(&self, slots: u64, requests: usize) {
        self.applied_slots.inc_by(slots);
        self.executed_requests.inc_by(requests as u64);
    }
    fn on_replies(&self, latencies_us: &[u64]) {
        self.request_latency_seconds.observe_all(latencies_us);
    }
    fn on_leadership(&self, leading: bool, _ballot: Ballot) {
        if leading {
            self.elections_won.inc();
        }
        self.leading.set(leading as i64);
    }
    fn on_checkpoint(&self, slot: u64, _bytes: usize) {
        self.checkpoints.inc();
        self.checkpoint_slot.set(slot as i64);
    }
    fn on_group_commit(&self, writes: usize, log_bytes: u64) {
        self.group_commit_writes.observe(writes as u64);
        self.log_bytes.set(log_bytes as i64);
    }
    fn on_write_shed(&self) {
        self.writes_shed.inc();
    }
    fn on_spares_awaited(&self, awaited: bool) {
        if awaited {
            self.commit_path_stalls.inc();
        }
        self.spares_awaited.set(awaited as i64);
    }
}

/// Serves `metrics` over HTTP on `listener` from a background thread.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    std::thread::Builder::new()
        .name("decree-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body = metrics.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes()));
            }
        })
        .expect("spawning the metrics thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_hooks_show_in_the_text_exposition() {
        let metrics = Metrics::new(2);
        metrics.on_applied(3, 40);
        metrics.on_group_commit(5, 4096);
        metrics.on_write_shed();
        metrics.on_write_shed();
        metrics.on_replies(&[100, 20_000]);
        metrics.on_spares_awaited(true);
        metrics.on_spares_awaited(false);
        metrics.on_spares_awaited(true);
        let text = metrics.render();
        for line in [
            "decree_applied_slots_total{replica=\"2\"} 3",
            "decree_applied_requests_total{replica=\"2\"} 40",
            "decree_log_bytes{replica=\"2\"} 4096",
            "decree_writes_shed_total{replica=\"2\"} 2",
            "decree_commit_path_stalls_total{replica=\"2\"} 2",
            "decree_spares_awaited{replica=\"2\"} 1",
            "decree_request_latency_seconds_count{replica=\"2\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
