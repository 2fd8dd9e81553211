//! The same workload against etcd through its v3 HTTP/JSON gateway (POST /v3/kv/put, base64 key
//! and value), one keep-alive HTTP connection per client thread, one request in flight each.

use crate::error::BenchError;
use crate::load::{key_for, LoadOutcome, LoadSpec, Recorder};
use crate::progress::Progress;
use crate::schedule::{precise_timers, wait_until, Arrival, Schedule};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The JSON body of a put of `key` = `value`.
pub fn put_body(key: &[u8], value: &[u8]) -> String {
    format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}}",
        BASE64.encode(key),
        BASE64.encode(value)
    )
}

struct Tally {
    recorder: Recorder,
    errors: u64,
    last_error: Option<String>,
}

fn client(
    url: String,
    index: usize,
    spec: LoadSpec,
    base: Instant,
    completed: Arc<AtomicU64>,
) -> Tally {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let put_url = format!("{url}/v3/kv/put");
    let value = vec![b'x'; spec.payload_bytes];
    let (start, end) = (base + spec.warmup, base + spec.warmup + spec.duration);
    let mut schedule = match spec.arrival {
        Arrival::Open { rate_per_s } => {
            precise_timers();
            Some(Schedule::new(base, rate_per_s, index, spec.clients))
        }
        Arrival::Closed => None,
    };
    let mut tally = Tally {
        recorder: Recorder::for_window_from(spec.warmup.as_nanos() as u64),
        errors: 0,
        last_error: None,
    };
    let ns = |at: Instant| at.duration_since(base).as_nanos() as u64;
    let mut n = index as u64;
    loop {
        let intended = match schedule.as_mut() {
            Some(schedule) => {
                let at = schedule.next_intended();
                wait_until(at);
                at
            }
            None => Instant::now(),
        };
        if intended >= end {
            return tally;
        }
        n += spec.clients as u64;
        let body = put_body(key_for(n, spec.keys).as_bytes(), &value);
        let sent = Instant::now();
        let result = agent
            .post(&put_url)
            .set("Content-Type", "application/json")
            .send_string(&body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()));
        let done = Instant::now();
        completed.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) if intended >= start && done <= end => {
                tally.recorder.record_ns(ns(intended), ns(sent), ns(done))
            }
            Ok(_) => {}
            Err(e) => {
                tally.errors += 1;
                tally.last_error = Some(e);
            }
        }
    }
}

/// Runs `spec` against the etcd member at `url` (connections = clients: HTTP/1.1 does not pipeline).
pub fn run(url: &str, spec: &LoadSpec, label: &str) -> Result<LoadOutcome, BenchError> {
    let base = Instant::now();
    let completed = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(
        label.to_string(),
        completed.clone(),
        spec.warmup + spec.duration,
        spec.progress,
    );
    let threads: Vec<_> = (0..spec.clients)
        .map(|index| {
            let (url, spec, completed) = (url.to_string(), spec.clone(), completed.clone());
            std::thread::spawn(move || client(url, index, spec, base, completed))
        })
        .collect();
    let tallies: Vec<Tally> = threads
        .into_iter()
        .map(|t| t.join().expect("etcd client thread panicked"))
        .collect();
    let errors = tallies.iter().map(|t| t.errors).sum();
    let outcome = LoadOutcome::merge(
        tallies.iter().map(|t| &t.recorder),
        errors,
        0,
        spec.duration.as_secs_f64(),
    );
    if outcome.ops == 0 {
        let why = tallies
            .iter()
            .find_map(|t| t.last_error.clone())
            .unwrap_or_else(|| "no reply".into());
        return Err(BenchError::Etcd(format!(
            "no put completed in the window: {why}"
        )));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_body_is_base64_json() {
        let body = put_body(b"k1", b"hello");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["key"], "azE=");
        assert_eq!(parsed["value"], "aGVsbG8=");
    }
}
