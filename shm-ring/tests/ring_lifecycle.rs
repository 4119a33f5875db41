//! Ring ownership, validation and notification, on temp dirs (never /dev/shm).

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::time::MonoNanos;
use shm_ring::{
    ring_path, ReadError, RingCreateError, RingOpenError, RingReader, RingState, RingTrust,
    RingWriter, WaitOutcome,
};

fn geometry() -> FrameGeometry {
    FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap()
}

fn writer(dir: &Path, name: &str, slots: u32) -> RingWriter {
    RingWriter::builder(name)
        .dir(dir)
        .slots(slots)
        .geometry(geometry())
        .create()
        .unwrap()
}

fn publish(w: &mut RingWriter, fill: u8) -> shm_ring::FrameInfo {
    let mut slot = w.begin_write();
    slot.data_mut().fill(fill);
    slot.publish(i64::from(fill), 1_000 + u64::from(fill))
}

/// A ring file as a crashed writer leaves it: complete, state Live, no lock holder.
fn leave_stale_ring(dir: &Path, name: &str) -> (u64, Vec<u8>) {
    let mut w = RingWriter::builder(name)
        .dir(dir)
        .geometry(geometry())
        .keep_on_drop(true)
        .create()
        .unwrap();
    w.set_state(RingState::Live);
    publish(&mut w, 9);
    let generation = w.generation();
    let path = w.path().to_path_buf();
    drop(w);
    let mut bytes = fs::read(&path).unwrap();
    bytes[140..144].copy_from_slice(&(RingState::Live as u32).to_le_bytes());
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();
    (generation, bytes)
}

#[test]
fn second_writer_is_refused_with_owner_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = writer(dir.path(), "cam", 4);
    let err = RingWriter::builder("cam")
        .dir(dir.path())
        .geometry(geometry())
        .create()
        .unwrap_err();
    match err {
        RingCreateError::AlreadyOwned { path, pid } => {
            assert_eq!(path, first.path());
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected AlreadyOwned, got {other:?}"),
    }
    // The refused attempt left no temporary file behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cam.ring")]);
}

#[test]
fn stale_ring_of_dead_writer_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (old_generation, _) = leave_stale_ring(dir.path(), "cam");
    let old_reader = RingReader::open(dir.path(), "cam").unwrap();
    assert_eq!(old_reader.generation(), old_generation);
    assert_eq!(old_reader.state(), RingState::Live);
    assert!(!old_reader.writer_alive(), "nobody holds the lock");
    assert!(old_reader.is_current());

    let mut w = writer(dir.path(), "cam", 4);
    assert_ne!(w.generation(), old_generation);
    assert!(!old_reader.is_current(), "path now names the new ring");
    // The old mapping stays readable for whoever still holds it.
    let old = old_reader.latest().unwrap();
    assert_eq!(old_reader.read(old.slot, old.seq, |b| b[0]), Ok(9));

    let reader = RingReader::open(dir.path(), "cam").unwrap();
    assert_eq!(reader.generation(), w.generation());
    assert_eq!(reader.write_seq(), 0);
    assert!(reader.writer_alive());
    let info = publish(&mut w, 3);
    assert_eq!(reader.latest(), Some(info));
}

#[test]
fn writer_does_not_follow_or_remove_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, ring_path(dir.path(), "cam")).unwrap();
    let err = RingWriter::builder("cam")
        .dir(dir.path())
        .geometry(geometry())
        .create()
        .unwrap_err();
    assert!(
        matches!(err, RingCreateError::NotARegularFile { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    assert!(fs::symlink_metadata(ring_path(dir.path(), "cam"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn file_mode_is_0640_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), "cam", 2);
    assert_eq!(fs::metadata(w.path()).unwrap().mode() & 0o7777, 0o640);
}

/// Writes a valid ring with `keep_on_drop`, returns its bytes for tampering.
fn valid_ring_bytes(dir: &Path) -> Vec<u8> {
    let w = RingWriter::builder("template")
        .dir(dir)
        .geometry(geometry())
        .keep_on_drop(true)
        .create()
        .unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    let bytes = fs::read(&path).unwrap();
    fs::remove_file(path).unwrap();
    bytes
}

/// Opens a tampered ring both ways: a mapping reader and the supervisor's `pread`
/// header peek must refuse it with the same error.
fn open_tampered(dir: &Path, bytes: &[u8]) -> RingOpenError {
    let path = ring_path(dir, "bad");
    let _ = fs::remove_file(&path);
    fs::write(&path, bytes).unwrap();
    let e = RingReader::open(dir, "bad").unwrap_err();
    let peeked = shm_ring::peek_header(dir, "bad", &RingTrust::new()).unwrap_err();
    assert_eq!(
        std::mem::discriminant(&e),
        std::mem::discriminant(&peeked),
        "open: {e}; peek: {peeked}"
    );
    e
}

#[test]
fn peeked_header_is_the_mapped_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), "peek", 4);
    w.set_state(RingState::Live);
    for i in 0..6 {
        publish(&mut w, i);
    }
    w.counters().add_decoded();
    w.counters().add_decode_error();
    w.counters().add_reconnect();
    w.counters().set_fps_milli(25_000);
    w.heartbeat();
    let mapped = RingReader::open(dir.path(), "peek")
        .unwrap()
        .try_header()
        .unwrap();
    let peeked = shm_ring::peek_header(dir.path(), "peek", &RingTrust::new()).unwrap();
    assert_eq!(peeked, mapped);
    assert_eq!((peeked.write_seq, peeked.counters.fps_milli), (6, 25_000));
    // A missing ring is the same typed error as for open.
    let e = shm_ring::peek_header(dir.path(), "nope", &RingTrust::new()).unwrap_err();
    assert!(matches!(e, RingOpenError::NotFound { .. }), "{e}");
}

