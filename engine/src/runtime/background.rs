//! Work off the commit path runs at the lowest CPU priority (nice 19): a checkpoint's serializing
//! and storing take a CPU only when the replica's own threads, and whatever else on the host has
//! latency to keep, leave it free. At normal priority the three replicas of a 2-vCPU host
//! serialized their checkpoints at the same slot and held the commit path (and a load generator on
//! the same CPUs) for 5-20 ms at every checkpoint (docs/benchmarks.md, session 18). Under full load
//! a checkpoint still finishes: a niced thread gets a small share of a busy CPU, not none, and a
//! log that fills meanwhile sheds writes as it always did (`Driver::shed_writes`).

use thread_priority::{set_current_thread_priority, ThreadPriority};

/// Lowers the calling thread to the lowest priority of its scheduling policy. A host that refuses
/// leaves it where it was: the work is the same, only its share of a busy CPU differs.
pub fn lower_own_priority() {
    if let Err(error) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::debug!(?error, "could not lower a background thread's CPU priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, as the kernel reports it (field 19 of its stat line).
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read own stat");
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        after_name.split(' ').nth(16).expect("stat has a nice field").parse().expect("nice is a number")
    }

    #[test]
    fn a_background_thread_runs_at_the_lowest_priority_and_its_spawner_keeps_its_own() {
        let before = nice();
        let lowered = std::thread::spawn(move || {
            lower_own_priority();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, 19, "the background thread is niced to the lowest priority");
        assert_eq!(nice(), before, "only the calling thread is lowered");
    }
}
