//! The real-process crash loop. `pmem-crash loop` creates a log, then repeatedly starts
//! `pmem-crash child` (which recovers the log and appends, printing every acknowledged write on
//! stdout), kills it with SIGKILL at a random moment, recovers the log itself and checks that
//! every acknowledged record is present and intact.
//!
//!     pmem-crash loop --dir DIR --iterations N [--seed S] [--max-kill-ms M] [--backend B]
//!
//! B is file-direct, file-pwrite, file-uring, file-mmap, dax, or `rotate` (the four file strategies in turn;
//! they share one on-disk format). Exit 0 iff every iteration passed.

use decree_engine::types::Ballot;
use decree_pmem::testdata::value;
use decree_pmem::{open, Backend, Config, Log, Medium};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LOG_SIZE_BYTES: u64 = 4 << 20;
/// Slots the child keeps when it discards a prefix.
const KEEP_SLOTS: u64 = 300;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let result = match args.first().map(String::as_str) {
        Some("child") => child(PathBuf::from(flag("--path").expect("--path")), &flag("--backend").expect("--backend"), flag("--seed").expect("--seed").parse().expect("seed")),
        Some("loop") => parent(
            PathBuf::from(flag("--dir").expect("--dir")),
            flag("--iterations").map_or(200, |s| s.parse().expect("iterations")),
            flag("--seed").map_or_else(|| fastrand::u64(..), |s| s.parse().expect("seed")),
            flag("--max-kill-ms").map_or(40, |s| s.parse().expect("max-kill-ms")),
            flag("--backend").unwrap_or_else(|| "rotate".into()),
        ),
        _ => Err("usage: pmem-crash loop --dir DIR --iterations N [--seed S] [--max-kill-ms M] [--backend B]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmem-crash: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config(path: PathBuf, backend: &str) -> Result<Config, String> {
    let backend = Backend::parse(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
    Ok(Config { path, size_bytes: LOG_SIZE_BYTES, backend })
}

/// Appends forever (until killed), printing each acknowledged write after its sync returned.
fn child(path: PathBuf, backend: &str, seed: u64) -> Result<(), String> {
    let mut log = open(&config(path, backend)?).map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let round = log.hard_state().promise.round + 1;
    let mut next = log.slots().last().map_or(log.base_slot(), |(s, _)| s + 1);
    let out = std::io::stdout();
    let mut out = out.lock();
    log.append_promise(Ballot { round, leader: 0 }).map_err(|e| e.to_string())?;
    log.sync().map_err(|e| e.to_string())?;
    writeln!(out, "promise {round}").map_err(|e| e.to_string())?;
    loop {
        let batch = rng.u64(1..48);
        let first = next;
        let mut acks = Vec::new();
        for _ in 0..batch {
            if next > first && rng.u8(..10) == 0 {
                // Re-accept an earlier live slot at this round: appended, superseding.
                let slot = rng.u64(next.saturating_sub(KEEP_SLOTS / 2).max(log.base_slot())..next);
                append(&mut log, slot, round)?;
                acks.push(slot);
            }
            append(&mut log, next, round)?;
            next += 1;
        }
        let commit = next.saturating_sub(rng.u64(0..20));
        log.append_commit(commit).map_err(|e| e.to_string())?;
        log.sync().map_err(|e| e.to_string())?;
        writeln!(out, "ack {first} {} {round}", next - 1).map_err(|e| e.to_string())?;
        for slot in acks {
            writeln!(out, "ack {slot} {slot} {round}").map_err(|e| e.to_string())?;
        }
        writeln!(out, "commit {commit}").map_err(|e| e.to_string())?;
        if next - log.base_slot() > 2 * KEEP_SLOTS {
            let below = next - KEEP_SLOTS;
            log.discard_prefix(below).map_err(|e| e.to_string())?;
            writeln!(out, "discard {below}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
}

fn append(log: &mut Log<Box<dyn Medium>>, slot: u64, round: u64) -> Result<(), String> {
    log.append_entry(slot, Ballot { round, leader: 0 }, &value(slot, round)).map(|_| ()).map_err(|e| e.to_string())
}

/// What the children acknowledged, across all iterations.
#[derive(Default)]
struct Acked {
    /// Slot -> round of its latest acknowledged value.
    entries: BTreeMap<u64, u64>,
    promise_round: u64,
    commit: u64,
    base: u64,
}

impl Acked {
    fn apply(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<u64> = line.split_whitespace().skip(1).map(|w| w.parse().map_err(|_| format!("bad line {line:?}"))).collect::<Result<_, _>>()?;
        match (line.split_whitespace().next(), words.as_slice()) {
            (Some("ack"), [first, last, round]) => (*first..=*last).for_each(|s| {
                self.entries.insert(s, *round);
            }),
            (Some("promise"), [round]) => self.promise_round = *round,
            (Some("commit"), [c]) => self.commit = self.commit.max(*c),
            (Some("discard"), [below]) => {
                self.base = *below;
                self.entries = self.entries.split_off(below);
            }
            _ => return Err(format!("bad line {line:?}")),
        }
        Ok(())
    }

    /// Every acknowledged fact must be in the recovered log.
    fn verify(&self, log: &Log<Box<dyn Medium>>) -> Result<(), String> {
        let hard = log.hard_state();
        if hard.promise.round < self.promise_round {
            return Err(format!("promise round {} < acknowledged {}", hard.promise.round, self.promise_round));
        }
        if hard.commit < self.commit {
            return Err(format!("commit {} < acknowledged {}", hard.commit, self.commit));
        }
        for (&slot, &round) in self.entries.range(log.base_slot()..) {
            let got = log.read(slot).map_err(|e| e.to_string())?.ok_or_else(|| format!("acknowledged slot {slot} missing"))?;
            // An unacknowledged later write may have landed too; it must be intact and newer.
            if got.ballot.round < round || got.payload != value(slot, got.ballot.round) {
                return Err(format!("slot {slot}: round {} (acked {round}), payload intact: {}", got.ballot.round, got.payload == value(slot, got.ballot.round)));
            }
        }
        if log.base_slot() < self.base {
            return Err(format!("acknowledged discard below {} lost (base {})", self.base, log.base_slot()));
        }
        Ok(())
    }
}

fn parent(dir: PathBuf, iterations: u64, seed: u64, max_kill_ms: u64, backend: String) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("crash-{seed}.log"));
    let _ = std::fs::remove_file(&path);
    let backends: Vec<&str> = if backend == "rotate" { vec!["file-direct", "file-pwrite", "file-uring", "file-mmap"] } else { vec![backend.as_str()] };
    drop(open(&config(path.clone(), backends[0])?).map_err(|e| e.to_string())?);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked = Acked::default();
    let started = Instant::now();
    let (mut passed, mut total_acks) = (0u64, 0u64);
    eprintln!("pmem-crash: seed {seed}, {iterations} iterations, kill within {max_kill_ms} ms, log {}", path.display());
    for iteration in 0..iterations {
        let backend = backends[iteration as usize % backends.len()];
        let mut child = Command::new(&exe)
            .args(["child", "--path"])
            .arg(&path)
            .args(["--backend", backend, "--seed", &rng.u64(..).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn child: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // Only whole lines count: a line cut by the kill was never fully reported.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.ends_with('\n') && tx.send(line.trim_end().to_string()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        std::thread::sleep(Duration::from_millis(rng.u64(0..=max_kill_ms)));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().map_err(|e| e.to_string())?;
        reader.join().map_err(|_| "reader thread panicked")?;
        let lines: Vec<String> = rx.try_iter().collect();
        if status.code().is_some() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err);
            return Err(format!("iteration {iteration}: child exited on its own ({status}) before the kill: {err}"));
        }
        total_acks += lines.iter().filter(|l| l.starts_with("ack")).count() as u64;
        for line in &lines {
            acked.apply(line)?;
        }
        let log = open_when_released(&config(path.clone(), backend)?).map_err(|e| format!("iteration {iteration}: recovery failed: {e}"))?;
        acked.verify(&log).map_err(|e| format!("iteration {iteration} (seed {seed}, backend {backend}): {e}"))?;
        passed += 1;
    }
    eprintln!(
        "pmem-crash: {} acknowledged batches checked, {} live slots at the end, {:.1} s",
        total_acks,
        acked.entries.len(),
        started.elapsed().as_secs_f64()
    );
    println!("crash loop: {passed} passed, 0 failed");
    Ok(())
}

/// Opens the log, waiting (bounded) for the killed child's lock to go: the kernel may release a
/// dead process's file a moment after wait() returns (e.g. while its io_uring instance tears down).
fn open_when_released(config: &Config) -> Result<Log<Box<dyn Medium>>, decree_pmem::Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(config) {
            Err(decree_pmem::Error::Locked { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            other => return other,
        }
    }
}
