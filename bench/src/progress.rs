//! Progress lines for long runs: one a second on stderr, from a counter the workers bump.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A once-a-second reporter of completed operations; stops when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Reports `counter` under `label` until `total` has passed (or dropped); silent if `enabled` is false.
    pub fn start(
        label: String,
        counter: Arc<AtomicU64>,
        total: Duration,
        enabled: bool,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = enabled.then(|| {
            std::thread::spawn(move || {
                let began = Instant::now();
                let mut last = 0;
                while !flag.load(Ordering::Relaxed) && began.elapsed() < total {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = counter.load(Ordering::Relaxed);
                    eprintln!(
                        "  [{label}] {:>3.0}/{:.0} s  {:>9} ops/s",
                        began.elapsed().as_secs_f64(),
                        total.as_secs_f64(),
                        now - last
                    );
                    last = now;
                }
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
