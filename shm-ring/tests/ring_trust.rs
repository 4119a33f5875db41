//! Issue 10, defects 1 and 4: what a reader trusts in the file system, and what happens
//! when a ring file is truncated under a live reader.
//!
//! - A ring owned by another uid, or writable by group/others, is refused at open.
//! - A truncation after the open (to 0 or to half) is a typed `ReadError::Truncated`
//!   from every read, header and wait call; the process lives (the SIGBUS guard).
//! - A SIGBUS that is not a guarded ring's still kills the process (nothing hidden).
//! - In an owned ring directory another user can neither create nor flock a ring file,
//!   so the old squat is impossible and the camera's writer goes live.
//!
//! The tests with a second user need root (CI runs as root) and use uid 65534; without
//! root they say why they are skipped and return.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::owned_dir::{effective_uid, ensure_owned_dir, OwnedDirError};
use shm_ring::{
    ring_path, ReadError, RingOpenError, RingReader, RingState, RingTrust, RingWriter, WaitOutcome,
};

const CHILD_DIR_ENV: &str = "PROTO_SCHEMA_TRUST_CHILD_DIR";
const CHILD_SIGBUS_ENV: &str = "PROTO_SCHEMA_TRUST_CHILD_SIGBUS";
const NOBODY: u32 = 65534;
const SLOTS: u32 = 4;

fn geometry() -> FrameGeometry {
    FrameGeometry::packed(320, 240, PixelFormat::I420).unwrap()
}

fn is_root() -> bool {
    effective_uid() == 0
}

/// Child-process writer: publishes into `<dir>/live.ring` until killed (or it faults
/// on its own truncated mapping: the writer is the owner and is not guarded).
#[test]
#[ignore = "child-process entry point, run by the truncation tests"]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut writer = RingWriter::builder("live")
        .dir(PathBuf::from(dir))
        .slots(SLOTS)
        .geometry(geometry())
        .create()
        .unwrap();
    writer.set_state(RingState::Live);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut slot = writer.begin_write();
        let id = slot.frame_id();
        slot.data_mut().fill(id as u8 | 1);
        slot.publish(id as i64, id);
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct ChildWriter(Child);

impl Drop for ChildWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(dir: &Path) -> ChildWriter {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_writer_entry",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildWriter(child)
}

