//! The perftest-style text table: one line per measured point, baselines and ratios below.

use crate::baseline::Baselines;
use crate::histogram::LatencySummary;
use crate::report::{Report, Row, Verdict};
use std::fmt::Write as _;

/// The header line of the results table.
pub const HEADER: &str = " system  mode    clients        ops      ops/s     MB/s   p50 us   p90 us   p99 us p99.9 us   max us  placed";

/// One table line.
pub fn row_line(row: &Row) -> String {
    let l = &row.latency;
    format!(
        " {:<7} {:<6} {:>8} {:>10} {:>10.0} {:>8.2} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        row.system,
        row.mode,
        row.clients,
        row.ops,
        row.ops_per_s,
        row.mb_per_s,
        l.p50_us,
        l.p90_us,
        l.p99_us,
        l.p999_us,
        l.max_us,
        row.placement.to_string()
    )
}

/// The thread wake-up baseline of `b`: one CPU, and across two where this host has them.
pub fn wake_line(b: &Baselines) -> String {
    wake_text(b.wake_round_trip_same_cpu.as_ref(), b.wake_round_trip_across_cpus.as_ref())
}

fn wake_text(same: Option<&LatencySummary>, across: Option<&LatencySummary>) -> String {
    let same = match same {
        Some(same) => format!("p50 {} us p99 {} us on one CPU", same.p50_us, same.p99_us),
        None => "not measured (cannot pin)".into(),
    };
    match across {
        Some(across) => format!(
            "thread wake-up round trip {same}, p50 {} us p99 {} us across two (every hop between replicas wakes one)",
            across.p50_us, across.p99_us
        ),
        None => format!("thread wake-up round trip {same}"),
    }
}

/// The baselines measured on the CPU where points placed together ran.
fn together_line(together: &crate::report::TogetherBaselines) -> String {
    let (cpu, t) = (together.cpu, &together.baselines);
    let (rtt, sync, pair) = (t.tcp_round_trip.p50_us, t.fdatasync.p50_us, t.fdatasync_pair.p50_us);
    format!(
        "on cpu {cpu} alone (where points placed \"cpu {cpu}\" ran): tcp round trip p50 {rtt} us, \
         write+fdatasync p50 {sync} us, 2 writers released together p50 {pair} us; commit floor {} us",
        t.commit_floor_p50_us
    )
}

