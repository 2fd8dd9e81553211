//! `make bench-verbs`: one-sided write latency and replication round trip per transport, each
//! printed beside its raw baseline measured in the same run.
//!
//!   bench_verbs shm [ITERS]    shm vs a cross-process cache-line ping-pong
//!   bench_verbs tcp [ITERS]    tcp vs a raw TCP ping-pong on the same loopback
//!   bench_verbs rdma [ITERS] --baseline-us T   (feature rdma; devices from DECREE_RDMA_DEV_A/B)
//!                              rdma vs perftest's ib_write_lat, whose t_typical T is passed in
//!
//! "write" = post to completion (the bytes are in the follower's memory); "round trip" = write,
//! the follower notices it (polling, as a replica would) and acknowledges it as persisted, the
//! leader sees the acknowledgement. Medians and p99 in microseconds; ratio = ours / baseline.

use decree_verbs::shm::{ShmFollower, ShmLeader};
use decree_verbs::tcp::{TcpConfig, TcpFollower, TcpLeader};
use decree_verbs::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, Write,
};
use hdrhistogram::Histogram;
use std::io::{Read, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: LeaderToken = LeaderToken(1);
const ENTRY_BYTES: usize = 64;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(transport: &str, what: &str, ours: &Histogram<u64>, base_name: &str, base_median_us: f64) {
    let med = us(ours, 0.5);
    println!(
        "{transport:<5} {what:<46} median {med:>9.2} us  p99 {:>9.2} us | baseline {base_name:<34} median {base_median_us:>9.2} us | ratio {:>6.2}x",
        us(ours, 0.99),
        med / base_median_us
    );
}

/// The baseline is measured before and after ours; the lower median is the one compared
/// against (the other shows how much the shared machine disturbed the run).
fn baseline(before_us: f64, after_us: f64) -> f64 {
    println!("      baseline medians: before {before_us:.2} us, after {after_us:.2} us (ratio uses the lower)");
    before_us.min(after_us)
}

/// The entry written each iteration: 56 bytes of payload and the sequence number last, so a
/// follower polling the last word sees the whole entry once it sees the number (x86 TSO; the
/// store is one memcpy of increasing addresses on shm, and in-order placement on tcp and rdma).
fn entry(seq: u64) -> [u8; ENTRY_BYTES] {
    let mut e = [0xABu8; ENTRY_BYTES];
    e[ENTRY_BYTES - 8..].copy_from_slice(&seq.to_le_bytes());
    e
}

/// Polls the leader until the follower's persisted mark reaches `upto`.
fn wait_persisted(
    link: &mut impl LeaderLink,
    events: &mut Vec<LeaderEvent>,
    upto: u64,
    what: &str,
) {
    spin_until(
        || {
            events.clear();
            link.poll(events).unwrap();
            events
                .iter()
                .any(|e| matches!(e, LeaderEvent::Persisted { upto: at } if *at == upto))
        },
        what,
    );
}

fn spin_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0u32;
    while !done() {
        n = n.wrapping_add(1);
        if n % 4096 == 0 {
            assert!(
                Instant::now() < deadline,
                "bench stalled waiting for {what}"
            );
            std::thread::yield_now(); // two cores shared with the peer: let it run
        }
        std::hint::spin_loop();
    }
}

// ---- shm ----------------------------------------------------------------------------------

/// Baseline: two processes bounce a counter through two cache lines of a shared mapping.
fn shm_pingpong(exe: &std::path::Path, path: &std::path::Path, iters: u64) -> f64 {
    let pp = decree_verbs::mapping::Mapping::create_shared(path, 8192, |_| {}).unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["pingpong-child", path.to_str().unwrap(), &iters.to_string()])
        .spawn()
        .unwrap();
    let (ping, pong) = (pp.atomic_u64(0), pp.atomic_u64(4096)); // separate pages, like the region's entry and ack words
    let mut base = hist();
    spin_until(
        || pong.load(Ordering::Acquire) == u64::MAX,
        "ping-pong child start",
    );
    for i in 1..=iters {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        spin_until(|| pong.load(Ordering::Acquire) == i, "pong");
        base.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    assert!(child.wait().unwrap().success());
    us(&base, 0.5)
}

