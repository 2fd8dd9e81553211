//! `decree bench`: closed-loop load. Each client thread keeps one operation outstanding for the
//! duration; latencies go into HdrHistograms (µs) merged at the end.

use crate::target_args::TargetArgs;
use clap::Args;
use decree_tools::client::Client;
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Arguments of `decree bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent closed-loop clients (threads).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 5)]
    duration_s: u64,
    /// Value size of each put.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Distinct keys written.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Percent of operations that are gets (the rest are puts).
    #[arg(long, default_value_t = 0)]
    read_percent: u32,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Skip measuring the loopback TCP and fdatasync baselines.
    #[arg(long)]
    no_baseline: bool,
}

struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
    retries: u64,
}

fn client_loop(mut client: Client, args: &BenchArgs, index: usize, start: &Barrier, duration: Duration) -> Outcome {
    let mut histogram = decree_tools::bench_baseline::new_histogram_us();
    let value = vec![b'x'; args.payload_bytes];
    let mut rng = fastrand::Rng::with_seed(index as u64 + 1);
    let warmed = client.put(format!("bench-warmup-{index}").as_bytes(), &value).is_ok();
    start.wait();
    let mut errors = u64::from(!warmed);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let key = format!("bench-{}", rng.u64(0..args.keys.max(1)));
        let began = Instant::now();
        let result = if rng.u32(0..100) < args.read_percent {
            client.get(key.as_bytes()).map(|_| ())
        } else {
            client.put(key.as_bytes(), &value)
        };
        match result {
            Ok(()) => histogram.saturating_record(began.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
    }
    Outcome { histogram, errors, retries: client.retries }
}

/// Runs the load and prints percentiles and throughput; exits 1 if nothing succeeded.
pub fn run(args: BenchArgs) -> ExitCode {
    let config = match args.target.config_for("bench") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let baseline_dir = if args.target.addrs.is_empty() { args.target.cluster.clone() } else { std::env::temp_dir() };
    let baseline = if args.no_baseline { None } else { decree_tools::bench_baseline::measure(&baseline_dir).ok() };
    let clients = args.clients.max(1);
    let duration = Duration::from_secs(args.duration_s.max(1));
    let start = Arc::new(Barrier::new(clients + 1));
    let args = Arc::new(args);
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let (client, args, start) = (Client::new(config.clone()), args.clone(), start.clone());
            std::thread::spawn(move || client_loop(client, &args, index, &start, duration))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().expect("bench client thread panicked")).collect();
    let elapsed_s = began.elapsed().as_secs_f64();
    let all = decree_tools::bench_baseline::merge(outcomes.iter().map(|o| &o.histogram));
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let retries: u64 = outcomes.iter().map(|o| o.retries).sum();
    let ops = all.len();
    let ops_per_s = ops as f64 / elapsed_s;
    let q = |quantile: f64| all.value_at_quantile(quantile);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"clients": clients, "duration_s": elapsed_s, "payload_bytes": args.payload_bytes, "read_percent": args.read_percent,
                "ops": ops, "errors": errors, "retries": retries, "ops_per_s": ops_per_s,
                "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": all.max(),
                "baseline_tcp_rtt_p50_us": baseline.as_ref().map(|b| b.tcp_rtt_us.0),
                "baseline_fdatasync_p50_us": baseline.as_ref().map(|b| b.fdatasync_us.0)})
        );
    } else {
        println!(
            "decree bench: {clients} closed-loop clients, {elapsed_s:.1} s, {}-byte values, {}% gets",
            args.payload_bytes, args.read_percent
        );
        println!("  operations: {ops}   errors: {errors}   retries: {retries}");
        println!("  throughput: {ops_per_s:.0} ops/s");
        println!(
            "  latency:    p50 {} us   p90 {} us   p99 {} us   p99.9 {} us   max {} us",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            all.max()
        );
        if let Some(b) = &baseline {
            println!(
                "  baseline:   loopback TCP round trip p50 {} us (p99 {} us); 4 KiB write+fdatasync in {} p50 {} us (p99 {} us)",
                b.tcp_rtt_us.0,
                b.tcp_rtt_us.1,
                baseline_dir.display(),
                b.fdatasync_us.0,
                b.fdatasync_us.1
            );
            println!("              a commit needs >= 2 round trips + 1 sync: ~{} us at p50 on this host", 2 * b.tcp_rtt_us.0 + b.fdatasync_us.0);
        }
    }
    if ops == 0 {
        eprintln!("decree bench: no operation succeeded");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
