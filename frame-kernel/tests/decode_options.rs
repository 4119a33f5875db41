//! The real `frame-kernel` with decode options on a generated clip with a fixed
//! I B B P GOP: `--skip-frames bidir` publishes exactly the reference frames, bit-exact
//! and in order; `auto` skips for a 5 fps consumer of the 25 fps clip and not for a 25 fps
//! one, and turns itself off when the GOP leaves gaps wider than the consumer interval;
//! `--hwaccel` on a machine without the hardware falls back to the CPU with a reason.
//!
//! Most runs play the whole clip in `--fast` mode into a ring with more slots than the
//! clip has frames and `--keep-ring`, so every published frame's metadata can be read
//! afterwards; the pixels are compared on a live, looping, realtime run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use shm_ring::{FrameInfo, RingReader, RingState};

const W: usize = 320;
const H: usize = 240;
const FRAMES: usize = 60;
const NV12: usize = W * H * 3 / 2;

/// A 25 fps clip of `FRAMES` frames, GOP `I B B P B B P ...` (x264 with fixed B-frame
/// placement and no B-pyramid, so every B-frame is a non-reference frame).
fn clip(dir: &Path) -> PathBuf {
    let path = dir.join("ibbp.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={W}x{H}:rate=25"))
        .args(["-frames:v", &FRAMES.to_string()])
        .args(["-c:v", "libx264", "-bf", "2", "-g", "30"])
        .args(["-x264-params", "b-adapt=0:b-pyramid=none:scenecut=0"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The picture type of every frame, in presentation order (ffprobe).
fn picture_types(clip: &Path) -> Vec<char> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v"])
        .args(["-show_entries", "frame=pict_type", "-of", "csv=p=0"])
        .arg(clip)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').chars().next())
        .collect()
}

/// Plays `clip` once with `extra` options; returns every published frame's metadata (in
/// order), the final header counters (decoded, published, decode errors) and the log.
fn run(clip: &Path, extra: &[&str], tag: &str) -> (Vec<FrameInfo>, [u64; 3], String) {
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let mut args = vec![
        "--camera-id",
        "dec",
        "--source",
        clip.to_str().unwrap(),
        "--ring-dir",
        d,
        "--fast",
        "--keep-ring",
        "--slots",
        "128",
    ];
    args.extend_from_slice(extra);
    let mut k = Kernel::start(&args, dir.path(), tag);
    let status = k
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("kernel did not finish the clip\n{}", k.log()));
    let log = k.log();
    assert!(status.success(), "{status:?}\n{log}");
    let reader = RingReader::open(dir.path(), "dec").expect("--keep-ring leaves the ring");
    let h = reader.header();
    assert_eq!(h.state, RingState::Closed);
    let published = h.counters.frames_published;
    assert!(published <= 128, "ring too small for the test: {published}");
    let mut frames = Vec::new();
    for n in 1..=published {
        let info = reader
            .slot_info(((n - 1) % 128) as u32)
            .unwrap_or_else(|| panic!("frame {n} missing"));
        assert_eq!(info.seq, 2 * n);
        frames.push(info);
    }
    let c = h.counters;
    (
        frames,
        [c.frames_decoded, c.frames_published, c.decode_errors],
        log,
    )
}

#[test]
fn bidir_publishes_exactly_the_reference_frames_bit_exact() {
    let Some(()) = ffmpeg_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let clip = clip(tmp.path());
    let types = picture_types(&clip);
    assert_eq!(types.len(), FRAMES, "{types:?}");
    let refs: Vec<usize> = (0..FRAMES).filter(|&i| types[i] != 'B').collect();
    assert!(
        refs.len() < FRAMES / 2,
        "the clip must be mostly B-frames: {types:?}"
    );

    let (all, [decoded, published, errors], log) = run(&clip, &["--skip-frames", "none"], "none");
    assert_eq!(
        (decoded, published, errors),
        (FRAMES as u64, FRAMES as u64, 0)
    );
    assert_eq!(all.len(), FRAMES);
    assert!(log.contains("skip_frames=\"none\""), "{log}");

    let (kept, [decoded, published, errors], log) =
        run(&clip, &["--skip-frames", "bidir"], "bidir");
    assert_eq!(
        (decoded, published, errors),
        (refs.len() as u64, refs.len() as u64, 0),
        "only the reference frames are decoded and published\n{log}"
    );
    assert!(log.contains("skip_frames=\"bidir\""), "{log}");
    // The right ones: at the reference frames' times (40 ms per frame from the first),
    // increasing.
    for (k, (&i, info)) in refs.iter().zip(&kept).enumerate() {
        assert_eq!(
            info.pts_ns,
            i as i64 * 40_000_000,
            "kept frame {k} is frame {i}"
        );
        assert_eq!(info.frame_id, k as u64);
    }
    assert!(kept
        .windows(2)
        .all(|w| w[0].capture_ts_ns <= w[1].capture_ts_ns));

    // The same pictures as ffmpeg's full decode at those frames: read live from a
    // looping realtime run (every slot is read before it could be reused).
    let mut want = Vec::new();
    ffmpeg_frames(&clip, "nv12", NV12, None, |i, bytes| {
        if refs.contains(&i) {
            want.push(bytes.to_vec());
        }
    });
    assert_eq!(want.len(), refs.len());
    let dir = ring_dir();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "live",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            dir.path().to_str().unwrap(),
            "--slots",
            "128",
            "--loop",
            "--skip-frames",
            "bidir",
        ],
        dir.path(),
        "bidir-live",
    );
    let reader = open_ring(dir.path(), "live", Duration::from_secs(10));
    let live = collect_frames(&reader, refs.len(), Duration::from_secs(20));
    assert_eq!(live.len(), refs.len(), "{}", k.log());
    for (n, ((info, bytes), (&i, want))) in live.iter().zip(refs.iter().zip(&want)).enumerate() {
        assert_eq!(info.pts_ns, i as i64 * 40_000_000);
        assert!(
            bytes == want,
            "kept frame {n} (frame {i}) differs from ffmpeg's"
        );
    }
    // Realtime pacing still holds: the kept frames keep their own times.
    let span = live[live.len() - 1].0.capture_ts_ns - live[0].0.capture_ts_ns;
    assert!(
        span >= 1_500_000_000,
        "paced at the stream's times, not bursted: {span} ns"
    );
    assert!(k.terminate().success());

    // noref leaves out the same frames here (no B-pyramid: every B is non-reference).
    let (_, [_, published, errors], _) = run(&clip, &["--skip-frames", "noref"], "noref");
    assert_eq!((published, errors), (refs.len() as u64, 0));
}

