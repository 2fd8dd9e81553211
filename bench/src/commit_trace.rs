//! Where a one-client put's time goes, from a `perf script` dump of syscall tracepoints recorded
//! on every CPU during `decree-bench run --clients 1` (`ci/trace-commit.sh` records one). Each
//! put is followed by role, not by frame size: the load generator's send, the replica thread
//! that reads exactly those bytes (the leader), the leader's next send (the accept), the other
//! replica that reads exactly that (the follower on the commit path), each one's log write and
//! sync, the follower's acknowledgement, the leader's reply and the load generator's read of it.
//! The medians say how much of a commit is the network hops, how much the disk, how much the
//! replicas' own CPU: the profile behind the low-load target's verdict.

use crate::error::BenchError;
use std::fmt;

/// One syscall tracepoint: a thread entering or leaving a call that matters to a commit.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// Microseconds (perf's clock).
    pub at_us: f64,
    /// Who: the load generator or a replica.
    pub side: Side,
    /// Process id (a replica).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Entering (with a send's length) or leaving (with the call's result).
    pub edge: Edge,
    /// Which call.
    pub call: Call,
    /// A send's length on entry; the byte count (or 0) on exit. `None` when not given.
    pub bytes: Option<u64>,
}

/// Which program a thread belongs to, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// decree-bench's load generator.
    Client,
    /// A decree replica's thread (`decree-io-N`, `decree-core`, `decree-persist`, ...).
    Replica,
}

/// Entry or exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The call starts.
    Enter,
    /// The call returns.
    Exit,
}

/// The calls a commit makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// sendto (its length is in the entry tracepoint; sendmsg's is not).
    Send,
    /// recvfrom.
    Recv,
    /// A log write (pwrite64, pwritev, pwritev2).
    Write,
    /// A log sync (fdatasync, fsync).
    Sync,
}

/// Parses one `perf script -F comm,pid,tid,time,event,trace` line; `None` for lines about other
/// programs or calls, and for failed calls (a negative result).
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    // comm may hold spaces, so find "pid/tid" followed by "seconds:".
    let at = tokens
        .windows(2)
        .position(|pair| pid_tid(pair[0]).is_some() && seconds(pair[1]).is_some())?;
    let comm = tokens[..at].join(" ");
    let side = if comm.starts_with("decree-bench") {
        Side::Client
    } else if comm.starts_with("decree") {
        Side::Replica
    } else {
        return None;
    };
    let (pid, tid) = pid_tid(tokens[at])?;
    let at_us = seconds(tokens[at + 1])? * 1e6;
    let event = tokens
        .get(at + 2)?
        .strip_prefix("syscalls:sys_")?
        .strip_suffix(':')?;
    let (edge, name) = match event.split_once('_')? {
        ("enter", name) => (Edge::Enter, name),
        ("exit", name) => (Edge::Exit, name),
        _ => return None,
    };
    let call = match name {
        "sendto" => Call::Send,
        "recvfrom" => Call::Recv,
        "pwrite64" | "pwritev" | "pwritev2" => Call::Write,
        "fdatasync" | "fsync" => Call::Sync,
        _ => return None,
    };
    let rest = &tokens[at + 3..];
    let bytes = match edge {
        Edge::Exit => Some(result(rest.first()?)?),
        Edge::Enter => rest
            .windows(2)
            .find(|pair| pair[0] == "len:")
            .and_then(|pair| hex(pair[1].trim_end_matches(','))),
    };
    Some(TraceEvent {
        at_us,
        side,
        pid,
        tid,
        edge,
        call,
        bytes,
    })
}

fn pid_tid(token: &str) -> Option<(u32, u32)> {
    let (pid, tid) = token.split_once('/')?;
    Some((pid.parse().ok()?, tid.parse().ok()?))
}

fn seconds(token: &str) -> Option<f64> {
    token.strip_suffix(':')?.parse().ok()
}

fn hex(token: &str) -> Option<u64> {
    u64::from_str_radix(token.strip_prefix("0x")?, 16).ok()
}

/// A call's result: perf prints it in hex, or negative in decimal (an error: no event).
fn result(token: &str) -> Option<u64> {
    hex(token)
        .or_else(|| token.parse::<u64>().ok())
        .filter(|&value| value < 1 << 62)
}

