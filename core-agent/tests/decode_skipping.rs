//! The decode options as core-agent drives them, on the real footage: the kernel
//! arguments core-agent builds for a camera (`[cameras.decode]` defaults, `--consumer-fps`
//! = the fastest subscription) make the real `frame-kernel` skip non-reference frames for
//! a 5 fps subscription of the 25 fps footage, and the subscription's FPS gate, fed the
//! published frames' timestamps, still serves every one of its slots.
//!
//! The kernel runs in `--fast` mode on small frames into a ring with a slot per frame and
//! `--keep-ring`, so every published frame's timestamp is read back afterwards. The gate is
//! fed stream time: with realtime pacing a frame's capture time is its stream time plus a
//! constant (frame-kernel's pacing tests), so the gate sees the same spacing live.

mod common;

use std::process::Command;

use common::{assets, bin_dir};
use core_agent::agent::gate::{FpsGate, Verdict};
use core_agent::config::Config;
use shm_ring::RingReader;

const FOOTAGE_FRAMES: u64 = 508;
/// I and P frames of the footage (ffprobe: 2 I, 273 P, 233 B).
const REFERENCE_FRAMES: u64 = 275;

fn config(sub_fps: f64, video: &std::path::Path) -> Config {
    let text = format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\nfps = 25\n\n\
         [[models]]\nid = \"m\"\npath = \"/m.onnx\"\n\n\
         [[subscriptions]]\ncamera = \"cam\"\nmodel = \"m\"\nfps = {sub_fps}\n",
        video.display()
    );
    Config::from_toml(&text, "t.toml".as_ref(), "/".as_ref()).unwrap()
}

/// Plays the footage once with core-agent's decode arguments for a subscription at
/// `sub_fps`; returns the published frames' stream timestamps and the kernel's log.
fn published_pts(sub_fps: f64) -> Option<(Vec<i64>, Vec<String>, String)> {
    let video = assets()?.join("video/people_walk_540p.mp4");
    let c = config(sub_fps, &video);
    let cam = &c.cameras[0];
    let decode_args = cam.decode.kernel_args(c.consumer_fps(&cam.id));
    let rings = tempfile::Builder::new()
        .prefix("fb-skip-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in("/dev/shm")
        .unwrap();
    let out = Command::new(bin_dir().join("frame-kernel"))
        .args(["--camera-id", "cam", "--source"])
        .arg(&video)
        .arg("--ring-dir")
        .arg(rings.path())
        .args(["--fast", "--keep-ring", "--slots", "512"])
        .args(["--width", "96", "--height", "54"])
        .args(&decode_args)
        .env("FRAMEBUS_LOG", "info")
        .output()
        .expect("frame-kernel runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let reader = RingReader::open(rings.path(), "cam").unwrap();
    let c = reader.header().counters;
    assert_eq!(c.decode_errors, 0, "{log}");
    let pts = (0..c.frames_published as u32)
        .map(|slot| reader.slot_info(slot).expect("every frame kept").pts_ns)
        .collect();
    Some((pts, decode_args, log))
}

/// Feeds `pts` through a gate at `fps` with a free model; returns (sent, slots spanned).
/// The gate's slots sit on the capture clock's grid (phase 0 here), so the slots spanned
/// are counted on that grid from the first frame's slot to the last frame's.
fn gate(pts: &[i64], fps: f64) -> (u64, u64) {
    let mut g = FpsGate::new(fps);
    let base = 1_000_000_000u64;
    for &p in pts {
        let v = g.offer(base + p as u64, true);
        assert_ne!(v, Verdict::Missed);
    }
    let slot = |p: i64| (base + p as u64) / g.interval_ns();
    (g.sent(), slot(pts[pts.len() - 1]) - slot(pts[0]) + 1)
}

#[test]
fn a_5_fps_subscription_skips_b_frames_and_is_still_served_every_slot() {
    let Some((pts, args, log)) = published_pts(5.0) else {
        return;
    };
    assert_eq!(args, ["--skip-frames", "auto", "--consumer-fps", "5"]);
    assert!(log.contains("skip_frames=\"noref\""), "{log}");
    assert_eq!(pts.len() as u64, REFERENCE_FRAMES, "{log}");
    assert!(pts.windows(2).all(|w| w[0] < w[1]));
    let widest = pts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        widest <= 80_000_000,
        "I/P frames at most 2 frames apart: {widest}"
    );
    let (sent, slots) = gate(&pts, 5.0);
    assert_eq!(sent, slots, "every 200 ms slot has a frame");
    assert!(slots >= 100, "{slots}");
}

#[test]
fn exactly_half_the_rate_still_skips_and_a_full_rate_subscription_does_not() {
    // 12.5 fps: auto skips; the footage's I/P frames are at most 80 ms apart, so the gap
    // guard keeps skipping on and every 80 ms slot is served.
    let Some((pts, _, log)) = published_pts(12.5) else {
        return;
    };
    assert!(!log.contains("frame skipping turned off"), "{log}");
    assert_eq!(pts.len() as u64, REFERENCE_FRAMES, "{log}");
    let (sent, slots) = gate(&pts, 12.5);
    assert_eq!(sent, slots);

    let Some((pts, args, log)) = published_pts(25.0) else {
        return;
    };
    assert_eq!(args, ["--skip-frames", "auto", "--consumer-fps", "25"]);
    assert!(log.contains("skip_frames=\"none\""), "{log}");
    assert_eq!(pts.len() as u64, FOOTAGE_FRAMES);
    let (sent, slots) = gate(&pts, 25.0);
    assert_eq!(sent, slots);
}
