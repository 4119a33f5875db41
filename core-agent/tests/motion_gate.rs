//! The motion gate on real footage and on a generated still scene.
//!
//! `people_walk_540p.mp4` is decoded by the ffmpeg CLI to NV12 (the ring's default
//! format), one frame in five (the frames a 5 fps subscription of the 25 fps camera
//! looks at). Each frame goes through the same thumbnail and detector code the agent
//! runs on a ring slot. The people in every frame come from model-server's independent
//! reference detector (`tests/motion/people_boxes.py`, ONNX Runtime + numpy, YOLOX-nano);
//! a person whose box moved since the previous look is a *moving person*. The test
//! checks that no moving person goes unseen by the gate for a keep-alive interval or
//! more, and that a still scene (an ffmpeg lavfi test card with sensor-like noise,
//! H.264-encoded like a camera stream) is judged still after the first look.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use core_agent::agent::motion::{may_skip, Motion, MotionDetector};
use core_agent::config::MotionConfig;
use proto_schema::pixel::{FrameGeometry, PixelFormat};

const W: u32 = 960;
const H: u32 = 540;
/// The camera's rate and the subscription's.
const CAMERA_FPS: u64 = 25;
const FPS: u64 = 5;
const LOOK_NS: u64 = 1_000_000_000 / FPS;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI runs");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every fifth frame of `input` as back-to-back NV12 frames in `out`.
fn decode_looks(input: &[&str], out: &Path) -> Vec<Vec<u8>> {
    let mut args: Vec<&str> = input.to_vec();
    let out_s = out.to_str().unwrap();
    args.extend([
        "-vf",
        "select=not(mod(n\\,5))",
        "-fps_mode",
        "passthrough",
        "-pix_fmt",
        "nv12",
        "-f",
        "rawvideo",
        out_s,
    ]);
    ffmpeg(&args);
    let bytes = std::fs::read(out).unwrap();
    let size = (W * H * 3 / 2) as usize;
    assert_eq!(bytes.len() % size, 0, "whole frames");
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// The gate's verdict on every look, as the agent computes it.
fn judge_all(frames: &[Vec<u8>], settings: &MotionConfig) -> Vec<Motion> {
    let g = FrameGeometry::packed(W, H, PixelFormat::Nv12).unwrap();
    let mut d = MotionDetector::new(settings);
    let size = d.size_for(&g);
    frames
        .iter()
        .map(|f| {
            assert!(d.capture(f, &g));
            d.judge_captured(size)
        })
        .collect()
}

/// Which looks infer under the keep-alive policy (a result is always there after the
/// first inference: the agent reuses it).
fn inferred(motion: &[Motion], keepalive_fps: f64) -> Vec<bool> {
    let mut last: Option<u64> = None;
    motion
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let ts = 1_000_000_000_000 + i as u64 * LOOK_NS;
            let skip = may_skip(m, last.is_some(), last, ts, keepalive_fps);
            if !skip {
                last = Some(ts);
            }
            !skip
        })
        .collect()
}

fn python() -> PathBuf {
    std::env::var_os("FRAMEBUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::workspace_root().join(".local/venv/bin/python"))
}

type Box4 = [f64; 4];

fn people(assets: &Path, frames: &Path) -> Vec<Vec<Box4>> {
    let root = common::workspace_root();
    let out = Command::new(python())
        .arg(root.join("core-agent/tests/motion/people_boxes.py"))
        .arg("--reference")
        .arg(root.join("model-server/tests/reference"))
        .arg("--model")
        .arg(assets.join("models/yolox_nano.onnx"))
        .args(["--family", "yolox", "--frames"])
        .arg(frames)
        .args(["--width", &W.to_string(), "--height", &H.to_string()])
        .args(["--score", "0.4"])
        .output()
        .expect("the reference detector runs (FRAMEBUS_PYTHON)");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

fn iou(a: &Box4, b: &Box4) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &Box4| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter).max(1e-12)
}

