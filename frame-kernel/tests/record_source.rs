//! `--record-source` against the fake RTSP camera (GStreamer, 127.0.0.1) serving the
//! real footage as a camera's two streams: the kernel decodes the 480x270 substream
//! into the ring and keeps the 960x540 main stream's packets for clips without
//! decoding it; a record stream that is missing never holds the ring back.

mod common;

use std::time::Duration;

use common::*;
use proto_schema::segment::Record;

/// The ring holds the substream's frames (480x270), the segments hold the main
/// stream's packets (960x540 codec parameters), every segment starts at a keyframe and
/// is anchored on the capture clock within the span of the ring's frames, and the
/// kernel exits cleanly on SIGTERM with the record thread.
#[test]
fn substream_is_decoded_and_the_main_stream_is_kept() {
    let Some(clip) = asset(CLIP) else { return };
    ffmpeg_cli().expect("ffmpeg CLI");
    let py = camera_python().expect("python with GStreamer's RTSP server");
    let sub = framebus_testkit::ffmpeg::scaled_copy(&clip, (480, 270)).expect("substream");
    let cam = start_camera(&py, 0, &[("main", &clip), ("sub", &sub)]);
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let clips = dir.path().join("segments");
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "rec",
            "--source",
            &cam.url("sub"),
            "--record-source",
            &cam.url("main"),
            "--ring-dir",
            d,
            "--clip-dir",
            clips.to_str().unwrap(),
            "--clip-keep-ms",
            "60000",
        ],
        dir.path(),
        "rec",
    );
    let reader = open_ring(dir.path(), "rec", Duration::from_secs(20));
    let frames = collect_frames(&reader, 100, Duration::from_secs(30));
    assert_eq!(frames.len(), 100, "{}", k.log());
    let g = reader.geometry();
    assert_eq!(
        (g.width, g.height),
        (480, 270),
        "the ring holds the substream"
    );
    let first_capture = frames[0].0.capture_ts_ns as i64;
    let last_capture = frames[99].0.capture_ts_ns as i64;
    let status = k.terminate();
    assert!(status.success(), "clean exit: {status:?}\n{}", k.log());
    let log = k.log();
    assert!(log.contains("record stream open"), "{log}");

    let segs = segments(&clips);
    assert!(!segs.is_empty(), "segments kept\n{log}");
    let mut packets = 0usize;
    for path in &segs {
        let (h, recs) = read_segment(path);
        assert_eq!(
            (h.width, h.height),
            (960, 540),
            "{path:?} is the main stream's"
        );
        let first = recs.iter().find_map(|r| match r {
            Record::Packet(p) => Some(p.key),
            Record::Anchor(_) => None,
        });
        assert_eq!(first, Some(true), "{path:?} starts at a keyframe");
        let mut anchors = 0;
        for r in &recs {
            match r {
                Record::Packet(_) => packets += 1,
                Record::Anchor(a) => {
                    anchors += 1;
                    let at = a.capture_unix_ns as i64;
                    assert!(
                        at > first_capture - 2_000_000_000 && at < last_capture + 2_000_000_000,
                        "anchor {at} on the capture clock of the ring's frames \
                         ({first_capture}..{last_capture})"
                    );
                }
            }
        }
        assert_eq!(anchors, 1, "{path:?}: one anchor");
    }
    // 100 substream frames are 4 s of the camera; the main stream was kept alongside.
    assert!(packets >= 50, "{packets} main-stream packets kept\n{log}");
}

/// A record stream the camera does not serve: the ring goes live and stays fed, no
/// segment is written, the kernel says why (without the password) and exits cleanly.
#[test]
fn a_missing_record_stream_never_holds_the_ring_back() {
    let Some(clip) = asset(CLIP) else { return };
    ffmpeg_cli().expect("ffmpeg CLI");
    let py = camera_python().expect("python with GStreamer's RTSP server");
    let cam = start_camera(&py, 0, &[("cam", &clip)]);
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let clips = dir.path().join("segments");
    let missing_url = cam.url("nope").replace("rtsp://", "rtsp://u:hunter2@");
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "norec",
            "--source",
            &cam.url("cam"),
            "--record-source",
            &missing_url,
            "--ring-dir",
            d,
            "--clip-dir",
            clips.to_str().unwrap(),
        ],
        dir.path(),
        "norec",
    );
    let reader = open_ring(dir.path(), "norec", Duration::from_secs(20));
    let frames = collect_frames(&reader, 75, Duration::from_secs(30));
    assert_eq!(frames.len(), 75, "{}", k.log());
    let status = k.terminate();
    assert!(status.success(), "clean exit: {status:?}\n{}", k.log());
    let log = k.log();
    assert!(log.contains("record stream unavailable"), "{log}");
    assert!(!log.contains("hunter2"), "password logged:\n{log}");
    assert!(
        segments(&clips).is_empty(),
        "no segment without the record stream"
    );
}
