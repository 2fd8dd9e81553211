//! A short run of the real-process crash loop (the full runs are ci/test-crash.sh and the soak).

mod common;

#[test]
fn kill_dash_nine_never_loses_an_acknowledged_record() {
    let scratch = common::Scratch::new("crash");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pmem-crash"))
        .args(["loop", "--iterations", "12", "--max-kill-ms", "30", "--dir"])
        .arg(&scratch.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("crash loop: 12 passed, 0 failed"), "{stdout}");
}
