//! A medium wrapper that injects disk faults (EIO, ENOSPC, ...) on chosen writes or persists, to
//! prove the log stops acknowledging after one.

use crate::medium::{BackendKind, Medium};
use std::io;

/// Which call fails, and how.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultPlan {
    /// Fail the write_at call with this index (0-based), and every later one.
    pub fail_write_from: Option<u64>,
    /// Fail the persist call with this index (0-based), and every later one.
    pub fail_persist_from: Option<u64>,
    /// The OS error number to fail with (libc::EIO, libc::ENOSPC, ...).
    pub errno: i32,
}

/// Wraps a medium and fails calls according to a `FaultPlan`. A failed persist discards the
/// writes it should have made durable (as a kernel may drop dirty pages after EIO).
pub struct FaultyMedium<M: Medium> {
    inner: M,
    plan: FaultPlan,
    writes: u64,
    persists: u64,
}

impl<M: Medium> FaultyMedium<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, plan: FaultPlan) -> FaultyMedium<M> {
        FaultyMedium { inner, plan, writes: 0, persists: 0 }
    }

    /// Changes the plan; call indices in it count from now.
    pub fn set_plan(&mut self, plan: FaultPlan) {
        self.plan = plan;
        self.writes = 0;
        self.persists = 0;
    }

    /// The wrapped medium.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Unwraps the medium.
    pub fn into_inner(self) -> M {
        self.inner
    }

    /// Counts a write call; fails it if the plan says so.
    fn count_write(&mut self) -> io::Result<()> {
        let index = self.writes;
        self.writes += 1;
        if self.plan.fail_write_from.is_some_and(|from| index >= from) {
            return Err(self.injected());
        }
        Ok(())
    }

    fn injected(&self) -> io::Error {
        io::Error::from_raw_os_error(self.plan.errno)
    }
}

impl<M: Medium> Medium for FaultyMedium<M> {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.count_write()?;
        self.inner.write_at(offset, bytes)
    }

    fn write_at_end(&mut self, offset: u64, bytes: &[u8], free_after: u64) -> io::Result<()> {
        self.count_write()?;
        self.inner.write_at_end(offset, bytes, free_after)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn persist(&mut self) -> io::Result<()> {
        let index = self.persists;
        self.persists += 1;
        if self.plan.fail_persist_from.is_some_and(|from| index >= from) {
            return Err(self.injected());
        }
        self.inner.persist()
    }

    fn resource(&self) -> &str {
        self.inner.resource()
    }

    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
}
