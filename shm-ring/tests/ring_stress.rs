//! A writer publishing at full speed against several readers that verify a per-frame
//! checksum: no torn frame may ever be returned as good. Prints the stale counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::{ReadError, RingReader, RingState, RingWriter, WaitOutcome};

/// Frame bytes: `[0..8]` frame id, `[8..16]` checksum of `[16..]`, `[16..]` a pattern
/// derived from the frame id, so bytes of two frames never verify together.
fn fill_frame(data: &mut [u8], frame_id: u64) {
    let mut state = frame_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for chunk in data[16..].chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let sum = checksum(&data[16..]);
    data[0..8].copy_from_slice(&frame_id.to_le_bytes());
    data[8..16].copy_from_slice(&sum.to_le_bytes());
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over 8-byte words (tail bytes folded in one by one).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether `data` is exactly the frame `frame_id` as written by [`fill_frame`]. Must not
/// panic on any content: it runs over bytes the writer may be changing.
fn verify(data: &[u8], frame_id: u64) -> bool {
    if data.len() < 16 {
        return false;
    }
    let id = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let sum = u64::from_le_bytes(data[8..16].try_into().unwrap());
    id == frame_id && sum == checksum(&data[16..])
}

#[test]
fn checker_detects_mixed_frames() {
    let mut a = vec![0u8; 4096];
    let mut b = vec![0u8; 4096];
    fill_frame(&mut a, 7);
    fill_frame(&mut b, 8);
    assert!(verify(&a, 7) && verify(&b, 8));
    assert!(!verify(&a, 8));
    let mut torn = a.clone();
    torn[2048..].copy_from_slice(&b[2048..]);
    assert!(!verify(&torn, 7));
    let mut one_word = a.clone();
    one_word[4000..4008].copy_from_slice(&b[4000..4008]);
    assert!(!verify(&one_word, 7));
}

#[derive(Default)]
struct Tally {
    good: AtomicU64,
    torn_accepted: AtomicU64,
    stale: AtomicU64,
    copies_good: AtomicU64,
}

fn run(geometry: FrameGeometry, slots: u32, readers: usize, duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::builder("stress")
        .dir(dir.path())
        .slots(slots)
        .geometry(geometry)
        .create()
        .unwrap();
    writer.set_state(RingState::Live);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    let mut handles = Vec::new();
    for index in 0..readers {
        let reader = RingReader::open(dir.path(), "stress").unwrap();
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        handles.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let Some(latest) = reader.latest() else {
                    continue;
                };
                // Mostly the newest frame, sometimes the oldest slot (the next one the
                // writer overwrites) to provoke races on purpose.
                let info = if round.is_multiple_of(3) {
                    let oldest = (latest.slot + 1) % reader.slots();
                    match reader.slot_info(oldest) {
                        Some(info) => info,
                        None => continue,
                    }
                } else {
                    latest
                };
                let outcome = if (round + index as u64).is_multiple_of(2) {
                    reader.read(info.slot, info.seq, |d| verify(d, info.frame_id))
                } else {
                    // A validated copy must verify after the fact, with no writer racing.
                    reader.copy_into(info.slot, info.seq, &mut buf).map(|got| {
                        assert_eq!(got, info);
                        tally.copies_good.fetch_add(1, Ordering::Relaxed);
                        verify(&buf, info.frame_id)
                    })
                };
                match outcome {
                    Ok(true) => tally.good.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => tally.torn_accepted.fetch_add(1, Ordering::Relaxed),
                    Err(ReadError::Stale { .. }) => tally.stale.fetch_add(1, Ordering::Relaxed),
                    Err(other) => panic!("unexpected read error: {other}"),
                };
            }
        }));
    }

    // One follower sleeping on the futex between publishes.
    let follower = {
        let reader = RingReader::open(dir.path(), "stress").unwrap();
        std::thread::spawn(move || {
            let (mut last, mut wakes) = (0u64, 0u64);
            loop {
                match reader.wait_for_publish(last, Duration::from_secs(10)) {
                    WaitOutcome::Published(n) => {
                        assert!(n > last, "write_seq went backwards");
                        last = n;
                        wakes += 1;
                    }
                    WaitOutcome::Closed => return (wakes, last),
                    WaitOutcome::TimedOut => panic!("writer is publishing, no timeout expected"),
                }
            }
        })
    };

    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < duration {
        let mut slot = writer.begin_write();
        let id = slot.frame_id();
        fill_frame(slot.data_mut(), id);
        slot.publish(id as i64, id);
        published += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    drop(writer);
    let (wakes, last_seen) = follower.join().unwrap();

    let good = tally.good.load(Ordering::Relaxed);
    let torn = tally.torn_accepted.load(Ordering::Relaxed);
    let stale = tally.stale.load(Ordering::Relaxed);
    let copies = tally.copies_good.load(Ordering::Relaxed);
    println!(
        "{}x{} {:?}, {slots} slots, {readers} readers: published {published}, \
         frames checked {good} (of which {copies} copies), stale {stale}, \
         torn accepted {torn}; follower woke {wakes}x, saw write_seq {last_seen}",
        geometry.width, geometry.height, geometry.format
    );
    assert_eq!(torn, 0, "a torn frame was returned as good");
    assert!(good > 0, "readers verified no frame at all");
    assert_eq!(last_seen, published, "follower saw the final write_seq");
}

#[test]
fn small_frames_two_slots_maximum_contention() {
    let g = FrameGeometry::packed(32, 24, PixelFormat::Rgb24).unwrap();
    run(g, 2, 3, Duration::from_millis(1200));
}

#[test]
fn nv12_frames_four_slots() {
    let g = FrameGeometry::packed(160, 120, PixelFormat::Nv12).unwrap();
    run(g, 4, 3, Duration::from_millis(1200));
}
