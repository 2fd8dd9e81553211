//! Linux futexes on words of a shared mapping: how a process asleep on its mailbox is woken by
//! the peer that just stored into it (no socket, no signal; the fast path is one atomic add when
//! the receiver is awake). Not FUTEX_PRIVATE: the word is shared across processes.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, at most `timeout` (spurious returns are fine: callers
/// re-check their condition).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (a reference), and
    // `ts` outlives it; FUTEX_WAIT only reads both. EAGAIN / ETIMEDOUT / EINTR are all "return".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every waiter on `word`.
pub fn wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 (a reference); FUTEX_WAKE does not access memory
    // beyond hashing the address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}
