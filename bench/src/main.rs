//! The `decree-bench` binary: parses the command line and runs one subcommand.

use clap::Parser;
use decree_bench::callgrind;
use decree_bench::cli::{
    BaselineArgs, BenchCommand, CallgrindArgs, Cli, CommitTraceArgs, WorkloadArgs,
};
use decree_bench::error::BenchError;
use decree_bench::inproc;
use std::process::ExitCode;
use std::time::Instant;

fn baselines(args: &BaselineArgs) -> Result<(), BenchError> {
    if args.payload_bytes == 0 || args.payload_bytes > decree_bench::cli::MAX_PAYLOAD_BYTES {
        return Err(BenchError::InvalidArgument {
            flag: "payload-bytes",
            detail: format!("{}: must be 1..=1048576", args.payload_bytes),
        });
    }
    let b =
        decree_bench::baseline::measure(&args.data_dir, args.payload_bytes, 3, Default::default())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&b).expect("baselines serialize")
        );
    } else {
        println!(
            "tcp loopback round trip ({} B)  p50 {} us  p99 {} us",
            args.payload_bytes, b.tcp_round_trip.p50_us, b.tcp_round_trip.p99_us
        );
        println!(
            "shm cache-line round trip       p50 {} ns  p99 {} ns",
            b.shm_round_trip_ns.0, b.shm_round_trip_ns.1
        );
        println!("{}", decree_bench::table::wake_line(&b));
        println!(
            "4 KiB write+fdatasync           p50 {} us  p99 {} us  in {}",
            b.fdatasync.p50_us, b.fdatasync.p99_us, b.fdatasync_dir
        );
        println!(
            "same, 3 writers at once         p50 {} us  p99 {} us",
            b.fdatasync_concurrent.p50_us, b.fdatasync_concurrent.p99_us
        );
        println!(
            "2 writers released together     p50 {} us  p99 {} us  (until both synced)",
            b.fdatasync_pair.p50_us, b.fdatasync_pair.p99_us
        );
        println!(
            "commit floor (tcp + fdatasync)  {} us lone, {} us concurrent",
            b.commit_floor_p50_us, b.commit_floor_concurrent_p50_us
        );
        println!(
            "this host's one-client floor    {} us (2 tcp round trips + 2 writers released together)",
            b.commit_floor_this_host_p50_us
        );
    }
    Ok(())
}

fn callgrind_mode(args: &CallgrindArgs) -> Result<(), BenchError> {
    args.workload.validate()?;
    let spec = args.workload.spec();
    eprintln!(
        "decree-bench callgrind: {} and {} committed puts under valgrind (a minute or two)",
        spec.ops,
        2 * spec.ops
    );
    let result = callgrind::measure(spec, &args.out, args.top)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("result serializes")
        );
        return Ok(());
    }
    println!(
        "callgrind: 3 in-process replicas, {} sessions in flight, {}-byte puts, batch limit {}",
        result.clients, result.payload_bytes, spec.max_batch_requests
    );
    println!(
        "  instructions: {} ({} ops), {} ({} ops)",
        result.total_instructions.0,
        result.ops,
        result.total_instructions.1,
        2 * result.ops
    );
    println!(
        "  instructions per committed operation: {:.0}",
        result.instructions_per_op
    );
    println!("  by function, own cost per op:");
    for f in &result.top_self {
        println!("    {:>9.0}  {}", f.instructions_per_op, f.function);
    }
    println!("  by function, inclusive cost per op:");
    for f in &result.top_inclusive {
        println!("    {:>9.0}  {}", f.instructions_per_op, f.function);
    }
    println!("  callgrind outputs in {}", args.out.display());
    Ok(())
}

fn commit_trace_mode(args: &CommitTraceArgs) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(&args.perf_script)
        .map_err(|e| BenchError::Trace(format!("{}: {e}", args.perf_script.display())))?;
    print!("{}", decree_bench::commit_trace::profile(&text)?);
    Ok(())
}

fn inproc_mode(args: &WorkloadArgs) -> Result<(), BenchError> {
    args.validate()?;
    let spec = args.spec();
    let began = Instant::now();
    let outcome = inproc::run(spec);
    let elapsed_s = began.elapsed().as_secs_f64();
    println!(
        "inproc: {} committed puts, {} messages, {} core steps in {:.3} s ({:.0} ops/s on one thread)",
        outcome.committed,
        outcome.messages,
        outcome.steps,
        elapsed_s,
        outcome.committed as f64 / elapsed_s
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        BenchCommand::Run(args) if args.runs > 1 => decree_bench::series::run(args).map(|_| ()),
        BenchCommand::Run(args) => decree_bench::run_command::run(args).map(|_| ()),
        BenchCommand::Baselines(args) => baselines(args),
        BenchCommand::Callgrind(args) => callgrind_mode(args),
        BenchCommand::CommitTrace(args) => commit_trace_mode(args),
        BenchCommand::Inproc(args) => inproc_mode(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ BenchError::InvalidArgument { .. }) => {
            eprintln!("decree-bench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("decree-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