/// Whether some person of `now` moved since `before`: no box of `before` overlaps it
/// (it came in, or moved far), or the best match's centre moved by at least 1 % of the
/// frame width (~10 px in 200 ms: walking, not detector jitter).
fn someone_moved(before: &[Box4], now: &[Box4]) -> bool {
    now.iter().any(|b| {
        let best = before
            .iter()
            .max_by(|x, y| iou(x, b).total_cmp(&iou(y, b)))
            .filter(|x| iou(x, b) > 0.3);
        match best {
            None => true,
            Some(x) => {
                let dx = (x[0] + x[2] - b[0] - b[2]) / 2.0;
                let dy = (x[1] + x[3] - b[1] - b[3]) / 2.0 * f64::from(H) / f64::from(W);
                (dx * dx + dy * dy).sqrt() >= 0.01
            }
        }
    })
}

#[test]
fn the_gate_sees_the_people_walking_and_skips_a_still_scene() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = MotionConfig {
        enabled: true,
        ..MotionConfig::default()
    };
    let keepalive = settings.keepalive_fps;
    let keepalive_looks = (FPS as f64 / keepalive).round() as usize;

    // The footage.
    let raw = dir.path().join("walk.nv12");
    let video = assets.join("video/people_walk_540p.mp4");
    let frames = decode_looks(&["-i", video.to_str().unwrap()], &raw);
    let motion = judge_all(&frames, &settings);
    let boxes = people(&assets, &raw);
    assert_eq!(boxes.len(), frames.len());
    let moving: Vec<bool> = (0..frames.len())
        .map(|i| i > 0 && someone_moved(&boxes[i - 1], &boxes[i]))
        .collect();
    // Runs of looks with a moving person that the gate called still.
    let (mut run, mut longest, mut missed) = (0usize, 0usize, 0usize);
    for (m, &mv) in motion.iter().zip(&moving) {
        if mv && m.is_still() {
            run += 1;
            missed += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let infer = inferred(&motion, keepalive);
    let shares: Vec<String> = motion
        .iter()
        .map(|m| match m {
            Motion::Moving(s) | Motion::Still(s) => format!("{:.4}", s),
            other => format!("{other:?}"),
        })
        .collect();
    println!(
        "footage: {} looks ({} fps of {} fps), {} with a moving person; gate: {} moving, {} still \
         ({} still with a moving person, longest run {}), inferences {} of {} with keep-alive {} fps",
        frames.len(),
        FPS,
        CAMERA_FPS,
        moving.iter().filter(|&&m| m).count(),
        motion.iter().filter(|m| matches!(m, Motion::Moving(_))).count(),
        motion.iter().filter(|m| m.is_still()).count(),
        missed,
        longest,
        infer.iter().filter(|&&i| i).count(),
        infer.len(),
        keepalive
    );
    println!("changed shares: {}", shares.join(" "));
    assert!(
        moving.iter().filter(|&&m| m).count() * 2 > frames.len(),
        "the footage has people walking in most looks"
    );
    assert!(
        longest < keepalive_looks,
        "a moving person went unseen for {longest} looks in a row (keep-alive: {keepalive_looks})"
    );
    // The keep-alive itself: never more than 1 / keepalive_fps between inferences.
    let mut since = 0usize;
    for &i in &infer {
        since = if i { 0 } else { since + 1 };
        assert!(since < keepalive_looks);
    }

    // A still scene: a test card with temporal noise, through H.264 like a camera.
    let still_mp4 = dir.path().join("still.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("smptehdbars=size={W}x{H}:rate={CAMERA_FPS}:duration=8"),
        "-vf",
        "noise=alls=6:allf=t",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        still_mp4.to_str().unwrap(),
    ]);
    let still_raw = dir.path().join("still.nv12");
    let still = decode_looks(&["-i", still_mp4.to_str().unwrap()], &still_raw);
    let verdicts = judge_all(&still, &settings);
    let infer = inferred(&verdicts, keepalive);
    println!(
        "still scene: {} looks, {} judged still, {} inferences with keep-alive {} fps",
        verdicts.len(),
        verdicts.iter().filter(|m| m.is_still()).count(),
        infer.iter().filter(|&&i| i).count(),
        keepalive
    );
    assert_eq!(verdicts[0], Motion::Learning);
    assert!(verdicts[1..].iter().all(|m| m.is_still()), "{verdicts:?}");
    // Only the keep-alive infers: one look in five, after the first.
    let n = infer.iter().filter(|&&i| i).count();
    assert!(
        n <= still.len().div_ceil(keepalive_looks) + 1,
        "{n} inferences"
    );
}
