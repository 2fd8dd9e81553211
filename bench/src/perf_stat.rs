//! `perf stat` on each replica process during a measured window: instructions, cycles, context
//! switches and CPU time per committed operation, the profile that says what limits throughput.

use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

/// A replica process to count.
#[derive(Clone, Debug)]
pub struct Target {
    /// Replica id.
    pub replica: u32,
    /// Its pid.
    pub pid: i32,
    /// Whether it led when the run started.
    pub leader: bool,
}

/// Raw counters of one process over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Replica id.
    pub replica: u32,
    /// Led when the run started.
    pub leader: bool,
    /// Instructions retired (user + kernel, as perf counts by default).
    pub instructions: u64,
    /// CPU cycles.
    pub cycles: u64,
    /// Context switches.
    pub context_switches: u64,
    /// CPU time in milliseconds.
    pub task_clock_ms: f64,
}

/// Parses `perf stat -x,` output: "value,unit,event,..." lines; unsupported counters are skipped.
pub fn parse(text: &str, target: &Target) -> Counters {
    let mut counters = Counters {
        replica: target.replica,
        leader: target.leader,
        ..Counters::default()
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            continue;
        }
        let value = fields[0].trim();
        let event = fields[2].trim();
        let as_u64 = || value.parse::<u64>().unwrap_or(0);
        if event.starts_with("instructions") {
            counters.instructions = as_u64();
        } else if event.starts_with("cycles") {
            counters.cycles = as_u64();
        } else if event.starts_with("context-switches") {
            counters.context_switches = as_u64();
        } else if event.starts_with("task-clock") {
            counters.task_clock_ms = value.parse().unwrap_or(0.0);
        }
    }
    counters
}

/// Whether `perf stat` can run here.
pub fn available() -> bool {
    Command::new("perf")
        .args(["stat", "-e", "task-clock", "--", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Counts each target from `delay` on for `window` (one perf process per replica), in the background.
pub fn spawn(
    targets: Vec<Target>,
    delay: Duration,
    window: Duration,
    scratch: PathBuf,
) -> JoinHandle<Result<Vec<Counters>, String>> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let children: Vec<_> = targets
            .iter()
            .map(|t| {
                let out = scratch.join(format!("perf-stat-r{}.csv", t.replica));
                // All replicas are counted over the same window: spawn every perf, then wait.
                let child = Command::new("perf")
                    .args([
                        "stat",
                        "-x,",
                        "-e",
                        "instructions,cycles,context-switches,task-clock",
                        "-o",
                    ])
                    .arg(&out)
                    .args([
                        "-p",
                        &t.pid.to_string(),
                        "--",
                        "sleep",
                        &format!("{:.3}", window.as_secs_f64()),
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn();
                (t, out, child)
            })
            .collect::<Vec<_>>();
        let mut counters = Vec::new();
        for (target, out, child) in children {
            let output = child
                .and_then(|c| c.wait_with_output())
                .map_err(|e| format!("running perf: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "perf stat failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let text =
                std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let _ = std::fs::remove_file(&out);
            counters.push(parse(&text, target));
        }
        Ok(counters)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_csv_and_skips_unsupported() {
        let text = "# started on x\n\n123456789,,instructions,100.00,,\n98765,,cycles,100.00,,\n<not supported>,,branches,0,,\n42,,context-switches,100.00,,\n1500.25,msec,task-clock,100.00,,\n";
        let c = parse(
            text,
            &Target {
                replica: 1,
                pid: 7,
                leader: true,
            },
        );
        assert_eq!(
            (c.instructions, c.cycles, c.context_switches),
            (123_456_789, 98_765, 42)
        );
        assert!((c.task_clock_ms - 1500.25).abs() < 1e-9);
        assert!(c.leader && c.replica == 1);
    }
}
