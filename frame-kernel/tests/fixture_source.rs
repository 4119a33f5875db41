//! The real `frame-kernel` on the in-repo synthetic footage (no shared assets needed):
//! the published NV12 frames are byte-identical to the `ffmpeg` CLI's, in order.

mod common;

use std::time::Duration;

use common::*;
use framebus_testkit::fixtures;

#[test]
fn fixture_frames_equal_ffmpeg_nv12() {
    let Some(()) = ffmpeg_cli() else { return };
    const N: usize = 30;
    let (w, h) = fixtures::BOXES_SIZE;
    let clip = fixtures::boxes_video();
    let dir = ring_dir();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "boxes",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            dir.path().to_str().unwrap(),
            "--slots",
            "16",
        ],
        dir.path(),
        "boxes",
    );
    let reader = open_ring(dir.path(), "boxes", Duration::from_secs(10));
    let g = reader.geometry();
    assert_eq!((g.width, g.height, g.format.as_str()), (w, h, "NV12"));
    let frames = collect_frames(&reader, N, Duration::from_secs(20));
    assert_eq!(
        frames.len(),
        N,
        "a reader must see every frame\n{}",
        k.log()
    );
    let size = (w * h * 3 / 2) as usize;
    let checked = ffmpeg_frames(&clip, "nv12", size, Some(N), |i, want| {
        let (info, got) = &frames[i];
        assert_eq!(info.frame_id, i as u64);
        assert_eq!(info.pts_ns, i as i64 * 40_000_000, "frame {i} pts");
        assert!(got.as_slice() == want, "frame {i}: kernel NV12 differs");
    });
    assert_eq!(checked, N);
    assert!(has_content(&frames[N - 1].1));
    k.terminate();
}