#[test]
fn reader_rejects_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid_ring_bytes(dir.path());

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let e = open_tampered(dir.path(), &bad_magic);
    assert!(matches!(e, RingOpenError::BadMagic { .. }), "{e}");

    let zeros = vec![0u8; good.len()];
    let e = open_tampered(dir.path(), &zeros);
    assert!(matches!(e, RingOpenError::BadMagic { .. }), "{e}");

    for version in [0u32, 3] {
        let mut bad_version = good.clone();
        bad_version[8..12].copy_from_slice(&version.to_le_bytes());
        let e = open_tampered(dir.path(), &bad_version);
        assert!(
            matches!(e, RingOpenError::UnsupportedVersion { found, supported: 2, .. } if found == version),
            "{e}"
        );
    }

    // Layout 2 (issue 18): the generation fits in 53 bits; a larger one is a corrupt header.
    let mut big_generation = good.clone();
    big_generation[64..72].copy_from_slice(&(1u64 << 53).to_le_bytes());
    let e = open_tampered(dir.path(), &big_generation);
    assert!(matches!(e, RingOpenError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("generation"), "{e}");

    let mut bad_slots = good.clone();
    bad_slots[16..20].copy_from_slice(&0u32.to_le_bytes());
    let e = open_tampered(dir.path(), &bad_slots);
    assert!(matches!(e, RingOpenError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("slot_count"), "{e}");

    let mut huge_stride = good.clone();
    huge_stride[40..48].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let e = open_tampered(dir.path(), &huge_stride);
    assert!(matches!(e, RingOpenError::BadHeader { .. }), "{e}");

    let mut odd_width = good.clone();
    odd_width[72..76].copy_from_slice(&63u32.to_le_bytes());
    let e = open_tampered(dir.path(), &odd_width);
    assert!(matches!(e, RingOpenError::BadGeometry { .. }), "{e}");

    let mut bad_format = good.clone();
    bad_format[80..84].copy_from_slice(&9u32.to_le_bytes());
    let e = open_tampered(dir.path(), &bad_format);
    assert!(matches!(e, RingOpenError::BadHeader { .. }), "{e}");

    let e = open_tampered(dir.path(), &good[..good.len() - 4096]);
    assert!(
        matches!(e, RingOpenError::SizeMismatch { expected, actual, .. }
            if expected == good.len() as u64 && actual == expected - 4096),
        "{e}"
    );

    let e = open_tampered(dir.path(), &good[..100]);
    assert!(matches!(e, RingOpenError::TooSmall { len: 100, .. }), "{e}");

    let e = open_tampered(dir.path(), &[]);
    assert!(matches!(e, RingOpenError::TooSmall { len: 0, .. }), "{e}");

    // And the untouched bytes still open.
    let path = ring_path(dir.path(), "bad");
    fs::remove_file(&path).unwrap();
    fs::write(&path, &good).unwrap();
    RingReader::open(dir.path(), "bad").unwrap();
}

#[test]
fn reader_refuses_symlinks_dirs_missing_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let real = writer(dir.path(), "real", 2);
    std::os::unix::fs::symlink(real.path(), ring_path(dir.path(), "link")).unwrap();
    let e = RingReader::open(dir.path(), "link").unwrap_err();
    assert!(matches!(e, RingOpenError::Symlink { .. }), "{e}");

    fs::create_dir(ring_path(dir.path(), "adir")).unwrap();
    let e = RingReader::open(dir.path(), "adir").unwrap_err();
    assert!(matches!(e, RingOpenError::NotARegularFile { .. }), "{e}");

    let e = RingReader::open(dir.path(), "missing").unwrap_err();
    assert!(matches!(e, RingOpenError::NotFound { .. }), "{e}");

    for name in ["../real", "real/x", ".hidden", ""] {
        let e = RingReader::open(dir.path(), name).unwrap_err();
        assert!(matches!(e, RingOpenError::InvalidName(_)), "{name}: {e}");
    }
}

