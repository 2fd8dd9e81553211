//! The power-loss checks run inside the NVDIMM guest (ci/guest/host-pmem-dax.sh).
//!
//!     pmem-guest write  --path P --backend dax|devdax|file --marker M --marker-after N
//!         appends entries (slot i at round 1), syncing each (dax: MAP_SYNC stores + cache-line
//!         write-back + sfence, no syscall; file: pwrite + fdatasync). Prints "acked-upto K" every
//!         50 durable appends and M once N are durable, then keeps appending until the host
//!         SIGKILLs the VM.
//!     pmem-guest verify --path P --backend dax|devdax --acked K
//!         recovers and checks slots 0..K are present and intact (and any later ones intact).
//!     pmem-guest devdax-map --path /dev/daxX.Y
//!         maps the device whole and checks the mapping is 2 MiB aligned in address and length.
//!     pmem-guest rdma-register --path P --backend dax|devdax --expect ok|refused
//!         (feature rdma-check) maps the log as the backend does and registers the mapping as an
//!         RDMA memory region with the first verbs device: device-DAX must succeed, fsdax is refused.

use decree_engine::types::Ballot;
use decree_pmem::dax::{DaxMedium, DEVDAX_ALIGN_BYTES};
use decree_pmem::testdata::value;
use decree_pmem::{open, Backend, BackendKind, Config, Medium};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const ROUND: u64 = 1;
const LOG_SIZE_BYTES: u64 = 64 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let path = PathBuf::from(flag("--path").unwrap_or_default());
    let backend = flag("--backend").unwrap_or_else(|| "dax".into());
    let result = match args.first().map(String::as_str) {
        Some("write") => write(path, &backend, &flag("--marker").unwrap_or_default(), flag("--marker-after").and_then(|n| n.parse().ok()).unwrap_or(500)),
        Some("verify") => verify(path, &backend, flag("--acked").and_then(|n| n.parse().ok()).unwrap_or(0)),
        Some("devdax-map") => devdax_map(path),
        Some("rdma-register") => rdma_register(path, &backend, flag("--expect").as_deref() == Some("ok")),
        _ => Err("usage: pmem-guest write|verify|devdax-map --path P ...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("pmem-guest: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config(path: PathBuf, backend: &str) -> Result<Config, String> {
    let backend = Backend::parse(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
    Ok(Config { path, size_bytes: LOG_SIZE_BYTES, backend })
}

/// The backend must be the one asked for (auto-detection or a fallback must not hide a miss).
fn expect_backend(kind: BackendKind, backend: &str) -> Result<(), String> {
    let expected = match backend {
        "dax" => BackendKind::FsDax,
        "devdax" => BackendKind::DevDax,
        // The guest's ext4 on the NVDIMM's block device takes O_DIRECT: `file` must pick it.
        "file" | "file-direct" => BackendKind::FileDirect,
        _ => BackendKind::FilePwrite,
    };
    if kind == expected {
        Ok(())
    } else {
        Err(format!("expected backend {}, got {}", expected.name(), kind.name()))
    }
}

fn write(path: PathBuf, backend: &str, marker: &str, marker_after: u64) -> Result<(), String> {
    let mut log = open(&config(path, backend)?).map_err(|e| e.to_string())?;
    expect_backend(log.backend(), backend)?;
    println!("pmem-guest: writing on backend {}", log.backend().name());
    let mut out = std::io::stdout();
    for slot in 0.. {
        log.append_entry(slot, Ballot { round: ROUND, leader: 0 }, &value(slot, ROUND)).map_err(|e| e.to_string())?;
        log.sync().map_err(|e| e.to_string())?;
        if (slot + 1) % 50 == 0 {
            writeln!(out, "acked-upto {}", slot + 1).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
        }
        if slot + 1 == marker_after {
            writeln!(out, "{marker}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
        }
        if log.free_bytes() < (1 << 20) {
            return Err("log filled before the VM was killed".into());
        }
    }
    Ok(())
}

fn verify(path: PathBuf, backend: &str, acked: u64) -> Result<(), String> {
    let log = open(&config(path, backend)?).map_err(|e| e.to_string())?;
    expect_backend(log.backend(), backend)?;
    let slots: Vec<u64> = log.slots().map(|(s, _)| s).collect();
    if slots.len() as u64 != slots.last().map_or(0, |s| s + 1) {
        return Err("recovered slots are not a contiguous prefix".into());
    }
    if (slots.len() as u64) < acked {
        return Err(format!("only {} slots recovered, {acked} were acknowledged", slots.len()));
    }
    for slot in slots.iter().copied() {
        let got = log.read(slot).map_err(|e| e.to_string())?.ok_or("listed slot unreadable")?;
        if got.payload != value(slot, ROUND) {
            return Err(format!("slot {slot} payload differs"));
        }
    }
    println!("pmem-guest: verified {} slots ({acked} acknowledged before the kill) on {}", slots.len(), log.backend().name());
    Ok(())
}

fn devdax_map(path: PathBuf) -> Result<(), String> {
    let medium = DaxMedium::devdax(&path).map_err(|e| e.to_string())?;
    let (addr, len) = medium.region();
    if addr as u64 % DEVDAX_ALIGN_BYTES != 0 || len as u64 % DEVDAX_ALIGN_BYTES != 0 || len == 0 {
        return Err(format!("mapping {addr:p}+{len} is not 2 MiB aligned"));
    }
    println!("pmem-guest: device-DAX {} mapped at {addr:p}, {len} bytes (2 MiB aligned), flush {}, {}", path.display(), medium.flush_instr().name(), medium.resource());
    Ok(())
}

#[cfg(feature = "rdma-check")]
fn rdma_register(path: PathBuf, backend: &str, expect_ok: bool) -> Result<(), String> {
    let medium = match backend {
        "devdax" => DaxMedium::devdax(&path),
        _ => decree_pmem::file::open_or_create(&path, LOG_SIZE_BYTES).and_then(DaxMedium::fsdax),
    }
    .map_err(|e| e.to_string())?;
    let (addr, len) = medium.region();
    match (decree_pmem::rdma_check::register_region(addr, len), expect_ok) {
        (Ok(device), true) => println!("pmem-guest: {backend} region of {len} bytes registered as an RDMA MR on {device}"),
        (Err(why), false) => println!("pmem-guest: {backend} region refused for RDMA, as expected: {why}"),
        (Ok(device), false) => return Err(format!("{backend} region registered on {device}, expected a refusal")),
        (Err(why), true) => return Err(format!("{backend} region not registrable: {why}")),
    }
    Ok(())
}

#[cfg(not(feature = "rdma-check"))]
fn rdma_register(_: PathBuf, _: &str, _: bool) -> Result<(), String> {
    Err("built without the rdma-check feature".into())
}
