//! Issue 10, defects 1 and 4, at the frame kernel: rings live in a directory the
//! service owns. A ring directory pre-created by another user is refused at start with
//! an error naming its owner; a missing one is created 0750; and a camera whose ring
//! name another user tried to squat goes live, because the squatter cannot create (or
//! flock) anything in the owned directory.
//!
//! The second user is uid 65534 and needs root (CI runs as root); without root the
//! attacker parts print why they are skipped.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use shm_ring::ring_path;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    shm_ring::owned_dir::effective_uid() == 0
}

/// A temp dir the attacker can traverse, with a world-writable sticky `shm` inside, like
/// `/dev/shm`.
fn shared_parent() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shm = t.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (t, shm)
}

fn as_nobody(script: &str, arg: &Path) -> std::process::Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("attacker")
        .arg(arg)
        .uid(NOBODY)
        .gid(NOBODY)
        .env_clear()
        .output()
        .unwrap()
}

fn run_kernel(args: &[&str]) -> (i32, String) {
    let out = Command::new(KERNEL).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attacker_created_ring_dir_stops_the_kernel_with_a_clear_error() {
    if !is_root() {
        eprintln!("skipped: needs root to act as uid {NOBODY} (CI runs as root)");
        return;
    }
    let (_t, shm) = shared_parent();
    let ring_dir = shm.join("framebus");
    let out = as_nobody("mkdir -m 0777 \"$1\"", &ring_dir);
    assert!(out.status.success(), "{out:?}");
    let (code, err) = run_kernel(&[
        "--camera-id",
        "cam1",
        "--source",
        "rtsp://127.0.0.1:1/x",
        "--ring-dir",
        ring_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains(ring_dir.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_dir(&ring_dir).unwrap().count(), 0);
}

#[test]
fn world_writable_ring_dir_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, err) = run_kernel(&[
        "--camera-id",
        "cam1",
        "--source",
        "rtsp://127.0.0.1:1/x",
        "--ring-dir",
        open.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too open"), "{err}");
}

/// The default-style layout: `<shm>/framebus` missing; the kernel creates it (owned,
/// 0750) and the camera goes live in it, even with a squatter holding a flocked
/// `<shm>/cam1.ring` in the world-writable parent (the old location).
#[test]
fn kernel_creates_its_owned_ring_dir_and_goes_live_despite_a_squatter() {
    let Some(clip) = asset(CLIP) else { return };
    let (_t, shm) = shared_parent();
    let ring_dir = shm.join("framebus");
    let _squatter = if is_root() {
        // The defect-4 squat, in the owned dir: refused (EACCES).
        std::fs::create_dir(&ring_dir).unwrap();
        std::fs::set_permissions(&ring_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let out = as_nobody(
            "exec /usr/bin/flock -n \"$1\" -c 'sleep 30'",
            &ring_path(&ring_dir, "cam1"),
        );
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{out:?}"
        );
        std::fs::remove_dir(&ring_dir).unwrap();
        // ... and in the old world-writable location it still works, harmlessly.
        let squat = ring_path(&shm, "cam1");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec /usr/bin/flock -n \"$1\" -c 'sleep 30'")
            .arg("attacker")
            .arg(&squat)
            .uid(NOBODY)
            .gid(NOBODY)
            .env_clear()
            .spawn()
            .unwrap();
        Some(framebus_testkit::process::ChildGuard::new(child))
    } else {
        eprintln!("attacker part skipped: needs root to act as uid {NOBODY}");
        None
    };
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "cam1",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            ring_dir.to_str().unwrap(),
            "--fast",
            "--loop",
        ],
        _t.path(),
        "owned",
    );
    let reader = open_ring(&ring_dir, "cam1", Duration::from_secs(15));
    let frames = collect_frames(&reader, 3, Duration::from_secs(20));
    assert_eq!(frames.len(), 3, "{}", k.log());
    let meta = std::fs::symlink_metadata(&ring_dir).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(meta.uid(), shm_ring::owned_dir::effective_uid());
    let ring_meta = std::fs::metadata(ring_path(&ring_dir, "cam1")).unwrap();
    assert_eq!(ring_meta.mode() & 0o7777, 0o640);
    k.terminate();
}
