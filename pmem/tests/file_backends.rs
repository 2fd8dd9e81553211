//! The file strategies and the backend selection on a real filesystem: write, wrap, reopen,
//! verify; auto-detection picks the file backend where MAP_SYNC is refused.

mod common;

use common::{ballot, payload, Scratch};
use decree_pmem::{open, Backend, BackendKind, Config, Error, FileStrategy};

fn round_trip(strategy: FileStrategy, kind: BackendKind) {
    let scratch = Scratch::new("file");
    let config = Config { path: scratch.path("log"), size_bytes: 64 << 10, backend: Backend::File(strategy) };
    let mut next = 0u64;
    for session in 0..4u64 {
        let mut log = open(&config).unwrap();
        assert_eq!(log.backend(), kind);
        // Each session ends with discard_prefix(next - 20): exactly the last 20 slots are live.
        let expected_first = (session > 0).then(|| next - 20);
        assert_eq!(log.slots().next().map(|(s, _)| s), expected_first);
        assert_eq!(log.slots().count() as u64, if session > 0 { 20 } else { 0 });
        for slot in log.slots().map(|(s, _)| s).collect::<Vec<_>>() {
            assert_eq!(log.read(slot).unwrap().unwrap().payload, payload(slot, session, 200));
        }
        log.append_promise(ballot(session + 1)).unwrap();
        // ~300 records of 248 bytes: more than the 60 KiB ring, so it must wrap and reuse space.
        for _ in 0..300 {
            log.append_entry(next, ballot(session + 1), &payload(next, session + 1, 200)).unwrap();
            next += 1;
            if next % 25 == 0 {
                log.sync().unwrap();
                log.discard_prefix(next - 20).unwrap();
            }
        }
        log.sync().unwrap();
        assert_eq!(log.hard_state().promise, ballot(session + 1));
    }
}

#[test]
fn pwrite_strategy_round_trips_and_wraps() {
    round_trip(FileStrategy::Pwrite, BackendKind::FilePwrite);
}

#[test]
fn direct_strategy_round_trips_and_wraps() {
    if !common::direct_io_works() {
        eprintln!("skipped: the temp dir refuses O_DIRECT");
        return;
    }
    round_trip(FileStrategy::Direct, BackendKind::FileDirect);
}

#[test]
fn file_falls_back_to_pwrite_where_direct_writes_cannot_serve_and_file_direct_refuses() {
    let scratch = Scratch::new("fallback");
    // Not whole 4 KiB blocks: direct writes could not cover the last bytes.
    let config =
        Config { path: scratch.path("log"), size_bytes: (64 << 10) + 512, backend: Backend::parse("file").unwrap() };
    let log = open(&config).unwrap();
    assert_eq!(log.backend(), BackendKind::FilePwrite);
    drop(log);
    match open(&Config { backend: Backend::File(FileStrategy::Direct), ..config }) {
        Err(Error::Io { op, source, .. }) => {
            assert!(op.contains("direct") && source.to_string().contains("whole number"), "{op}: {source}")
        }
        other => panic!("file-direct must refuse, got {:?}", other.map(|l| l.backend())),
    }
}

#[test]
fn uring_strategy_round_trips_and_wraps() {
    round_trip(FileStrategy::Uring, BackendKind::FileUring);
}

#[test]
fn mmap_strategy_round_trips_and_wraps() {
    round_trip(FileStrategy::Mmap, BackendKind::FileMmap);
}

#[test]
fn auto_falls_back_to_file_where_map_sync_is_refused_and_dax_says_why() {
    let scratch = Scratch::new("auto");
    let fs_type = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(&scratch.0).output().unwrap();
    let fs_type = String::from_utf8_lossy(&fs_type.stdout).trim().to_string();
    let config = Config { path: scratch.path("log"), size_bytes: 1 << 20, backend: Backend::Auto };
    let log = open(&config).unwrap();
    assert_eq!(log.backend(), common::plain_file_kind(), "temp dir on {fs_type} is not DAX");
    drop(log);
    match open(&Config { backend: Backend::Dax, ..config }) {
        Err(Error::Unsupported { detail, .. }) => assert!(detail.contains("MAP_SYNC"), "{detail}"),
        other => panic!("dax on {fs_type} must be refused, got {:?}", other.map(|l| l.backend())),
    }
}

#[test]
fn devdax_refuses_a_regular_file() {
    let scratch = Scratch::new("devdax");
    std::fs::write(scratch.path("plain"), [0u8; 4096]).unwrap();
    let config = Config { path: scratch.path("plain"), size_bytes: 0, backend: Backend::DevDax };
    assert!(matches!(open(&config), Err(Error::Unsupported { .. })));
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_log() {
    let scratch = Scratch::new("lock");
    let config =
        Config { path: scratch.path("log"), size_bytes: 1 << 20, backend: Backend::File(FileStrategy::Pwrite) };
    let first = open(&config).unwrap();
    assert!(matches!(open(&config), Err(Error::Locked { .. })));
    drop(first);
    open(&config).unwrap();
}

#[test]
fn the_backend_choice_is_logged_with_its_reason() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
    let scratch = Scratch::new("logline");
    let config = Config { path: scratch.path("log"), size_bytes: 1 << 20, backend: Backend::Auto };
    tracing::subscriber::with_default(subscriber, || drop(open(&config).unwrap()));
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("pmem backend selected"))
        .unwrap_or_else(|| panic!("no selection line in {text}"));
    assert!(line.contains(common::plain_file_kind().name()) && line.contains("MAP_SYNC refused"), "{line}");
}
