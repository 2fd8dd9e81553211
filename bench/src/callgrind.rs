//! Callgrind mode: the in-process workload (`inproc`) under `valgrind --tool=callgrind`, run at N
//! and 2N operations; the difference divided by N is the instruction cost of one committed
//! operation with start-up and election cancelled out. The same difference per function says
//! where those instructions go.

use crate::error::BenchError;
use crate::inproc::InprocSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One function's share of the per-operation cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionCost {
    /// Instructions per committed operation.
    pub instructions_per_op: f64,
    /// The function as callgrind_annotate names it.
    pub function: String,
}

/// What callgrind measured.
#[derive(Clone, Debug, Serialize)]
pub struct CallgrindResult {
    /// Operations in the smaller run (the larger ran twice as many).
    pub ops: u64,
    /// Sessions in flight (batch size).
    pub clients: usize,
    /// Value size.
    pub payload_bytes: usize,
    /// Instructions of the smaller and larger runs.
    pub total_instructions: (u64, u64),
    /// (larger - smaller) / ops.
    pub instructions_per_op: f64,
    /// Functions by own (exclusive) cost per op, largest first.
    pub top_self: Vec<FunctionCost>,
    /// Functions by inclusive cost per op, largest first.
    pub top_inclusive: Vec<FunctionCost>,
}

/// The total from a callgrind output file ("summary:" or "totals:" line, first event = Ir).
pub fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// How entries of one function attributed to several source files combine.
#[derive(Clone, Copy, Debug)]
pub enum Combine {
    /// Own cost: the pieces (inlined code from other files) add up.
    Sum,
    /// Inclusive cost: the pieces overlap, so the largest is the (lower-bound) total.
    Max,
}

/// (function, instructions) from callgrind_annotate's function table ("1,234 (5.6%)  file:fn [bin]"
/// or "1,234  file:fn"), combined per function across the files its code came from.
pub fn parse_annotate(text: &str, combine: Combine) -> BTreeMap<String, u64> {
    let mut costs = BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let Some((count, rest)) = trimmed.split_once(' ') else {
            continue;
        };
        if !count.starts_with(|c: char| c.is_ascii_digit())
            || !count.chars().all(|c| c.is_ascii_digit() || c == ',')
        {
            continue;
        }
        let Ok(value) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let mut name = rest.trim_start();
        if name.starts_with('(') {
            name = name
                .split_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or(name);
        }
        let name = name.split(" [").next().unwrap_or(name).trim();
        // Call-tree arrows and headers are not functions.
        if name.is_empty()
            || name.starts_with("=>")
            || name.starts_with('<')
            || name.contains("PROGRAM TOTALS")
            || !name.contains(':')
        {
            continue;
        }
        let function = name.split_once(':').map(|(_, f)| f).unwrap_or(name);
        let entry = costs.entry(function.to_string()).or_insert(0);
        *entry = match combine {
            Combine::Sum => *entry + value,
            Combine::Max => (*entry).max(value),
        };
    }
    costs
}

/// Per-op cost of each function: (large - small) / ops, largest `keep` first.
pub fn per_op_difference(
    small: &BTreeMap<String, u64>,
    large: &BTreeMap<String, u64>,
    ops: u64,
    keep: usize,
) -> Vec<FunctionCost> {
    let mut costs: Vec<FunctionCost> = large
        .iter()
        .map(|(function, &l)| FunctionCost {
            instructions_per_op: (l as f64 - *small.get(function).unwrap_or(&0) as f64)
                / ops as f64,
            function: function.clone(),
        })
        .filter(|c| c.instructions_per_op > 0.0)
        .collect();
    costs.sort_by(|a, b| b.instructions_per_op.total_cmp(&a.instructions_per_op));
    costs.truncate(keep);
    costs
}

fn valgrind_run(exe: &Path, out: &Path, spec: &InprocSpec) -> Result<u64, BenchError> {
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args([
            "inproc",
            "--ops",
            &spec.ops.to_string(),
            "--clients",
            &spec.clients.to_string(),
        ])
        .args([
            "--payload-bytes",
            &spec.payload_bytes.to_string(),
            "--max-batch-requests",
            &spec.max_batch_requests.to_string(),
        ])
        .output()
        .map_err(|e| {
            BenchError::Callgrind(format!(
                "running valgrind: {e} (install it: apt-get install valgrind)"
            ))
        })?;
    if !status.status.success() {
        return Err(BenchError::Callgrind(format!(
            "valgrind failed: {}",
            String::from_utf8_lossy(&status.stderr)
        )));
    }
    let text = std::fs::read_to_string(out)
        .map_err(|e| BenchError::Callgrind(format!("{}: {e}", out.display())))?;
    parse_total(&text)
        .ok_or_else(|| BenchError::Callgrind(format!("no totals line in {}", out.display())))
}