#[test]
fn read_results_cover_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), "cam", 2);
    let r = RingReader::open(dir.path(), "cam").unwrap();
    assert_eq!(r.latest(), None);
    assert!(matches!(
        r.read(0, 2, |_| ()),
        Err(ReadError::Empty { slot: 0, .. })
    ));
    assert!(matches!(
        r.read(2, 2, |_| ()),
        Err(ReadError::SlotOutOfRange {
            slot: 2,
            slots: 2,
            ..
        })
    ));
    assert!(matches!(
        r.read(0, 3, |_| ()),
        Err(ReadError::InvalidSeq { seq: 3, .. })
    ));
    assert!(matches!(
        r.read(0, 0, |_| ()),
        Err(ReadError::InvalidSeq { seq: 0, .. })
    ));

    let first = publish(&mut w, 1);
    assert_eq!((first.slot, first.seq, first.frame_id), (0, 2, 0));
    assert_eq!(r.latest(), Some(first));
    assert_eq!(r.slot_info(0), Some(first));
    assert_eq!(r.slot_info(1), None);
    let mut buf = Vec::new();
    assert_eq!(r.copy_into(0, 2, &mut buf), Ok(first));
    assert_eq!(buf.len(), geometry().frame_size as usize);
    assert!(buf.iter().all(|&b| b == 1));

    publish(&mut w, 2);
    let third = publish(&mut w, 3);
    assert_eq!((third.slot, third.seq), (0, 6));
    // Frame 1's slot was reused: stale, with the seq found.
    match r.read(first.slot, first.seq, |_| ()) {
        Err(ReadError::Stale {
            slot: 0,
            expected_seq: 2,
            found_seq: 6,
            ring,
        }) => assert_eq!(&*ring, "cam"),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(
        r.copy_into(0, 2, &mut buf).map(|_| ()),
        Err(r.read(0, 2, |_| ()).unwrap_err())
    );
    assert!(buf.is_empty(), "buffer cleared on error");

    // A write in progress (or aborted) makes its slot unreadable, the previous frame
    // stays the latest.
    let second = r.slot_info(1).unwrap();
    {
        let mut slot = w.begin_write();
        assert_eq!(slot.slot(), 1);
        slot.data_mut()[0] = 0xEE;
        assert!(matches!(
            r.read(1, second.seq, |_| ()),
            Err(ReadError::Stale { found_seq: 7, .. })
        ));
        assert_eq!(r.latest(), Some(third));
        // Dropped here without publishing: aborted.
    }
    assert_eq!(r.slot_info(1), None);

    drop(w);
    assert!(matches!(
        r.read(0, 6, |_| ()),
        Err(ReadError::WriterGone { .. })
    ));
}

#[test]
fn header_shows_state_counters_and_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), "cam", 4);
    let r = RingReader::open(dir.path(), "cam").unwrap();
    let h = r.header();
    assert_eq!(h.state, RingState::Starting);
    assert_eq!(h.writer_pid, std::process::id());
    assert_eq!(h.slots, 4);
    assert_eq!(h.generation, w.generation());

    w.set_state(RingState::Live);
    w.counters().add_decoded();
    w.counters().add_decoded();
    w.counters().add_decode_error();
    w.counters().add_reconnect();
    w.counters().set_fps_milli(29_970);
    publish(&mut w, 1);
    let before = MonoNanos::now().get();
    w.heartbeat();
    let h = r.header();
    assert_eq!(h.state, RingState::Live);
    assert_eq!(h.write_seq, 1);
    assert!(h.heartbeat_ns >= before && h.heartbeat_ns <= MonoNanos::now().get());
    assert_eq!(h.counters.frames_decoded, 2);
    assert_eq!(h.counters.frames_published, 1);
    assert_eq!(h.counters.decode_errors, 1);
    assert_eq!(h.counters.reconnects, 1);
    assert_eq!(h.counters.fps_milli, 29_970);
    assert!(h.counters.last_frame_ns > 0 && h.counters.last_frame_ns <= before);
    let json = serde_json::to_value(h).unwrap();
    assert_eq!(json["state"], "live");
}