fn shm(iters: u64) {
    let path = std::env::temp_dir().join(format!("decree-bench-shm-{}", std::process::id()));
    let path = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm").join(path.file_name().unwrap())
    } else {
        path
    };
    let exe = std::env::current_exe().unwrap();

    let before = shm_pingpong(&exe, &path, iters);
    // Ours: the leader stores an entry into the follower's region (a second process polls the
    // entry's sequence word and acknowledges it as persisted through the region header).
    let mut f = ShmFollower::create(&path, 1 << 20).unwrap();
    f.grant(TOKEN).unwrap();
    let mut child = std::process::Command::new(&exe)
        .args(["follower-child", path.to_str().unwrap(), &iters.to_string()])
        .spawn()
        .unwrap();
    let mut l = ShmLeader::connect(&path, TOKEN, Durability::FollowerPersists).unwrap();
    let key = l.remote().key;
    let (mut write, mut rt) = (hist(), hist());
    let mut ev = Vec::new();
    for i in 1..=iters {
        let e = entry(i);
        let t = Instant::now();
        l.post_write(&Write {
            key,
            offset: 0,
            bytes: &e,
            imm: None,
        })
        .unwrap();
        write.record(t.elapsed().as_nanos() as u64).unwrap();
        wait_persisted(&mut l, &mut ev, i, "persisted ack");
        rt.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    assert!(child.wait().unwrap().success());
    drop(f);
    let after = shm_pingpong(&exe, &path, iters);
    let b = baseline(before, after);
    row(
        "shm",
        "write (store into peer region)",
        &write,
        "cache-line ping-pong round trip",
        b,
    );
    row(
        "shm",
        "round trip (write, poll, ack)",
        &rt,
        "cache-line ping-pong round trip",
        b,
    );
    let _ = std::fs::remove_file(&path);
}

fn pingpong_child(path: &str, iters: u64) {
    let m = decree_verbs::mapping::Mapping::open_shared(std::path::Path::new(path), 4096).unwrap();
    let (ping, pong) = (m.atomic_u64(0), m.atomic_u64(4096));
    pong.store(u64::MAX, Ordering::Release);
    for i in 1..=iters {
        spin_until(|| ping.load(Ordering::Acquire) == i, "ping");
        pong.store(i, Ordering::Release);
    }
}

fn follower_child(path: &str, iters: u64) {
    // The follower's side of the shm round trip: map the region (as the follower process would
    // have it), poll the sequence word, publish the persisted horizon as the ack.
    let m = decree_verbs::mapping::Mapping::open_shared(std::path::Path::new(path), 4096).unwrap();
    let header = decree_verbs::shm::header::Header::new(&m);
    let seq_word = m.atomic_u64(decree_verbs::shm::header::HEADER_BYTES + ENTRY_BYTES - 8);
    for i in 1..=iters {
        spin_until(|| seq_word.load(Ordering::Acquire) == i, "entry");
        header.set_persisted(i);
    }
}

// ---- tcp ----------------------------------------------------------------------------------

/// Baseline: raw 64-byte ping-pong between two threads over loopback, TCP_NODELAY.
fn tcp_pingpong(iters: u64) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; ENTRY_BYTES];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut base = hist();
    let mut buf = [0u8; ENTRY_BYTES];
    for i in 0..iters {
        let t = Instant::now();
        c.write_all(&entry(i)).unwrap();
        c.read_exact(&mut buf).unwrap();
        base.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    drop(c);
    echo.join().unwrap();
    us(&base, 0.5)
}