fn annotate(out: &Path, inclusive: bool) -> Result<BTreeMap<String, u64>, BenchError> {
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg("--auto=no")
        .arg(out)
        .output()
        .map_err(|e| BenchError::Callgrind(format!("running callgrind_annotate: {e}")))?;
    let combine = if inclusive {
        Combine::Max
    } else {
        Combine::Sum
    };
    Ok(parse_annotate(
        &String::from_utf8_lossy(&output.stdout),
        combine,
    ))
}

/// Runs the workload at `spec.ops` and twice that under callgrind, keeping the outputs in `dir`.
pub fn measure(spec: InprocSpec, dir: &Path, keep: usize) -> Result<CallgrindResult, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Callgrind(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Callgrind(format!("{}: {e}", dir.display())))?;
    let small_out: PathBuf = dir.join("callgrind.out.small");
    let large_out: PathBuf = dir.join("callgrind.out.large");
    let small = valgrind_run(&exe, &small_out, &spec)?;
    let large = valgrind_run(
        &exe,
        &large_out,
        &InprocSpec {
            ops: 2 * spec.ops,
            ..spec
        },
    )?;
    let (self_small, self_large) = (annotate(&small_out, false)?, annotate(&large_out, false)?);
    let (incl_small, incl_large) = (annotate(&small_out, true)?, annotate(&large_out, true)?);
    Ok(CallgrindResult {
        ops: spec.ops,
        clients: spec.clients,
        payload_bytes: spec.payload_bytes,
        total_instructions: (small, large),
        instructions_per_op: (large as f64 - small as f64) / spec.ops as f64,
        top_self: per_op_difference(&self_small, &self_large, spec.ops, keep),
        // Callers of everything (main, lang_start, the workload loop) say nothing: keep what is below 95%.
        top_inclusive: per_op_difference(&incl_small, &incl_large, spec.ops, usize::MAX)
            .into_iter()
            .filter(|c| {
                c.instructions_per_op < 0.95 * (large as f64 - small as f64) / spec.ops as f64
            })
            .take(keep)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_annotate_lines_parse() {
        assert_eq!(
            parse_total("events: Ir\nfoo\nsummary: 123456\n"),
            Some(123_456)
        );
        assert_eq!(parse_total("totals: 99 3\n"), Some(99));
        assert_eq!(parse_total("nothing"), None);
        let text = "--------\nIr                  file:function\n--------\n\
                    2,000,000 (100.0%)  PROGRAM TOTALS\n\
                    1,500,000 (75.0%)  ???:decree_engine::core::Replica::step [/x/decree-bench]\n\
                      400,000  src/codec.rs:decree_engine::codec::encode_frame\n";
        let costs = parse_annotate(text, Combine::Sum);
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs["decree_engine::core::Replica::step"], 1_500_000);
        assert_eq!(costs["decree_engine::codec::encode_frame"], 400_000);
        let inlined = "  10 (1%)  /rustc/x/cmp.rs:alloc::BTreeMap::insert\n  5 (1%)  /rustc/x/node.rs:alloc::BTreeMap::insert [/bin]\n  3  => x.rs:callee (1x)\n";
        assert_eq!(
            parse_annotate(inlined, Combine::Sum)["alloc::BTreeMap::insert"],
            15,
            "inlined pieces add up; arrows are skipped"
        );
        assert_eq!(
            parse_annotate(inlined, Combine::Max)["alloc::BTreeMap::insert"],
            10,
            "inclusive pieces overlap"
        );
    }

    #[test]
    fn per_op_difference_cancels_fixed_costs() {
        let small: BTreeMap<String, u64> =
            [("step".into(), 1_000 + 100 * 10), ("setup".into(), 5_000)].into();
        let large: BTreeMap<String, u64> =
            [("step".into(), 1_000 + 200 * 10), ("setup".into(), 5_000)].into();
        let costs = per_op_difference(&small, &large, 100, 5);
        assert_eq!(
            costs,
            vec![FunctionCost {
                instructions_per_op: 10.0,
                function: "step".into()
            }],
            "setup cancels out"
        );
    }
}