/// Opens the child's ring once it has published a full lap.
fn open_live(dir: &Path) -> RingReader {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = RingReader::open(dir, "live") {
            if r.write_seq() > u64::from(SLOTS) {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "child writer never went live");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Every reader call on a truncated ring is a typed error (or an empty/closed answer
/// for the infallible calls), never a crash and never a frame.
fn assert_truncated_everywhere(r: &RingReader) {
    assert!(r.truncated());
    assert!(matches!(r.try_latest(), Err(ReadError::Truncated { .. })));
    assert_eq!(r.latest(), None);
    assert!(matches!(r.try_header(), Err(ReadError::Truncated { .. })));
    let h = r.header();
    assert_eq!((h.state, h.write_seq), (RingState::Closed, 0));
    assert_eq!(r.state(), RingState::Closed);
    assert!(matches!(
        r.try_wait_for_publish(0, Duration::from_millis(50)),
        Err(ReadError::Truncated { .. })
    ));
    assert_eq!(
        r.wait_for_publish(0, Duration::from_millis(50)),
        WaitOutcome::Closed
    );
    for slot in 0..SLOTS {
        assert_eq!(r.slot_info(slot), None);
        assert!(matches!(
            r.read(slot, 2, |b| b.len()),
            Err(ReadError::Truncated { .. })
        ));
        let mut buf = vec![1, 2, 3];
        assert!(matches!(
            r.copy_into(slot, 2, &mut buf),
            Err(ReadError::Truncated { .. })
        ));
        assert!(buf.is_empty());
    }
    assert!(matches!(r.check_intact(), Err(ReadError::Truncated { .. })));
    let e = r.try_latest().unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn truncation_to_zero_under_a_live_reader_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let writer = spawn_writer(dir.path());
    let r = open_live(dir.path());
    let latest = r.latest().unwrap();
    truncate(r.path(), 0);
    // The first read touches a page past the end: SIGBUS, absorbed by the guard.
    match r.read(latest.slot, latest.seq, |b| {
        b.iter().map(|&x| u64::from(x)).sum::<u64>()
    }) {
        Err(ReadError::Truncated { ring }) => assert_eq!(&*ring, "live"),
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_truncated_everywhere(&r);
    // A fresh open sees the short file at once.
    assert!(matches!(
        RingReader::open(dir.path(), "live"),
        Err(RingOpenError::TooSmall { len: 0, .. })
    ));
    drop(writer);
}

#[test]
fn truncation_to_half_under_a_live_reader_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = spawn_writer(dir.path());
    let r = open_live(dir.path());
    let full = fs::metadata(r.path()).unwrap().len();
    truncate(r.path(), full / 2);
    // Header and slot table are in the first pages and still readable; fstat tells.
    assert!(matches!(r.check_intact(), Err(ReadError::Truncated { .. })));
    // Stop the writer (it may already have died faulting on its own mapping), then
    // read a published slot that lies past the new end.
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    let info = (SLOTS / 2..SLOTS)
        .find_map(|slot| r.slot_info(slot))
        .expect("a published slot in the upper half");
    assert!(matches!(
        r.read(info.slot, info.seq, |b| b.to_vec()),
        Err(ReadError::Truncated { .. })
    ));
    assert_truncated_everywhere(&r);
    assert!(matches!(
        RingReader::open(dir.path(), "live"),
        Err(RingOpenError::SizeMismatch { .. })
    ));
}

/// A reader blocked in the futex wait when the file is truncated wakes with the typed
/// error at its deadline (or earlier), never a signal.
#[test]
fn a_blocked_wait_survives_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = spawn_writer(dir.path());
    let r = Arc::new(open_live(dir.path()));
    // Kill the writer: the ring stays `live` with nothing new, so the wait blocks.
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    let seen = r.write_seq();
    let r2 = Arc::clone(&r);
    let waiter =
        std::thread::spawn(move || r2.try_wait_for_publish(seen, Duration::from_millis(500)));
    std::thread::sleep(Duration::from_millis(100));
    truncate(r.path(), 0);
    assert!(matches!(
        waiter.join().unwrap(),
        Err(ReadError::Truncated { .. })
    ));
    assert_truncated_everywhere(&r);
}

/// Several readers, one truncated: the others keep reading their own rings.
#[test]
fn truncating_one_ring_leaves_other_readers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = RingWriter::builder("a")
        .dir(dir.path())
        .slots(2)
        .geometry(geometry())
        .create()
        .unwrap();
    let mut b = RingWriter::builder("b")
        .dir(dir.path())
        .slots(2)
        .geometry(geometry())
        .create()
        .unwrap();
    for w in [&mut a, &mut b] {
        let mut s = w.begin_write();
        s.data_mut().fill(7);
        s.publish(0, 0);
    }
    let ra = RingReader::open(dir.path(), "a").unwrap();
    let rb = RingReader::open(dir.path(), "b").unwrap();
    // Truncate ring a. Its writer must not touch its (unguarded) mapping afterwards, so
    // it is leaked rather than dropped (its drop writes the closed state).
    truncate(ra.path(), 0);
    std::mem::forget(a);
    let la = ra.latest();
    assert_eq!(la, None);
    assert!(ra.truncated());
    let lb = rb.latest().unwrap();
    assert_eq!(
        rb.read(lb.slot, lb.seq, |x| x.iter().all(|&v| v == 7)),
        Ok(true)
    );
    assert!(!rb.truncated());
    assert!(rb.check_intact().is_ok());
    let _ = fs::remove_file(ring_path(dir.path(), "a"));
}

/// The guard hides nothing: a SIGBUS on memory that is not a guarded ring mapping
/// still kills the process with SIGBUS (checked in a child process).
#[test]
fn unrelated_sigbus_still_kills_the_process() {
    if let Some(dir) = std::env::var_os(CHILD_SIGBUS_ENV) {
        let dir = PathBuf::from(dir);
        let _w = RingWriter::builder("g")
            .dir(&dir)
            .slots(2)
            .geometry(geometry())
            .create()
            .unwrap();
        let _r = RingReader::open(&dir, "g").unwrap(); // installs the guard
        let path = dir.join("plain");
        fs::write(&path, vec![1u8; 8192]).unwrap();
        let file = fs::File::open(&path).unwrap();
        // SAFETY: a plain read-only file mapping; the test truncates the file and reads
        // past its end on purpose to provoke the SIGBUS that must kill this child.
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        truncate(&path, 0);
        let v = std::hint::black_box(map[4096]);
        println!("survived, read {v}");
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "unrelated_sigbus_still_kills_the_process",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD_SIGBUS_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

/// A valid ring copied under another name, owned by us, mode 0640.
fn planted_ring(dir: &Path, name: &str) -> PathBuf {
    let w = RingWriter::builder("src")
        .dir(dir)
        .slots(2)
        .geometry(geometry())
        .create()
        .unwrap();
    let dst = ring_path(dir, name);
    fs::copy(w.path(), &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o640)).unwrap();
    dst
}

#[test]
fn ring_writable_by_group_or_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = planted_ring(dir.path(), "loose");
    RingReader::open(dir.path(), "loose").unwrap();
    for mode in [0o666, 0o660, 0o642, 0o622] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        match RingReader::open(dir.path(), "loose") {
            Err(RingOpenError::WritableByOthers { path: p, mode: m }) => {
                assert_eq!((p, m), (path.clone(), mode));
            }
            other => panic!("{mode:#o}: {other:?}"),
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    RingReader::open(dir.path(), "loose").unwrap();
}

#[test]
fn ring_owned_by_another_user_is_refused_unless_allowed() {
    if !is_root() {
        eprintln!("skipped: chown to uid {NOBODY} needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Root places a ring owned by nobody in the ring dir (a misconfigured deployment).
    let path = planted_ring(dir.path(), "foreign");
    chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let e = RingReader::open(dir.path(), "foreign").unwrap_err();
    match &e {
        RingOpenError::UntrustedOwner {
            path: p,
            owner,
            trusted,
            ..
        } => {
            assert_eq!((p, *owner), (&path, NOBODY));
            assert!(trusted.contains(&0));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("uid 65534"), "{e}");
    // An outside writer's uid can be allowed explicitly.
    let trust = RingTrust::new().allow_uid(NOBODY);
    assert!(trust.trusts(NOBODY) && !RingTrust::new().trusts(NOBODY));
    RingReader::open_with(dir.path(), "foreign", &trust).unwrap();
    // Or its group: every member of it is trusted.
    let by_group = RingTrust::new().allow_gid(NOBODY);
    assert!(!by_group.trusts(NOBODY) && by_group.trusts_file(NOBODY, NOBODY));
    RingReader::open_with(dir.path(), "foreign", &by_group).unwrap();
    let e =
        RingReader::open_with(dir.path(), "foreign", &RingTrust::new().allow_gid(1)).unwrap_err();
    assert!(e.to_string().contains("groups [1]"), "{e}");
}

/// Issue 25, gap 6: the checks of the open cover the file as it was then; after a
/// `chmod` or `chown` of the live ring, `check_trust` (one `fstat` of the open
/// descriptor) refuses it with the same errors as an open would.
#[test]
fn check_trust_sees_a_chmod_or_chown_after_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = planted_ring(dir.path(), "later");
    let reader = RingReader::open(dir.path(), "later").unwrap();
    let trust = RingTrust::new();
    reader.check_trust(&trust).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        reader.check_trust(&trust),
        Err(RingOpenError::WritableByOthers { mode: 0o666, .. })
    ));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    reader.check_trust(&trust).unwrap();
    if !is_root() {
        eprintln!("chown case skipped: chown to uid {NOBODY} needs root (CI runs as root)");
        return;
    }
    chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(matches!(
        reader.check_trust(&trust),
        Err(RingOpenError::UntrustedOwner { owner: NOBODY, .. })
    ));
    reader
        .check_trust(&RingTrust::new().allow_uid(NOBODY))
        .unwrap();
}

/// A temp dir the attacker can traverse, holding a world-writable sticky `shm` dir like
/// `/dev/shm`.
fn shared_parent() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shm = t.path().join("shm");
    fs::create_dir(&shm).unwrap();
    fs::set_permissions(&shm, fs::Permissions::from_mode(0o1777)).unwrap();
    (t, shm)
}

fn as_nobody(script: &str, args: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg("attacker");
    cmd.args(args);
    cmd.uid(NOBODY).gid(NOBODY).env_clear();
    cmd.output().unwrap()
}

/// Defect 1's precondition: the attacker creates the ring directory first. The service
/// refuses it, naming the owner, instead of putting rings in it.
#[test]
fn attacker_created_ring_dir_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to act as uid {NOBODY} (CI runs as root)");
        return;
    }
    let (_t, shm) = shared_parent();
    let ring_dir = shm.join("framebus");
    let out = as_nobody("mkdir -m 0755 \"$1\"", &[&ring_dir]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::metadata(&ring_dir).unwrap().uid(), NOBODY);
    let e = ensure_owned_dir(&ring_dir).unwrap_err();
    assert!(
        matches!(e, OwnedDirError::WrongOwner { owner: NOBODY, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("owned by uid 65534"), "{e}");
}

/// Defects 1 and 4: in the owned ring directory the attacker can neither plant a ring
/// file nor hold a flocked one at the camera's ring path (EACCES), so the camera's
/// writer creates its ring and goes live.
#[test]
fn attacker_cannot_create_or_squat_a_ring_in_the_owned_dir() {
    if !is_root() {
        eprintln!("skipped: needs root to act as uid {NOBODY} (CI runs as root)");
        return;
    }
    let (_t, shm) = shared_parent();
    let ring_dir = shm.join("framebus");
    ensure_owned_dir(&ring_dir).unwrap();
    let target = ring_path(&ring_dir, "cam1");
    // Plant a file.
    let out = as_nobody(": > \"$1\"", &[&target]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // Hold a flocked file at the ring path (the defect-4 squat): flock(1) creates it.
    let out = as_nobody("exec /usr/bin/flock -n \"$1\" -c 'sleep 30'", &[&target]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert!(!target.exists());
    // In the old world-writable location the same squat works: it is the directory
    // that makes the difference.
    let squat = ring_path(&shm, "cam1");
    let holder = {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("exec /usr/bin/flock -n \"$1\" -c 'sleep 30'")
            .arg("attacker")
            .arg(&squat)
            .uid(NOBODY)
            .gid(NOBODY)
            .env_clear();
        ChildWriter(cmd.spawn().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !squat.exists() {
        assert!(Instant::now() < deadline, "squatter never created its file");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(RingWriter::builder("cam1")
        .dir(&shm)
        .geometry(geometry())
        .create()
        .is_err());
    // The camera's writer in the owned dir goes live.
    let mut w = RingWriter::builder("cam1")
        .dir(&ring_dir)
        .geometry(geometry())
        .create()
        .unwrap();
    w.set_state(RingState::Live);
    w.begin_write().publish(0, 0);
    let r = RingReader::open(&ring_dir, "cam1").unwrap();
    assert_eq!(r.state(), RingState::Live);
    assert!(r.latest().is_some());
    drop(holder);
}