/// The segments of one put, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PutTimeline {
    /// Client send to client read of the reply.
    pub total: f64,
    /// Client send to the leader's read of the request.
    pub client_to_leader: f64,
    /// Leader read the request to leader starts sending the accept.
    pub leader_to_accept: f64,
    /// Accept send to the follower's read of it.
    pub accept_to_follower: f64,
    /// The leader's log write.
    pub leader_write: f64,
    /// The leader's sync.
    pub leader_sync: f64,
    /// The follower's read of the accept to its write's start.
    pub follower_to_write: f64,
    /// The follower's log write.
    pub follower_write: f64,
    /// The follower's sync.
    pub follower_sync: f64,
    /// How much later than the leader's the follower's write starts.
    pub follower_write_lag: f64,
    /// Follower synced to its acknowledgement's send.
    pub follower_to_ack: f64,
    /// Acknowledgement send to the leader's read of it.
    pub ack_to_leader: f64,
    /// The later of (acknowledgement read, own sync done) to the reply's send.
    pub leader_to_reply: f64,
    /// Reply send to the client's read of it.
    pub reply_to_client: f64,
}

impl PutTimeline {
    /// The four one-way messages of a commit.
    pub fn hops(&self) -> f64 {
        self.client_to_leader + self.accept_to_follower + self.ack_to_leader + self.reply_to_client
    }

    /// The follower's write and sync: the storage on the commit's critical path (the leader's
    /// own overlaps it, started a little earlier).
    pub fn follower_storage(&self) -> f64 {
        self.follower_write + self.follower_sync
    }

    /// Replica CPU on the critical path between those calls.
    pub fn replica_cpu(&self) -> f64 {
        self.leader_to_accept + self.follower_to_write + self.follower_to_ack + self.leader_to_reply
    }
}

/// Follows every put of a one-client run through `events` (in any order).
pub fn timelines(mut events: Vec<TraceEvent>) -> Vec<PutTimeline> {
    events.sort_by(|a, b| a.at_us.total_cmp(&b.at_us));
    let sends: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let e = &events[i];
            e.side == Side::Client && e.edge == Edge::Enter && e.call == Call::Send
        })
        .collect();
    let ends = sends
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(events.len()));
    sends
        .iter()
        .zip(ends)
        .filter_map(|(&start, end)| follow(&events[start..end]))
        .collect()
}

/// One put: `window` starts with the client's send and ends before its next one.
fn follow(window: &[TraceEvent]) -> Option<PutTimeline> {
    let sent = &window[0];
    let find = |after: f64, matches: &dyn Fn(&TraceEvent) -> bool| {
        window.iter().find(|e| e.at_us >= after && matches(e))
    };
    let read_of = |side: Side, bytes: Option<u64>| {
        move |e: &TraceEvent| {
            e.side == side && e.edge == Edge::Exit && e.call == Call::Recv && e.bytes == bytes
        }
    };
    let request = find(sent.at_us, &read_of(Side::Replica, sent.bytes))?;
    let leader = request.pid;
    let accept = find(request.at_us, &|e| {
        e.tid == request.tid && e.edge == Edge::Enter && e.call == Call::Send
    })?;
    let reads_accept = read_of(Side::Replica, accept.bytes);
    let received = find(accept.at_us, &|e| e.pid != leader && reads_accept(e))?;
    let follower = received.pid;
    let call_of = |pid: u32, edge: Edge, call: Call| {
        move |e: &TraceEvent| {
            e.side == Side::Replica && e.pid == pid && e.edge == edge && e.call == call
        }
    };
    let storage = |pid: u32, after: f64| -> Option<[f64; 4]> {
        let write = find(after, &call_of(pid, Edge::Enter, Call::Write))?;
        let written = find(write.at_us, &call_of(pid, Edge::Exit, Call::Write))?;
        let sync = find(written.at_us, &call_of(pid, Edge::Enter, Call::Sync))?;
        let synced = find(sync.at_us, &call_of(pid, Edge::Exit, Call::Sync))?;
        Some([write.at_us, written.at_us, sync.at_us, synced.at_us])
    };
    let [l_write, l_written, l_sync, l_synced] = storage(leader, request.at_us)?;
    let [f_write, f_written, f_sync, f_synced] = storage(follower, received.at_us)?;
    let ack = find(f_synced, &call_of(follower, Edge::Enter, Call::Send))?;
    let acked = find(ack.at_us, &|e| {
        e.pid == leader && read_of(Side::Replica, ack.bytes)(e)
    })?;
    let ready = acked.at_us.max(l_synced);
    let reply = find(ready, &call_of(leader, Edge::Enter, Call::Send))?;
    let answered = find(reply.at_us, &read_of(Side::Client, reply.bytes))?;
    Some(PutTimeline {
        total: answered.at_us - sent.at_us,
        client_to_leader: request.at_us - sent.at_us,
        leader_to_accept: accept.at_us - request.at_us,
        accept_to_follower: received.at_us - accept.at_us,
        leader_write: l_written - l_write,
        leader_sync: l_synced - l_sync,
        follower_to_write: f_write - received.at_us,
        follower_write: f_written - f_write,
        follower_sync: f_synced - f_sync,
        follower_write_lag: f_write - l_write,
        follower_to_ack: ack.at_us - f_synced,
        ack_to_leader: acked.at_us - ack.at_us,
        leader_to_reply: reply.at_us - ready,
        reply_to_client: answered.at_us - reply.at_us,
    })
}

