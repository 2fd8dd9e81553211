//! `decree sim`: many seeds across threads, or one seed replayed with a trace.

use clap::Args;
use decree_engine::sim::{self, Report, SimOptions};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Arguments of `decree sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Replay exactly this seed (prints its configuration and report).
    #[arg(long, conflicts_with_all = ["seeds", "start"])]
    seed: Option<u64>,
    /// With --seed: print every event.
    #[arg(long, requires = "seed")]
    trace: bool,
}

/// Runs the command; exit status 1 if any seed failed.
pub fn run(args: SimArgs) -> ExitCode {
    if let Some(seed) = args.seed {
        return replay(seed, args.trace);
    }
    if args.jobs == 0 {
        eprintln!("error: --jobs must be at least 1");
        return ExitCode::from(2);
    }
    // Contract panics are caught and reported per seed; keep the default hook from printing each.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let next = AtomicU64::new(args.start);
    let end = args.start.saturating_add(args.seeds);
    let failed = AtomicBool::new(false);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                match sim::run(seed, &SimOptions::default()) {
                    Ok(report) => totals.lock().unwrap().add(&report),
                    Err(violation) => {
                        failed.store(true, Ordering::Relaxed);
                        eprintln!("seed {seed} FAILED: {violation}");
                        eprintln!("  replay: cargo run --release -p decree-tools -- sim --seed {seed} --trace");
                    }
                }
            });
        }
    });
    let _ = std::panic::take_hook();
    let totals = totals.into_inner().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sim: {} seeds passed in {:.1} s ({:.1} seeds/s on {} threads)",
        totals.seeds,
        seconds,
        totals.seeds as f64 / seconds,
        args.jobs
    );
    totals.print();
    if failed.load(Ordering::Relaxed) {
        println!("sim: FAILED (see the seeds above)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay(seed: u64, trace: bool) -> ExitCode {
    println!("seed {seed}: {:?}", sim::SimConfig::from_seed(seed));
    let options = SimOptions { trace };
    match sim::run(seed, &options) {
        Ok(report) => {
            println!("seed {seed} passed: {report:?}");
            ExitCode::SUCCESS
        }
        Err(violation) => {
            println!("seed {seed} FAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    events: u64,
    operations: u64,
    faults: u64,
    crashes: u64,
    partitions: u64,
    dropped: u64,
    duplicated: u64,
    elections: u64,
    slots: u64,
    sim_ms: u64,
    reconfigs: u64,
    checkpoints_taken: u64,
    checkpoints_installed: u64,
    transfers: u64,
    index_reads: u64,
    fast_reads: u64,
    handover_us: Vec<u64>,
    handover_per_mille_of_rtt: Vec<u64>,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.seeds += 1;
        self.events += r.events;
        self.operations += r.operations;
        self.faults += r.faults();
        self.crashes += r.crashes;
        self.partitions += r.partitions;
        self.dropped += r.dropped;
        self.duplicated += r.duplicated;
        self.elections += r.elections_won;
        self.slots += r.slots_chosen;
        self.sim_ms += r.sim_ms;
        self.reconfigs += r.reconfigs_proposed;
        self.checkpoints_taken += r.checkpoints_taken;
        self.checkpoints_installed += r.checkpoints_installed;
        self.transfers += r.transfers_started;
        self.index_reads += r.index_reads;
        self.fast_reads += r.fast_reads;
        self.handover_us.extend_from_slice(&r.handover_us);
        self.handover_per_mille_of_rtt.extend_from_slice(&r.handover_per_mille_of_rtt);
    }

    fn print(&self) {
        let per = |x: u64| x as f64 / self.seeds.max(1) as f64;
        println!(
            "sim: per seed: {:.0} faults ({:.0} dropped, {:.0} duplicated, {:.1} crashes, {:.1} partitions), {:.1} elections won, {:.0} client ops completed, {:.0} slots chosen, {:.0} events, {:.1} s simulated",
            per(self.faults),
            per(self.dropped),
            per(self.duplicated),
            per(self.crashes),
            per(self.partitions),
            per(self.elections),
            per(self.operations),
            per(self.slots),
            per(self.events),
            per(self.sim_ms) / 1000.0
        );
        println!(
            "sim: totals: {} configuration changes proposed, {} checkpoints taken, {} checkpoints transferred and installed, {} leadership transfers, {} read-index reads, {} fast reads checked",
            self.reconfigs, self.checkpoints_taken, self.checkpoints_installed, self.transfers, self.index_reads, self.fast_reads
        );
        if !self.handover_us.is_empty() {
            let quantile = |values: &[u64], q: f64| {
                let mut sorted = values.to_vec();
                sorted.sort_unstable();
                sorted[((sorted.len() - 1) as f64 * q) as usize] as f64
            };
            println!(
                "sim: leadership hand-over (TimeoutNow sent -> target leads), {} hand-overs: p50 {:.1} ms, p90 {:.1} ms; in units of the run's mean round trip + mean write: p50 {:.2}, p90 {:.2}",
                self.handover_us.len(),
                quantile(&self.handover_us, 0.5) / 1000.0,
                quantile(&self.handover_us, 0.9) / 1000.0,
                quantile(&self.handover_per_mille_of_rtt, 0.5) / 1000.0,
                quantile(&self.handover_per_mille_of_rtt, 0.9) / 1000.0
            );
        }
    }
}
