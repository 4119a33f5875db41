//! Issue 15: the Python client package (`clients/python`) against the real binaries. Runs
//! its unittest suite (`clients/python/tests/`) with this target dir's `model-server` and
//! `frame-kernel`, so `scripts/test.sh` runs it in CI. Under CI=true a missing Python,
//! numpy, OpenCV or asset is a failure (the suite itself fails on a missing prerequisite).

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;

#[test]
fn python_client_suite_passes_against_the_real_binaries() {
    let Some(env) = Env::get() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_model-server"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    assert!(
        bin_dir.join("frame-kernel").exists(),
        "{}/frame-kernel missing: run `cargo build --workspace --bins` first",
        bin_dir.display()
    );
    let out = Command::new(&env.python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("clients/python/tests"))
        .env("FRAMEBUS_BIN_DIR", &bin_dir)
        .env("FRAMEBUS_ASSETS", &env.assets)
        .env("ORT_DYLIB_PATH", &env.ort_dylib)
        .env("FRAMEBUS_LOG", "warn")
        .output()
        .expect("python starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "Python client suite failed:\n{text}");
    assert!(text.contains("\nOK"), "{text}");
    // Every test ran: none skipped (the real-binary tests must not skip silently).
    assert!(!text.contains("skipped"), "{text}");
    let ran: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 12, "only {ran} tests ran:\n{text}");
}