#[test]
fn wait_for_publish_wakes_times_out_and_sees_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), "cam", 4);
    let r = Arc::new(RingReader::open(dir.path(), "cam").unwrap());

    let start = Instant::now();
    assert_eq!(
        r.wait_for_publish(0, Duration::from_millis(30)),
        WaitOutcome::TimedOut
    );
    assert!(start.elapsed() >= Duration::from_millis(30));

    // A sleeping reader is woken by a publish long before its timeout.
    let r2 = Arc::clone(&r);
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        (
            r2.wait_for_publish(0, Duration::from_secs(20)),
            start.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(50));
    publish(&mut w, 1);
    let (outcome, waited) = waiter.join().unwrap();
    assert_eq!(outcome, WaitOutcome::Published(1));
    assert!(
        waited < Duration::from_secs(10),
        "woken, not timed out: {waited:?}"
    );

    // Already behind: returns at once.
    publish(&mut w, 2);
    assert_eq!(
        r.wait_for_publish(1, Duration::from_secs(20)),
        WaitOutcome::Published(2)
    );

    // A state change wakes the reader but is not a publish: it keeps waiting.
    let r3 = Arc::clone(&r);
    let waiter = std::thread::spawn(move || r3.wait_for_publish(2, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(30));
    w.set_state(RingState::Reconnecting);
    std::thread::sleep(Duration::from_millis(30));
    assert!(!waiter.is_finished());
    // Closing wakes it with Closed.
    drop(w);
    assert_eq!(waiter.join().unwrap(), WaitOutcome::Closed);
    assert_eq!(r.state(), RingState::Closed);
    assert!(!r.writer_alive());
    assert!(!r.is_current(), "unlinked on drop");
    // A reader that has not seen the last publishes gets them before Closed.
    assert_eq!(
        r.wait_for_publish(1, Duration::from_secs(1)),
        WaitOutcome::Published(2)
    );
}

#[test]
fn keep_on_drop_ring_reads_as_closed_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let w = RingWriter::builder("cam")
        .dir(dir.path())
        .geometry(geometry())
        .keep_on_drop(true)
        .create()
        .unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    let r = RingReader::open(dir.path(), "cam").unwrap();
    assert_eq!(r.state(), RingState::Closed);
    assert_eq!(
        r.wait_for_publish(0, Duration::from_secs(5)),
        WaitOutcome::Closed
    );
    let w2 = writer(dir.path(), "cam", 2);
    assert_eq!(w2.path(), path);
    let mut header = [0u8; 144];
    fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(header[140..144].try_into().unwrap()),
        RingState::Starting as u32
    );
}

/// Issue 18: writers write layout 2 with a generation below 2^53 (exact in an IEEE
/// double), and readers still open layout-1 rings, whose generation may be any non-zero
/// u64: the version bump rejects nothing that was valid before.
#[test]
fn layout_2_generations_fit_in_53_bits_and_layout_1_still_opens() {
    use shm_ring::layout::{LAYOUT_VERSION, MAX_GENERATION, MIN_LAYOUT_VERSION};
    assert_eq!((MIN_LAYOUT_VERSION, LAYOUT_VERSION), (1, 2));
    assert_eq!(MAX_GENERATION, (1u64 << 53) - 1);
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..64 {
        let w = writer(dir.path(), "gen", 2);
        assert!((1..=MAX_GENERATION).contains(&w.generation()));
        // Exact as an f64, as a JavaScript client would hold it.
        assert_eq!(w.generation() as f64 as u64, w.generation());
        let bytes = fs::read(w.path()).unwrap();
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
    }

    let mut v1 = valid_ring_bytes(dir.path());
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let old_generation = 16_946_051_413_669_577_059u64;
    v1[64..72].copy_from_slice(&old_generation.to_le_bytes());
    let path = ring_path(dir.path(), "v1");
    fs::write(&path, &v1).unwrap();
    let r = RingReader::open(dir.path(), "v1").unwrap();
    assert_eq!(r.generation(), old_generation);
}

/// Issue 18 (ring-format.md §3.2): a ring's `state` is advisory except `Closed`. A writer
/// that publishes while still in `Starting` (as an outside writer may) is read like a
/// Live one; only `Closed` stops reads.
#[test]
fn frames_of_a_starting_ring_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), "starting", 2);
    let r = RingReader::open(dir.path(), "starting").unwrap();
    assert_eq!(r.state(), RingState::Starting);
    assert_eq!(r.latest(), None);
    let info = publish(&mut w, 7);
    assert_eq!(r.state(), RingState::Starting);
    assert_eq!(r.latest(), Some(info));
    assert_eq!(r.read(info.slot, info.seq, |b| b[0]), Ok(7));
    w.set_state(RingState::Reconnecting);
    assert_eq!(r.read(info.slot, info.seq, |b| b[0]), Ok(7));
    w.set_state(RingState::Closed);
    assert!(matches!(
        r.read(info.slot, info.seq, |b| b[0]),
        Err(ReadError::WriterGone { .. })
    ));
}
