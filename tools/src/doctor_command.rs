//! `decree doctor`: a preflight check of this host for decree's fast paths. Prints what is present
//! and, for every problem, the command that fixes it. Reads only /sys, /proc, /dev and CPUID.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `decree doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Bytes of memory the replica will register with the NIC (log region + buffers).
    #[arg(long, default_value_t = 1 << 30)]
    register_bytes: u64,
    /// Exit 1 if any problem is found (for provisioning scripts).
    #[arg(long)]
    strict: bool,
}

#[derive(Default)]
struct Report {
    problems: usize,
}

impl Report {
    fn section(&self, title: &str) {
        println!("\n== {title}");
    }
    fn ok(&self, line: impl AsRef<str>) {
        println!("  ok    {}", line.as_ref());
    }
    fn info(&self, line: impl AsRef<str>) {
        println!("  --    {}", line.as_ref());
    }
    fn problem(&mut self, line: impl AsRef<str>, fix: impl AsRef<str>) {
        self.problems += 1;
        println!("  FIX   {}\n        fix: {}", line.as_ref(), fix.as_ref());
    }
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn entries(path: impl AsRef<Path>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn rdma(report: &mut Report) -> bool {
    report.section("RDMA devices (/sys/class/infiniband)");
    let devices = entries("/sys/class/infiniband");
    if devices.is_empty() {
        report.info("no RDMA devices present: decree runs its tcp transport");
        report.info("to test RDMA without hardware: `sudo modprobe rdma_rxe && sudo rdma link add rxe0 type rxe netdev <iface>` (see docs/deploy.md)");
        return false;
    }
    for device in devices {
        let base = format!("/sys/class/infiniband/{device}");
        println!("  device {device} (fw {})", read(format!("{base}/fw_ver")).unwrap_or_else(|| "?".into()));
        for port in entries(format!("{base}/ports")) {
            let p = format!("{base}/ports/{port}");
            let state = read(format!("{p}/state")).unwrap_or_default();
            let layer = read(format!("{p}/link_layer")).unwrap_or_default();
            let mtu = read(format!("{p}/active_mtu")).unwrap_or_default();
            let netdev = entries(format!("{base}/device/net")).join(",");
            if state.contains("ACTIVE") {
                report.ok(format!("port {port}: {state}, link layer {layer}, active MTU {mtu} {netdev}"));
            } else {
                report.problem(format!("port {port}: {state}"), format!("bring the link up: `sudo ip link set {} up` and check cabling/switch", if netdev.is_empty() { "<netdev>" } else { &netdev }));
            }
            if layer == "Ethernet" && !mtu.contains("4096") {
                report.problem(format!("port {port}: RoCE active MTU {mtu} (4096 avoids splitting log writes)"), "raise the netdev MTU: `sudo ip link set <netdev> mtu 9000` (and on the switch)");
            }
            for index in entries(format!("{p}/gids")) {
                let Some(gid) = read(format!("{p}/gids/{index}")) else { continue };
                if gid.chars().all(|c| c == '0' || c == ':') {
                    continue;
                }
                let kind = read(format!("{p}/gid_attrs/types/{index}")).unwrap_or_else(|| "?".into());
                let ndev = read(format!("{p}/gid_attrs/ndevs/{index}")).unwrap_or_default();
                report.info(format!("port {port} gid[{index}] {gid} {kind} {ndev}"));
            }
        }
    }
    report.info("pick the GID index whose type is `RoCE v2` and whose address is the replica's IPv4-mapped address");
    true
}

fn memlock(report: &mut Report, register_bytes: u64, rdma_present: bool) {
    report.section("memlock limit (RDMA registration pins memory)");
    let limit = read("/proc/self/limits").and_then(|limits| {
        limits.lines().find(|l| l.starts_with("Max locked memory")).map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
    });
    match limit.as_deref() {
        Some("unlimited") => report.ok("max locked memory: unlimited"),
        Some(bytes) => match bytes.parse::<u64>() {
            Ok(bytes) if bytes >= register_bytes => report.ok(format!("max locked memory {bytes} bytes >= {register_bytes} to register")),
            Ok(bytes) if !rdma_present => report.info(format!(
                "max locked memory {bytes} bytes < {register_bytes}: fine without RDMA; before enabling it: `ulimit -l unlimited` or LimitMEMLOCK=infinity"
            )),
            Ok(bytes) => report.problem(
                format!("max locked memory {bytes} bytes < {register_bytes} bytes decree registers"),
                "add `decree - memlock unlimited` to /etc/security/limits.d/decree.conf, or `LimitMEMLOCK=infinity` in the systemd unit, or `ulimit -l unlimited`",
            ),
            Err(_) => report.info(format!("max locked memory: {bytes}")),
        },
        None => report.info("could not read /proc/self/limits"),
    }
}

fn pmem(report: &mut Report) {
    report.section("persistent memory (/sys/bus/nd, /dev/dax*, /dev/pmem*)");
    let regions: Vec<String> = entries("/sys/bus/nd/devices").into_iter().filter(|d| d.starts_with("region")).collect();
    let namespaces: Vec<String> = entries("/sys/bus/nd/devices").into_iter().filter(|d| d.starts_with("namespace")).collect();
    let dax: Vec<String> = entries("/dev").into_iter().filter(|d| d.starts_with("dax")).collect();
    let pmem: Vec<String> = entries("/dev").into_iter().filter(|d| d.starts_with("pmem")).collect();
    // Said whatever the hardware: `memory` is the one backend that needs none, and it is not durable.
    report.info(format!("log.backend = \"memory\": {}", decree_pmem::config::MEMORY_WARNING));
    if regions.is_empty() && dax.is_empty() && pmem.is_empty() {
        report.info("no NVDIMM regions or DAX devices present: decree uses its file log (pwrite + fdatasync group commit)");
        return;
    }
    for ns in &namespaces {
        let base = format!("/sys/bus/nd/devices/{ns}");
        let mode = read(format!("{base}/mode")).unwrap_or_else(|| "?".into());
        let size = read(format!("{base}/size")).unwrap_or_else(|| "?".into());
        match mode.as_str() {
            "devdax" | "fsdax" => report.ok(format!("{ns}: mode {mode}, {size} bytes")),
            _ => report.problem(format!("{ns}: mode {mode} (decree wants devdax, or fsdax + a DAX filesystem)"), format!("`sudo ndctl create-namespace --force --reconfig={ns} --mode=devdax`")),
        }
    }
    for d in dax {
        report.ok(format!("/dev/{d}: device-DAX (log backend `devdax`, path /dev/{d})"));
    }
    for p in pmem {
        report.info(format!("/dev/{p}: fsdax block device: `sudo mkfs.ext4 /dev/{p} && sudo mount -o dax /dev/{p} /mnt/pmem` for backend `dax`"));
    }
}

fn cpu(report: &mut Report) {
    report.section("CPU");
    #[cfg(target_arch = "x86_64")]
    {
        // std's feature detection does not name these two; the kernel's CPUID flags do.
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        let (clwb, clflushopt) = (flags.contains(&"clwb"), flags.contains(&"clflushopt"));
        let line = format!("cache-line write-back: clwb {}, clflushopt {}, clflush yes", yes(clwb), yes(clflushopt));
        if clwb || clflushopt {
            report.ok(format!("{line}; decree-pmem will use {}", decree_pmem::flush::detect().name()));
        } else {
            report.info(format!("{line}: DAX appends fall back to clflush (slower, still correct)"));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    report.info("not x86_64: cache-line flush detection skipped");
    let cpus = decree_engine::runtime::placement::available_cpus();
    let isolated = read("/sys/devices/system/cpu/isolated").unwrap_or_default();
    report.info(format!("{cpus} CPUs available; default placement {:?}", decree_engine::runtime::Placement::for_cpus(cpus)));
    if isolated.is_empty() {
        if cpus >= 4 {
            report.problem(
                "no isolated CPUs: the protocol core shares its CPU with everything else",
                "boot with `isolcpus=nohz,domain,<cpus> nohz_full=<cpus> rcu_nocbs=<cpus>` and set [placement] core_cpu/persistence_cpu to them",
            );
        } else {
            report.info("no isolated CPUs (fine on a small machine: roles share cores)");
        }
    } else {
        report.ok(format!("isolated CPUs: {isolated} (put [placement] core_cpu and persistence_cpu on them; steer NIC IRQs elsewhere, see docs/deploy.md)"));
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn hugepages(report: &mut Report) {
    report.section("huge pages");
    let total = decree_pmem::meminfo::field("HugePages_Total:").unwrap_or(0);
    let size_kib = decree_pmem::meminfo::field("Hugepagesize:").unwrap_or(0);
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_else(|| "?".into());
    report.info(format!("transparent huge pages: {thp}"));
    if total == 0 {
        report.problem(
            format!("no huge pages reserved (page size {size_kib} KiB): RDMA-registered buffers use 4 KiB pages (more NIC translation misses)"),
            "`echo 1024 | sudo tee /proc/sys/vm/nr_hugepages` (persist in /etc/sysctl.d/decree.conf: vm.nr_hugepages=1024)",
        );
    } else {
        report.ok(format!("{total} huge pages of {size_kib} KiB reserved"));
    }
}

/// Prints the report; exits 1 with --strict if any problem was found.
pub fn run(args: DoctorArgs) -> ExitCode {
    println!("decree doctor: preflight for {}", read("/proc/sys/kernel/hostname").unwrap_or_else(|| "this host".into()));
    let mut report = Report::default();
    let rdma_present = rdma(&mut report);
    memlock(&mut report, args.register_bytes, rdma_present);
    pmem(&mut report);
    cpu(&mut report);
    hugepages(&mut report);
    println!("\n{} problem(s) found", report.problems);
    if args.strict && report.problems > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
