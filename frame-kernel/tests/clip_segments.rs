//! `frame-kernel --clip-dir` on the real footage (10 s GOP, 25 fps, 20.3 s, looped):
//! the packets kept are keyframe-aligned segments, each anchored to the capture
//! clock, holding every packet of the stream in order, and the directory stays
//! bounded.

mod common;

use std::time::Duration;

use common::*;
use proto_schema::segment::Record;

/// Plays the footage fast for 3 loops (1524 frames) with a large history: every
/// packet is kept, in segments that start at keyframes (0, 10, 20 s of each loop)
/// and never span a loop; each has an anchor and increasing decode timestamps.
#[test]
fn segments_are_keyframe_aligned_anchored_and_complete() {
    let Some(clip) = asset(CLIP) else {
        return;
    };
    let dir = ring_dir();
    let clips = dir.path().join("segments");
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "seg1",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            dir.path().to_str().unwrap(),
            "--fast",
            "--loop",
            "--max-frames",
            "1524",
            "--clip-dir",
            clips.to_str().unwrap(),
            "--clip-keep-ms",
            "3600000",
        ],
        dir.path(),
        "seg",
    );
    let status = k.wait(Duration::from_secs(120)).expect("kernel ends");
    assert!(status.success(), "{}", k.log());
    let segs = segments(&clips);
    let mut packets = 0usize;
    let mut keyframes = 0usize;
    for path in &segs {
        let (h, recs) = read_segment(path);
        assert_eq!((h.width, h.height), (960, 540));
        assert!(!h.extradata.is_empty(), "avcC extradata kept");
        assert!(
            matches!(&recs[0], Record::Packet(p) if p.key),
            "{} starts with a keyframe",
            path.display()
        );
        assert!(
            recs.iter().any(|r| matches!(r, Record::Anchor(_))),
            "{} has an anchor",
            path.display()
        );
        let mut last_dts = i64::MIN;
        for r in &recs {
            if let Record::Packet(p) = r {
                assert!(p.dts > last_dts, "dts increase within a segment");
                last_dts = p.dts;
                packets += 1;
                keyframes += usize::from(p.key);
            }
        }
    }
    // 3 loops of 508 packets with keyframes at 0, 10 and 20 s; the last loop is cut
    // by --max-frames a few packets after the last published frame.
    assert!(
        (1524..=1524 + 8).contains(&packets),
        "{packets} packets kept\n{}",
        k.log()
    );
    assert_eq!(keyframes, 9);
    // A new segment per loop, plus (fast: 2 s of wall time pass quickly or not) at
    // most one per keyframe.
    assert!((3..=9).contains(&segs.len()), "{} segments", segs.len());
}

/// A short history: the directory holds only the segments that cover it.
#[test]
fn segments_are_bounded_by_history() {
    let Some(clip) = asset(CLIP) else {
        return;
    };
    let dir = ring_dir();
    let clips = dir.path().join("segments");
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "seg2",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            dir.path().to_str().unwrap(),
            "--fast",
            "--loop",
            "--max-frames",
            "3048",
            "--clip-dir",
            clips.to_str().unwrap(),
            "--clip-keep-ms",
            "1000",
            "--clip-max-bytes",
            "4194304",
        ],
        dir.path(),
        "bounded",
    );
    let status = k.wait(Duration::from_secs(240)).expect("kernel ends");
    assert!(status.success(), "{}", k.log());
    let segs = segments(&clips);
    let bytes: u64 = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(!segs.is_empty());
    // 6 loops of the footage (~20 MB of packets) were kept through 4 MiB.
    assert!(bytes <= 4 << 20, "{bytes} bytes kept");
    assert!(segs.len() <= 4, "{} segments kept", segs.len());
}
