//! Writer and reader in different processes: the test binary re-executes itself as the
//! writer. Checks cross-process futex wake-ups, frame integrity, and recovery after the
//! writer is killed (SIGKILL: no clean close, the ring file stays behind).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::{RingOpenError, RingReader, RingState, RingWriter, WaitOutcome};

const CHILD_DIR_ENV: &str = "PROTO_SCHEMA_RING_CHILD_DIR";
const RING: &str = "xproc";

fn geometry() -> FrameGeometry {
    FrameGeometry::packed(160, 120, PixelFormat::I420).unwrap()
}

fn pattern(frame_id: u64, i: usize) -> u8 {
    (frame_id as usize).wrapping_mul(31).wrapping_add(i * 7) as u8
}

/// Entry point of the child process; a no-op unless started by the test below.
#[test]
#[ignore = "child-process entry point, run by cross_process_publish_wake_and_crash_recovery"]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut writer = RingWriter::builder(RING)
        .dir(PathBuf::from(dir))
        .slots(4)
        .geometry(geometry())
        .create()
        .unwrap();
    writer.set_state(RingState::Live);
    // Publish until killed (bounded so an orphan cannot run forever).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut slot = writer.begin_write();
        let id = slot.frame_id();
        for (i, b) in slot.data_mut().iter_mut().enumerate() {
            *b = pattern(id, i);
        }
        slot.publish(id as i64, id);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn cross_process_publish_wake_and_crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_writer_entry",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Setup only: wait for the child to create the ring.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reader = loop {
        match RingReader::open(dir.path(), RING) {
            Ok(r) => break r,
            Err(RingOpenError::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("child never created the ring: {e}"),
        }
    };
    assert_eq!(reader.writer_pid(), child.id());
    assert!(reader.writer_alive());

    // Follow 100 publishes through futex wake-ups from the other process.
    let (mut last, mut checked, mut stale) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    while checked < 100 {
        match reader.wait_for_publish(last, Duration::from_secs(10)) {
            WaitOutcome::Published(n) => last = n,
            other => panic!("expected a publish from the child, got {other:?}"),
        }
        let Some(info) = reader.latest() else {
            continue;
        };
        match reader.copy_into(info.slot, info.seq, &mut buf) {
            Ok(got) => {
                assert_eq!(got.frame_id, info.frame_id);
                assert!(buf
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == pattern(info.frame_id, i)));
                checked += 1;
            }
            Err(_) => stale += 1,
        }
    }
    println!("cross-process: checked {checked} frames, {stale} stale");

    // Kill the writer: no Drop runs, the ring stays Live with nobody holding the lock.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!reader.writer_alive());
    assert_eq!(reader.state(), RingState::Live);
    let seen = reader.write_seq();
    assert_eq!(
        reader.wait_for_publish(seen, Duration::from_millis(50)),
        WaitOutcome::TimedOut
    );

    // A new writer takes over the dead writer's ring.
    let mut writer = RingWriter::builder(RING)
        .dir(dir.path())
        .geometry(geometry())
        .create()
        .unwrap();
    assert_ne!(writer.generation(), reader.generation());
    assert!(!reader.is_current());
    let fresh = RingReader::open(dir.path(), RING).unwrap();
    assert_eq!(fresh.writer_pid(), std::process::id());
    let info = writer.begin_write().publish(0, 0);
    assert_eq!(fresh.latest(), Some(info));
    // Only the ring file is in the directory: no temporary files left over.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
