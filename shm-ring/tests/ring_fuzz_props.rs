//! The `ring_header` fuzz target's exercise as property tests, so CI runs it on stable:
//! random bytes and mutated or cut valid rings are written as a ring file, opened and
//! read through every reader call. Nothing may panic; whatever opens must be
//! self-consistent.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::layout::FixedHeader;
use shm_ring::{RingReader, RingWriter};

const MAX_LEN: u64 = 16 << 20;

/// Same steps as `fuzz/fuzz_targets/ring_header.rs`.
fn exercise(dir: &Path, data: &[u8]) {
    let path = dir.join("fuzz.ring");
    let _ = fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(data).unwrap();
    if let Some(head) = data.first_chunk::<128>() {
        let want = FixedHeader::from_bytes(head).file_size;
        if want > data.len() as u64 && want <= MAX_LEN {
            f.set_len(want).unwrap();
        }
    }
    drop(f);
    let Ok(r) = RingReader::open(dir, "fuzz") else {
        return;
    };
    assert!(r.geometry().validate().is_ok());
    let _ = (r.header(), r.try_header(), r.state());
    let latest = r.try_latest().unwrap();
    let mut buf = Vec::new();
    for slot in 0..r.slots().min(64) {
        if let Some(info) = r.slot_info(slot) {
            assert!(info.seq != 0 && info.seq % 2 == 0);
            let _ = r.read(slot, info.seq, |b| b.iter().fold(0u8, |a, &x| a ^ x));
            let _ = r.copy_into(slot, info.seq, &mut buf);
        }
        let _ = r.read(slot, 2, |b| b.len());
    }
    if let Some(info) = latest {
        assert!(info.slot < r.slots());
    }
    let _ = r.read(u32::MAX, 2, |b| b.len());
    let _ = r.wait_for_publish(r.write_seq(), Duration::ZERO);
    let _ = (r.writer_alive(), r.is_current());
    assert!(r.check_intact().is_ok());
    assert!(!r.truncated());
}

/// A valid ring's bytes (two frames published), built once.
fn valid_ring() -> &'static Vec<u8> {
    static RING: OnceLock<Vec<u8>> = OnceLock::new();
    RING.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RingWriter::builder("src")
            .dir(dir.path())
            .slots(3)
            .geometry(FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap())
            .create()
            .unwrap();
        for i in 0..2u8 {
            let mut s = w.begin_write();
            s.data_mut().fill(i + 1);
            s.publish(i64::from(i), u64::from(i));
        }
        fs::read(w.path()).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let dir = tempfile::tempdir().unwrap();
        exercise(dir.path(), &data);
    }

    #[test]
    fn mutated_valid_rings_never_panic(
        edits in proptest::collection::vec((0usize..512, any::<u8>()), 1..8),
        cut in proptest::option::of(0usize..100_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = valid_ring().clone();
        for (at, byte) in edits {
            // The fixed header, the live header and the slot table: where the reader
            // takes structure from.
            let at = at % data.len().min(512);
            data[at] = byte;
        }
        if let Some(cut) = cut {
            data.truncate(cut.min(data.len()));
        }
        exercise(dir.path(), &data);
    }
}

#[test]
fn the_unmutated_ring_opens_and_serves_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    exercise(dir.path(), valid_ring());
    let r = RingReader::open(dir.path(), "fuzz").unwrap();
    let info = r.latest().unwrap();
    assert_eq!(info.frame_id, 1);
    assert_eq!(
        r.read(info.slot, info.seq, |b| b.iter().all(|&x| x == 2)),
        Ok(true)
    );
}
