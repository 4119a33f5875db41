//! `--calibration-cache`: the first start calibrates and keeps its choice; a restart under
//! the same conditions loads with that choice at once; a replaced model calibrates again.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Env};
use proto_schema::calibration::Calibration;
use proto_schema::message::{Request, Response};

/// Starts a server with `threads/instances auto` and the cache, returns its calibration
/// report, and stops it.
fn calibration_of(env: &Env, model: &Path, dir: &Path, cache: &Path) -> Calibration {
    let rings = dir.join("rings");
    shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
    // An owned socket directory, as the server requires.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let socket = dir.join("m.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_model-server"))
        .arg("--model")
        .arg(model)
        .args(["--model-id", "m", "--socket"])
        .arg(&socket)
        .arg("--ring-dir")
        .arg(&rings)
        .arg("--ort-dylib")
        .arg(&env.ort_dylib)
        .args(["--calibration-ms", "1500", "--calibration-cache"])
        .arg(cache)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("model-server starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "model-server exited during start-up"
        );
        if let Ok(mut c) = Client::connect(&socket) {
            if let Response::Status(s) = c.call(&Request::get_status(1)) {
                break *s.calibration.expect("a calibration report");
            }
        }
        assert!(Instant::now() < deadline, "model-server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&socket);
    report
}

#[test]
fn a_restart_reuses_the_calibration_and_a_new_model_file_does_not() {
    let Some(env) = Env::get() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("yolox.onnx");
    std::fs::copy(env.model("yolox_nano"), &model).unwrap();
    let cache = dir.path().join("m.calibration.json");

    let first = calibration_of(&env, &model, dir.path(), &cache);
    assert_eq!(first.how, "calibrated", "{first:?}");
    assert!(cache.is_file());

    let second = calibration_of(&env, &model, dir.path(), &cache);
    assert_eq!(second.how, "cached", "{second:?}");
    assert_eq!(
        (
            second.threads,
            second.instances,
            second.max_batch,
            &second.runs
        ),
        (first.threads, first.instances, first.max_batch, &first.runs)
    );
    println!(
        "MEASURED calibration cache: first start {} ms, restart {} ms",
        first.elapsed_ms, second.elapsed_ms
    );

    // The model file replaced (a new inode and time): calibrate again.
    let replaced = dir.path().join("yolox.onnx.new");
    std::fs::copy(env.model("yolox_nano"), &replaced).unwrap();
    std::fs::rename(&replaced, &model).unwrap();
    let third = calibration_of(&env, &model, dir.path(), &cache);
    assert_eq!(third.how, "calibrated", "{third:?}");

    // A corrupt cache is ignored, not fatal.
    std::fs::write(&cache, b"{garbage").unwrap();
    let fourth = calibration_of(&env, &model, dir.path(), &cache);
    assert_eq!(fourth.how, "calibrated", "{fourth:?}");
}