fn tcp(iters: u64) {
    let before = tcp_pingpong(iters);
    // Ours: write completion (the receiver thread applied it), and the round trip with the
    // follower's persisted ack (a follower thread polls and acknowledges).
    let mut f = TcpFollower::listen("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    f.grant(TOKEN).unwrap();
    let mut l = TcpLeader::connect(f.addr(), TOKEN, TcpConfig::default()).unwrap();
    let key = l.remote().key;
    let stop = Arc::new(AtomicBool::new(false));
    let landed = Arc::new(AtomicU64::new(0));
    let follower = {
        let (stop, landed) = (stop.clone(), landed.clone());
        std::thread::spawn(move || {
            let mut ev = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ev.clear();
                f.poll(&mut ev).unwrap();
                for e in &ev {
                    if let FollowerEvent::Landed { offset, len, .. } = e {
                        let n = landed.fetch_add(1, Ordering::Relaxed) + 1;
                        f.ack_persisted(TOKEN, offset + len + n).unwrap();
                    }
                }
                std::hint::spin_loop();
            }
        })
    };
    let (mut write, mut rt) = (hist(), hist());
    let mut ev = Vec::new();
    for i in 1..=iters {
        let e = entry(i);
        let t = Instant::now();
        let id = l
            .post_write(&Write {
                key,
                offset: 0,
                bytes: &e,
                imm: None,
            })
            .unwrap();
        let mut done = false;
        let mut acked = false;
        spin_until(
            || {
                ev.clear();
                l.poll(&mut ev).unwrap();
                for e in &ev {
                    match e {
                        LeaderEvent::Completed { id: x, .. } if *x == id => {
                            write.record(t.elapsed().as_nanos() as u64).unwrap();
                            done = true;
                        }
                        LeaderEvent::Persisted { upto } if *upto == ENTRY_BYTES as u64 + i => {
                            acked = true
                        }
                        _ => {}
                    }
                }
                done && acked
            },
            "tcp write + ack",
        );
        rt.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    follower.join().unwrap();
    let b = baseline(before, tcp_pingpong(iters));
    row(
        "tcp",
        "write (applied by receiver, acked)",
        &write,
        "raw TCP ping-pong round trip",
        b,
    );
    row(
        "tcp",
        "round trip (write, poll, ack)",
        &rt,
        "raw TCP ping-pong round trip",
        b,
    );
}

// ---- rdma ---------------------------------------------------------------------------------

#[cfg(feature = "rdma")]
fn rdma(iters: u64, baseline_us: f64) {
    use decree_verbs::mapping::Mapping;
    use decree_verbs::rdma::{RdmaConfig, RdmaFollower, RdmaLeader};
    let dev = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} unset"));
    let mut f = RdmaFollower::listen(
        "127.0.0.1:0".parse().unwrap(),
        RdmaConfig::new(&dev("DECREE_RDMA_DEV_A")),
        Mapping::anonymous(1 << 20).unwrap(),
    )
    .unwrap();
    f.grant(TOKEN).unwrap();
    let mut cfg = RdmaConfig::new(&dev("DECREE_RDMA_DEV_B"));
    cfg.durability = Durability::Volatile;
    let mut l = RdmaLeader::connect(f.addr(), TOKEN, cfg).unwrap();
    let key = l.remote().key;
    let (mut arrive, mut write, mut rt) = (hist(), hist(), hist());
    let (mut ev, mut fev) = (Vec::new(), Vec::new());
    // The follower's polling thread adopts the welcomed leader; it writes only once told.
    spin_until(
        || {
            f.poll(&mut fev).unwrap();
            l.poll(&mut ev).unwrap();
            l.adopted()
        },
        "adoption",
    );
    fev.clear();
    ev.clear();
    let mut word = [0u8; 8];
    for i in 1..=iters {
        let e = entry(i);
        // Arrival: post, then poll the follower's memory for the entry's sequence word, as
        // ib_write_lat polls for its peer's write (its t_typical is this one-way time).
        let t = Instant::now();
        l.post_write(&Write {
            key,
            offset: 128,
            bytes: &e,
            imm: None,
        })
        .unwrap();
        spin_until(
            || {
                f.read(128 + ENTRY_BYTES as u64 - 8, &mut word).unwrap();
                u64::from_le_bytes(word) == i
            },
            "bytes at follower",
        );
        arrive.record(t.elapsed().as_nanos() as u64).unwrap();
        spin_until(
            || {
                ev.clear();
                l.poll(&mut ev).unwrap();
                ev.iter()
                    .any(|e| matches!(e, LeaderEvent::Completed { .. }))
            },
            "arrival write's completion",
        );
        // One-sided write: post to completion (RC ACK from the follower's NIC).
        let t = Instant::now();
        let id = l
            .post_write(&Write {
                key,
                offset: 0,
                bytes: &e,
                imm: None,
            })
            .unwrap();
        spin_until(
            || {
                ev.clear();
                l.poll(&mut ev).unwrap();
                ev.iter()
                    .any(|e| matches!(e, LeaderEvent::Completed { id: x, .. } if *x == id))
            },
            "rdma completion",
        );
        write.record(t.elapsed().as_nanos() as u64).unwrap();
        // Round trip: WRITE_WITH_IMM, the follower polls its CQ and acks over the side channel.
        let t = Instant::now();
        l.post_write(&Write {
            key,
            offset: 64,
            bytes: &e,
            imm: Some(i as u32),
        })
        .unwrap();
        spin_until(
            || {
                fev.clear();
                f.poll(&mut fev).unwrap();
                fev.iter().any(|e| matches!(e, FollowerEvent::Imm { .. }))
            },
            "imm at follower",
        );
        f.ack_persisted(TOKEN, i).unwrap();
        wait_persisted(&mut l, &mut ev, i, "ack at leader");
        rt.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    row(
        "rdma",
        "arrival (post until follower memory shows it)",
        &arrive,
        "ib_write_lat t_typical",
        baseline_us,
    );
    // ib_write_lat reports half of a write ping-pong; a write completion is a full round trip.
    row(
        "rdma",
        "write (post to completion)",
        &write,
        "2 x ib_write_lat t_typical",
        2.0 * baseline_us,
    );
    row(
        "rdma",
        "round trip (write+imm, poll, ack)",
        &rt,
        "2 x ib_write_lat t_typical",
        2.0 * baseline_us,
    );
    println!("rdma  (soft-RoCE under QEMU TCG: functional numbers, not NIC performance)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.get(1).map(String::as_str) {
        Some("shm") => shm(arg(2, 20_000)),
        Some("tcp") => tcp(arg(2, 5_000)),
        #[cfg(feature = "rdma")]
        Some("rdma") => {
            let base = args
                .iter()
                .position(|a| a == "--baseline-us")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .expect("--baseline-us T (ib_write_lat t_typical) required");
            rdma(arg(2, 1_000), base)
        }
        Some("pingpong-child") => pingpong_child(&args[2], arg(3, 0)),
        Some("follower-child") => follower_child(&args[2], arg(3, 0)),
        _ => {
            eprintln!("usage: bench_verbs shm|tcp [ITERS] | rdma [ITERS] --baseline-us T");
            std::process::exit(2);
        }
    }
}