#[test]
fn auto_skips_for_a_slow_consumer_only_and_backs_off_when_gaps_are_too_wide() {
    let Some(()) = ffmpeg_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let clip = clip(tmp.path());
    let refs = picture_types(&clip).iter().filter(|&&t| t != 'B').count() as u64;

    // 5 fps of 25: skipping; the I/P frames are 120 ms apart, within 200 ms.
    let (_, [_, published, _], log) = run(
        &clip,
        &["--skip-frames", "auto", "--consumer-fps", "5"],
        "auto5",
    );
    assert_eq!(published, refs, "{log}");
    assert!(log.contains("noref"), "{log}");
    assert!(!log.contains("frame skipping turned off"), "{log}");

    // 25 fps of 25: no skipping.
    let (_, [_, published, _], log) = run(
        &clip,
        &["--skip-frames", "auto", "--consumer-fps", "25"],
        "auto25",
    );
    assert_eq!(published, FRAMES as u64, "{log}");
    assert!(log.contains("> half"), "{log}");

    // --all-frames wins over a slow consumer.
    let (_, [_, published, _], log) = run(
        &clip,
        &["--consumer-fps", "5", "--all-frames"],
        "all-frames",
    );
    assert_eq!(published, FRAMES as u64, "{log}");

    // 12.5 fps is exactly half: auto starts skipping, but the I/P frames of this GOP
    // are 120 ms apart, wider than 80 ms: skipping goes off after the first wide gap
    // and every later frame is published.
    let (frames, [_, published, errors], log) = run(
        &clip,
        &["--skip-frames", "auto", "--consumer-fps", "12.5"],
        "auto12",
    );
    assert!(log.contains("frame skipping turned off"), "{log}");
    assert_eq!(errors, 0);
    assert!(
        published > refs && published < FRAMES as u64,
        "{published}\n{log}"
    );
    let gaps: Vec<i64> = frames
        .windows(2)
        .map(|w| w[1].pts_ns - w[0].pts_ns)
        .collect();
    let first_wide = gaps.iter().position(|g| *g > 80_000_000).unwrap();
    assert!(
        gaps[first_wide + 1..].iter().all(|g| *g == 40_000_000),
        "after the wide gap every frame comes: {gaps:?}"
    );
}

/// On a machine without VAAPI or CUDA (CI: no /dev/dri, no driver) the kernel decodes on
/// the CPU, says why, and publishes every frame; where the hardware exists the frames
/// still all arrive.
#[test]
fn hwaccel_falls_back_to_the_cpu_with_a_reason() {
    let Some(()) = ffmpeg_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let clip = clip(tmp.path());
    let no_hw = !Path::new("/dev/dri").exists() && !Path::new("/dev/nvidiactl").exists();
    for accel in ["vaapi", "auto", "cuda"] {
        let (frames, [_, published, errors], log) = run(&clip, &["--hwaccel", accel], accel);
        assert_eq!((published, errors), (FRAMES as u64, 0), "{accel}\n{log}");
        assert_eq!(frames.len(), FRAMES);
        if no_hw {
            assert!(
                log.contains("hardware decoding unavailable; decoding on the CPU"),
                "{accel}\n{log}"
            );
            assert!(log.contains("cannot create the device"), "{accel}\n{log}");
            assert!(log.contains("hwaccel=\"cpu\""), "{log}");
        }
    }
}
