//! Cache-line write-back for persistent memory: clwb, else clflushopt, else clflush, chosen by
//! CPUID once; then sfence orders the write-backs before anything that follows. Stable Rust has
//! no clwb intrinsic, so these are inline asm.

use std::sync::OnceLock;

/// Cache line size the flush loop steps by.
pub const CACHE_LINE_BYTES: usize = 64;

/// The write-back instruction in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushInstr {
    /// Writes the line back and may keep it cached (best).
    Clwb,
    /// Writes back and evicts, weakly ordered.
    ClflushOpt,
    /// Writes back and evicts, serialized (slowest; every x86_64 has it).
    Clflush,
}

impl FlushInstr {
    /// Instruction mnemonic.
    pub fn name(self) -> &'static str {
        match self {
            FlushInstr::Clwb => "clwb",
            FlushInstr::ClflushOpt => "clflushopt",
            FlushInstr::Clflush => "clflush",
        }
    }
}

/// The best flush instruction this CPU has (cached after the first call).
#[cfg(target_arch = "x86_64")]
pub fn detect() -> FlushInstr {
    static CHOSEN: OnceLock<FlushInstr> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        // SAFETY: cpuid is available on every x86_64 CPU; leaf 7 subleaf 0 is valid when the max
        // basic leaf (leaf 0 eax) is at least 7, checked first.
        #[allow(unused_unsafe)]
        let (max_leaf, leaf7_ebx) = unsafe {
            let max_leaf = std::arch::x86_64::__cpuid(0).eax;
            let ebx = if max_leaf >= 7 { std::arch::x86_64::__cpuid_count(7, 0).ebx } else { 0 };
            (max_leaf, ebx)
        };
        let chosen = if leaf7_ebx & (1 << 24) != 0 {
            FlushInstr::Clwb
        } else if leaf7_ebx & (1 << 23) != 0 {
            FlushInstr::ClflushOpt
        } else {
            FlushInstr::Clflush
        };
        tracing::info!(flush = chosen.name(), cpuid_max_leaf = max_leaf, "pmem cache-line flush chosen by CPUID");
        chosen
    })
}

/// Writes back every cache line overlapping `ptr..ptr+len` (not yet ordered: call `fence`).
///
/// # Safety
/// `ptr..ptr+len` must lie inside one live mapping for the whole call.
#[cfg(target_arch = "x86_64")]
pub unsafe fn flush_range(instr: FlushInstr, ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let first = (ptr as usize) & !(CACHE_LINE_BYTES - 1);
    let end = ptr as usize + len;
    let mut line = first;
    while line < end {
        // SAFETY: `line` is the start of a cache line overlapping the caller's live range (the
        // caller guarantees the range is mapped); these instructions only write data back.
        unsafe {
            match instr {
                FlushInstr::Clwb => std::arch::asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)),
                FlushInstr::ClflushOpt => {
                    std::arch::asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags))
                }
                FlushInstr::Clflush => std::arch::asm!("clflush [{0}]", in(reg) line, options(nostack, preserves_flags)),
            }
        }
        line += CACHE_LINE_BYTES;
    }
}

/// Orders every earlier flush before any later store: after it, flushed lines are persistent
/// (on ADR platforms, where the memory controller's queue is in the persistence domain).
#[cfg(target_arch = "x86_64")]
pub fn fence() {
    // SAFETY: sfence has no operands and no memory-safety preconditions.
    unsafe { std::arch::asm!("sfence", options(nostack, preserves_flags)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_matches_cpuinfo() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("").split_whitespace().collect();
        let expected = if flags.contains(&"clwb") {
            FlushInstr::Clwb
        } else if flags.contains(&"clflushopt") {
            FlushInstr::ClflushOpt
        } else {
            FlushInstr::Clflush
        };
        assert_eq!(detect(), expected);
    }

    #[test]
    fn flushing_keeps_the_data() {
        let mut buf = vec![0u8; 1000];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        // SAFETY: the range is the live Vec's buffer.
        unsafe { flush_range(detect(), buf.as_ptr().wrapping_add(3), 900) };
        fence();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
    }
}
