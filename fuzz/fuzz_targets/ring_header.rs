//! Arbitrary bytes as a ring file: written to `<tmp>/fuzz.ring` (extended to the
//! header's `file_size` when that is larger, up to 16 MiB, so structurally valid headers
//! get past the size check), opened with `RingReader::open` and read through every
//! reader call. A ring file is outside input (any process of the service user could
//! write one); the reader must refuse or serve it without panicking, and never touch
//! memory outside its mapping. The same exercise runs as a proptest in
//! `shm-ring/tests/ring_fuzz_props.rs`, so CI covers it without nightly.
#![no_main]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shm_ring::layout::FixedHeader;
use shm_ring::RingReader;

const MAX_LEN: u64 = 16 << 20;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ring-header-fuzz-{}", std::process::id()));
        let _ = fs::DirBuilder::new().mode(0o700).create(&d);
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let path = dir.join("fuzz.ring");
    let _ = fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("temp ring file");
    f.write_all(data).expect("write");
    if let Some(head) = data.first_chunk::<128>() {
        let want = FixedHeader::from_bytes(head).file_size;
        if want > data.len() as u64 && want <= MAX_LEN {
            f.set_len(want).expect("extend");
        }
    }
    drop(f);
    let Ok(r) = RingReader::open(dir, "fuzz") else {
        return;
    };
    let _ = (r.header(), r.try_header(), r.state(), r.geometry());
    let _ = (r.latest(), r.try_latest());
    let mut buf = Vec::new();
    for slot in 0..r.slots().min(64) {
        if let Some(info) = r.slot_info(slot) {
            let _ = r.read(slot, info.seq, |b| b.iter().fold(0u8, |a, &x| a ^ x));
            let _ = r.copy_into(slot, info.seq, &mut buf);
        }
        let _ = r.read(slot, 2, |b| b.len());
    }
    let _ = r.read(u32::MAX, 2, |b| b.len());
    let _ = r.wait_for_publish(r.write_seq(), Duration::ZERO);
    let _ = (r.writer_alive(), r.is_current(), r.check_intact());
});