/// Low, median and high (10th, 50th, 90th percentile) of one segment over the traced puts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Spread {
    /// Of `values` (not empty).
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let at = |q: usize| values[(values.len() - 1) * q / 100];
        Spread {
            p10: at(10),
            p50: at(50),
            p90: at(90),
        }
    }
}

/// The traced puts' segments, summarized.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitProfile {
    /// Puts followed end to end.
    pub puts: usize,
    /// (what, spread), in the order a put crosses them, then the sums.
    pub rows: Vec<(&'static str, Spread)>,
}

type Segment = (&'static str, fn(&PutTimeline) -> f64);

const SEGMENTS: [Segment; 18] = [
    ("total: client send -> client has the reply", |t| t.total),
    ("hop: client -> leader", |t| t.client_to_leader),
    ("leader: request read -> accept sent", |t| {
        t.leader_to_accept
    }),
    ("hop: accept -> follower", |t| t.accept_to_follower),
    ("leader: log write", |t| t.leader_write),
    ("leader: log sync", |t| t.leader_sync),
    ("follower: accept read -> log write starts", |t| {
        t.follower_to_write
    }),
    ("follower: log write", |t| t.follower_write),
    ("follower: log sync", |t| t.follower_sync),
    ("follower's write starts after the leader's by", |t| {
        t.follower_write_lag
    }),
    ("follower: synced -> ack sent", |t| t.follower_to_ack),
    ("hop: ack -> leader", |t| t.ack_to_leader),
    ("leader: ack read and own sync -> reply sent", |t| {
        t.leader_to_reply
    }),
    ("hop: reply -> client", |t| t.reply_to_client),
    ("sum: four hops", PutTimeline::hops),
    (
        "sum: follower's write + sync",
        PutTimeline::follower_storage,
    ),
    (
        "sum: replica CPU between those calls",
        PutTimeline::replica_cpu,
    ),
    ("rest: total - the three sums", |t| {
        t.total - t.hops() - t.follower_storage() - t.replica_cpu()
    }),
];

/// Parses a `perf script` dump and summarizes its puts; an error if none could be followed.
pub fn profile(perf_script: &str) -> Result<CommitProfile, BenchError> {
    let puts = timelines(perf_script.lines().filter_map(parse_line).collect());
    if puts.is_empty() {
        return Err(BenchError::Trace(
            "no put could be followed from client send to reply: record it during `decree-bench run --clients 1` \
             (tcp, file log) with the sendto/recvfrom/pwritev/fdatasync tracepoints on every CPU, as \
             ci/trace-commit.sh does, and dump it with `perf script -F comm,pid,tid,time,event,trace`"
                .to_string(),
        ));
    }
    let rows = SEGMENTS
        .iter()
        .map(|(what, of)| (*what, Spread::of(puts.iter().map(of).collect())))
        .collect();
    Ok(CommitProfile {
        puts: puts.len(),
        rows,
    })
}

impl fmt::Display for CommitProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} one-client puts followed (us)                   p10      p50      p90",
            self.puts
        )?;
        for (what, spread) in &self.rows {
            writeln!(
                f,
                "  {what:<46} {:>8.1} {:>8.1} {:>8.1}",
                spread.p10, spread.p50, spread.p90
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One put: microseconds from its start, thread, pid/tid, tracepoint. Client 100, leader
    /// 200 (I/O thread 201), follower 300.
    const ONE_PUT: &str = "\
0 decree-bench 100/101 enter_sendto: fd: 0x3, len: 0x00000075
4 decree-io-0 200/201 exit_recvfrom: 0x75
5 decree-io-0 200/201 enter_sendto: fd: 0x8, len: 0x0000007e
6 decree-io-0 200/201 enter_pwritev: fd: 0x5, vlen: 0x1
10 decree-io-0 300/301 exit_recvfrom: 0x7e
11 decree-io-0 300/301 enter_pwritev: fd: 0x5, vlen: 0x1
18 decree-io-0 200/201 exit_pwritev: 0x1000
19 decree-io-0 200/201 enter_fdatasync: fd: 0x5
20 decree-io-0 300/301 exit_pwritev: 0x1000
21 decree-io-0 300/301 enter_fdatasync: fd: 0x5
29 decree-io-0 200/201 exit_fdatasync: 0x0
35 decree-io-0 300/301 exit_fdatasync: 0x0
36 decree-io-0 300/301 enter_sendto: fd: 0x7, len: 0x00000019
40 decree-io-0 200/201 exit_recvfrom: 0x19
42 decree-io-0 200/201 enter_sendto: fd: 0x10, len: 0x0000001c
47 decree-bench 100/102 exit_recvfrom: 0x1c";

    /// `ONE_PUT` as `perf script` prints it, starting at `start_s` seconds.
    fn one_put(start_s: f64) -> String {
        ONE_PUT
            .lines()
            .map(|line| {
                let [us, comm, ids, what]: [&str; 4] = line
                    .splitn(4, ' ')
                    .collect::<Vec<_>>()
                    .try_into()
                    .expect("4 fields");
                let at = start_s + us.parse::<f64>().expect("microseconds") / 1e6;
                format!("  {comm} {ids} {at:.6}:  syscalls:sys_{what}\n")
            })
            .collect()
    }

    #[test]
    fn a_put_is_followed_by_role_through_every_segment() {
        let puts = timelines(one_put(10.0).lines().filter_map(parse_line).collect());
        assert_eq!(puts.len(), 1);
        let t = puts[0];
        // The reply waits for the later of the ack (40) and the leader's own sync (29).
        let expected = [
            ("total", t.total, 47.0),
            ("client_to_leader", t.client_to_leader, 4.0),
            ("leader_to_accept", t.leader_to_accept, 1.0),
            ("accept_to_follower", t.accept_to_follower, 5.0),
            ("follower_to_write", t.follower_to_write, 1.0),
            ("leader_write", t.leader_write, 12.0),
            ("leader_sync", t.leader_sync, 10.0),
            ("follower_write", t.follower_write, 9.0),
            ("follower_sync", t.follower_sync, 14.0),
            ("follower_write_lag", t.follower_write_lag, 5.0),
            ("follower_to_ack", t.follower_to_ack, 1.0),
            ("ack_to_leader", t.ack_to_leader, 4.0),
            ("leader_to_reply", t.leader_to_reply, 2.0),
            ("reply_to_client", t.reply_to_client, 5.0),
            ("hops", t.hops(), 18.0),
            ("follower_storage", t.follower_storage(), 23.0),
            ("replica_cpu", t.replica_cpu(), 5.0),
        ];
        for (what, measured, want) in expected {
            assert!(
                (measured - want).abs() < 0.01,
                "{what}: {measured} us, not {want}"
            );
        }
    }

    #[test]
    fn the_reply_waits_for_the_leaders_own_sync_when_it_ends_last() {
        // The leader's sync ends at 44, after the ack (40); the reply goes at 45.
        let trace = one_put(1.0)
            .replace(
                "000029:  syscalls:sys_exit_fdatasync",
                "000044:  syscalls:sys_exit_fdatasync",
            )
            .replace(
                "000042:  syscalls:sys_enter_sendto",
                "000045:  syscalls:sys_enter_sendto",
            )
            .replace(
                "000047:  syscalls:sys_exit_recvfrom",
                "000050:  syscalls:sys_exit_recvfrom",
            );
        let t = timelines(trace.lines().filter_map(parse_line).collect())[0];
        assert!(
            (t.leader_sync - 25.0).abs() < 0.01 && (t.leader_to_reply - 1.0).abs() < 0.01,
            "{t:?}"
        );
    }

    #[test]
    fn consecutive_puts_and_other_programs_are_kept_apart() {
        let mut trace = one_put(1.0) + &one_put(1.001);
        trace
            .push_str("  kworker/0:1H-kb 44/44 1.000005:  syscalls:sys_enter_fdatasync: fd: 0x5\n");
        trace.push_str("  sleep 9/9 1.000006:  syscalls:sys_exit_recvfrom: 0x75\n");
        let profile = profile(&trace).expect("two puts");
        assert_eq!(profile.puts, 2);
        let total = profile.rows[0].1;
        assert!((total.p50 - 47.0).abs() < 0.01, "{profile}");
    }

    #[test]
    fn failed_calls_and_foreign_lines_are_not_events() {
        assert_eq!(
            parse_line("  decree-io-0 1/2 3.0:  syscalls:sys_exit_recvfrom: -11"),
            None
        );
        assert_eq!(
            parse_line("  decree-io-0 1/2 3.0:  syscalls:sys_enter_openat: dfd: 0x1"),
            None
        );
        assert_eq!(parse_line("garbage"), None);
        let event = parse_line("  decree io 7 1/2 3.000001:  syscalls:sys_exit_fdatasync: 0x0")
            .expect("a sync");
        assert_eq!(
            (event.side, event.call, event.edge, event.bytes),
            (Side::Replica, Call::Sync, Edge::Exit, Some(0))
        );
    }

    #[test]
    fn a_trace_without_a_followable_put_is_a_clear_error() {
        let only_client =
            "  decree-bench 1/1 1.0:  syscalls:sys_enter_sendto: fd: 0x3, len: 0x75\n";
        let error = profile(only_client)
            .expect_err("nothing to follow")
            .to_string();
        assert!(error.contains("no put could be followed"), "{error}");
    }
}