/// The whole text report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let b = &report.baselines;
    let c = &report.cluster;
    let _ = writeln!(
        out,
        "decree-bench: {} replicas, transport {}, log {} on {}, batches <= {} requests / {} bytes, window {}; {} CPUs, load {:.2} -> {:.2}, cpu idle: {}",
        c.replicas,
        c.transport,
        c.log_label(),
        c.data_dir_fs,
        c.batching.max_requests,
        c.batching.max_bytes,
        c.batching.window_slots,
        report.host.cpus,
        report.host.load_before,
        report.host.load_after,
        report.host.cpu_idle
    );
    let _ = writeln!(out, "{HEADER}");
    for row in &report.rows {
        let _ = writeln!(out, "{}", row_line(row));
    }
    for row in report.rows.iter().filter(|r| !r.perf.is_empty()) {
        let _ = writeln!(
            out,
            "perf stat, {} {} clients (per committed op, user+kernel):",
            row.system, row.clients
        );
        for c in &row.perf {
            let name = format!("r{}{}", c.replica, if c.leader { " (leader)" } else { "" });
            let costs = [
                c.instructions_per_op,
                c.cycles_per_op,
                c.context_switches_per_op,
                c.cpus_used,
            ];
            let _ = writeln!(out, "{}", cost_line(&name, costs));
        }
        let total = |f: fn(&crate::report::ReplicaCost) -> f64| row.perf.iter().map(f).sum::<f64>();
        let costs = [
            total(|c| c.instructions_per_op),
            total(|c| c.cycles_per_op),
            total(|c| c.context_switches_per_op),
            total(|c| c.cpus_used),
        ];
        let _ = writeln!(out, "{}", cost_line("all", costs));
    }
    let _ = writeln!(out, "baselines (same run):");
    let _ = writeln!(
        out,
        "  tcp loopback round trip   p50 {:>6} us   p99 {:>6} us",
        b.tcp_round_trip.p50_us, b.tcp_round_trip.p99_us
    );
    let _ = writeln!(
        out,
        "  shm cache-line round trip p50 {:>6} ns   p99 {:>6} ns",
        b.shm_round_trip_ns.0, b.shm_round_trip_ns.1
    );
    let _ = writeln!(out, "  {}", wake_line(b));
    let _ = writeln!(
        out,
        "  4 KiB write+fdatasync     p50 {:>6} us   p99 {:>6} us   ({})",
        b.fdatasync.p50_us, b.fdatasync.p99_us, b.fdatasync_dir
    );
    match &b.fdatasync_direct {
        Some(direct) => {
            let _ = writeln!(
                out,
                "  4 KiB O_DIRECT write+fdatasync p50 {:>4} us   p99 {:>6} us   (the file log's own primitive here)",
                direct.p50_us, direct.p99_us
            );
        }
        None => {
            let _ = writeln!(out, "  O_DIRECT refused here: the file log writes through the page cache");
        }
    }
    let _ = writeln!(
        out,
        "  same, {} writers at once   p50 {:>6} us   p99 {:>6} us",
        b.fdatasync_writers, b.fdatasync_concurrent.p50_us, b.fdatasync_concurrent.p99_us
    );
    let _ = writeln!(
        out,
        "  2 writers released together p50 {:>4} us   p99 {:>6} us   (until both synced: a majority of 3 on this disk)",
        b.fdatasync_pair.p50_us, b.fdatasync_pair.p99_us
    );
    let _ = writeln!(
        out,
        "  commit floor (tcp + fdatasync p50): {} us (lone fdatasync), {} us (concurrent)",
        b.commit_floor_p50_us, b.commit_floor_concurrent_p50_us
    );
    let _ = writeln!(
        out,
        "  this host's one-client commit floor: {} us (2 tcp round trips + 2 writers released together)",
        b.commit_floor_this_host_p50_us
    );
    if let Some(together) = &report.baselines_together {
        let _ = writeln!(out, "  {}", together_line(together));
    }
    for row in &report.rows {
        let b = report.baselines_for(row.placement);
        let _ = writeln!(
            out,
            "  {} {:>4} clients: p50 {:.2}x the lone floor, {:.2}x the concurrent floor; from send p50 {} us p99 {} us; send lag p50 {} us p99 {} us",
            row.system,
            row.clients,
            row.latency.p50_us as f64 / b.commit_floor_p50_us.max(1) as f64,
            row.latency.p50_us as f64 / b.commit_floor_concurrent_p50_us.max(1) as f64,
            row.latency_uncorrected.p50_us,
            row.latency_uncorrected.p99_us,
            row.send_lag.p50_us,
            row.send_lag.p99_us
        );
        if let Some(line) = row.per_second.as_ref().map(per_second_line) {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(why) = &report.peer_skipped {
        let _ = writeln!(out, "peer etcd: skipped ({why})");
    }
    for r in &report.ratios {
        let _ = writeln!(
            out,
            "decree/etcd at {:>4} clients: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
            r.clients, r.throughput_ratio, r.p50_latency_ratio, r.p99_latency_ratio
        );
    }
    let _ = writeln!(out, "targets:");
    for t in &report.targets {
        let verdict = match t.verdict {
            Verdict::Met => "MET   ",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "n/a   ",
        };
        let _ = writeln!(out, "  {verdict} {}: {}", t.target, t.measured);
    }
    out
}

/// One `perf stat` line: instructions, cycles and context switches per op, and CPUs busy.
fn cost_line(name: &str, [instructions, cycles, switches, cpus]: [f64; 4]) -> String {
    format!(
        "  {name:<11} {instructions:>9.0} instructions {cycles:>9.0} cycles {switches:>6.3} context switches   {cpus:.2} CPUs busy"
    )
}

/// "per second: min / median / max ops/s", and a warning when the host's speed changed.
fn per_second_line(spread: &crate::report::PerSecond) -> String {
    let mut line = format!(
        "per second: {} / {} / {} ops/s (slowest / median / fastest)",
        spread.min, spread.median, spread.max
    );
    if let Some(swing) = spread.unsteady_swing() {
        line.push_str(&format!(
            "; the host's speed changed {swing:.1}x during this point: compare medians of several runs"
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_up_line_gives_both_cpus_or_says_what_was_not_measured() {
        let us = |p50_us, p99_us| LatencySummary {
            count: 1,
            p50_us,
            p99_us,
            ..LatencySummary::default()
        };
        let both = wake_text(Some(&us(7, 13)), Some(&us(49, 139)));
        assert!(both.contains("p50 7 us p99 13 us on one CPU"), "{both}");
        assert!(both.contains("p50 49 us p99 139 us across two"), "{both}");
        let one = wake_text(Some(&us(7, 13)), None);
        assert!(!one.contains("across"), "a 1-CPU host has no cross-CPU figure: {one}");
        assert!(wake_text(None, None).contains("cannot pin"));
    }

    #[test]
    fn an_unsteady_point_is_flagged_and_a_steady_one_is_not() {
        let steady = crate::report::PerSecond::of(&[20_000, 21_000, 19_500]).unwrap();
        assert_eq!(
            (steady.min, steady.median, steady.max),
            (19_500, 20_000, 21_000)
        );
        assert!(
            !per_second_line(&steady).contains("changed"),
            "{}",
            per_second_line(&steady)
        );
        let swinging = crate::report::PerSecond::of(&[20_969, 13_245, 12_206, 11_039]).unwrap();
        let line = per_second_line(&swinging);
        assert!(line.contains("11039 / 13245 / 20969"), "{line}");
        assert!(line.contains("changed 1.9x"), "{line}");
        assert!(
            crate::report::PerSecond::of(&[5]).is_none(),
            "one second is no spread"
        );
    }

    #[test]
    fn row_line_aligns_with_the_header() {
        let row = Row {
            system: "decree".into(),
            mode: "closed".into(),
            clients: 64,
            payload_bytes: 64,
            ops: 1_234_567,
            errors: 0,
            busy_retries: 0,
            ops_per_s: 123_456.7,
            mb_per_s: 7.9,
            latency: LatencySummary {
                count: 1,
                p50_us: 512,
                p90_us: 900,
                p99_us: 1_500,
                p999_us: 4_000,
                max_us: 12_345,
                mean_us: 600.0,
            },
            latency_uncorrected: LatencySummary::default(),
            send_lag: LatencySummary::default(),
            cdf: Vec::new(),
            perf: Vec::new(),
            per_second: None,
            placement: crate::placement::Placement::Together { cpu: 1 },
        };
        let line = row_line(&row);
        assert_eq!(line.len(), HEADER.len(), "\n{HEADER}\n{line}");
        // Each number ends where its column title ends.
        for (title, value) in [
            ("ops/s", "123457"),
            ("MB/s", "7.90"),
            ("p50 us", " 512"),
            ("max us", "12345"),
            ("placed", "cpu 1"),
        ] {
            assert_eq!(
                HEADER.find(title).unwrap() + title.len(),
                line.rfind(value).unwrap() + value.len(),
                "{title}"
            );
        }
    }
}
