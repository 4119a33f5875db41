//! The real `frame-kernel` binary on file sources: bit-exact frames against the `ffmpeg`
//! CLI, endless looping with increasing timestamps, kill -9 recovery, bad configuration.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use shm_ring::{ring_path, RingReader, RingState, WaitOutcome};

const W: usize = 960;
const H: usize = 540;

/// Frames 0..N of the real footage, as published (realtime pacing), are byte-identical
/// to `ffmpeg -i clip -pix_fmt nv12`'s frames 0..N, in order, 40 ms apart.
#[test]
fn file_frames_equal_ffmpeg_nv12() {
    let (Some(clip), Some(())) = (asset(CLIP), ffmpeg_cli()) else {
        return;
    };
    const N: usize = 40;
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "file1",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            d,
            "--slots",
            "16",
        ],
        dir.path(),
        "nv12",
    );
    let reader = open_ring(dir.path(), "file1", Duration::from_secs(10));
    let g = reader.geometry();
    assert_eq!((g.width, g.height, g.format.as_str()), (960, 540, "NV12"));
    let frames = collect_frames(&reader, N, Duration::from_secs(20));
    assert_eq!(
        frames.len(),
        N,
        "a 25 fps reader must see every frame\n{}",
        k.log()
    );

    let mut checked = 0;
    ffmpeg_frames(&clip, "nv12", W * H * 3 / 2, Some(N), |i, want| {
        let (info, got) = &frames[i];
        assert_eq!(info.frame_id, i as u64);
        assert_eq!(info.pts_ns, i as i64 * 40_000_000, "frame {i} pts");
        assert!(
            got.as_slice() == want,
            "frame {i}: kernel NV12 differs from ffmpeg's"
        );
        checked += 1;
    });
    assert_eq!(checked, N);
    assert!(has_content(&frames[N - 1].1));

    // Realtime pacing: capture times span ~ (N-1) * 40 ms.
    let span_ms = (frames[N - 1].0.capture_ts_ns - frames[0].0.capture_ts_ns) / 1_000_000;
    println!(
        "{N} frames published over {span_ms} ms (realtime pacing, expect ~{})",
        (N - 1) * 40
    );
    assert!(
        span_ms >= 1000,
        "frames must be paced, not bursted: {span_ms} ms"
    );

    let h = reader.header();
    assert_eq!(h.state, RingState::Live);
    assert!(h.counters.frames_decoded >= N as u64 && h.counters.frames_published >= N as u64);
    assert_eq!(h.counters.decode_errors, 0);
    assert!(
        (15_000..=35_000).contains(&h.counters.fps_milli),
        "fps counter {}",
        h.counters.fps_milli
    );
    assert_eq!(h.writer_pid, k.child.id());

    let status = k.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0: {status:?}\n{}",
        k.log()
    );
    assert_eq!(reader.header().state, RingState::Closed);
    assert!(
        !ring_path(dir.path(), "file1").exists(),
        "ring removed on exit"
    );
}

/// BGR24 output scaled to 640x360 equals `ffmpeg -vf scale=640:360 -pix_fmt bgr24`
/// (same swscale, same bicubic filter); SIGINT stops it cleanly and --keep-ring leaves the
/// closed ring behind.
#[test]
fn file_bgr24_scaled_equals_ffmpeg() {
    let (Some(clip), Some(())) = (asset(CLIP), ffmpeg_cli()) else {
        return;
    };
    const N: usize = 10;
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "bgr",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            d,
            "--slots",
            "16",
            "--format",
            "bgr24",
            "--width",
            "640",
            "--height",
            "360",
            "--keep-ring",
        ],
        dir.path(),
        "bgr",
    );
    let reader = open_ring(dir.path(), "bgr", Duration::from_secs(10));
    let frames = collect_frames(&reader, N, Duration::from_secs(20));
    assert_eq!(frames.len(), N, "{}", k.log());
    let size = 640 * 360 * 3;
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&clip)
        .args([
            "-frames:v",
            &N.to_string(),
            "-vf",
            "scale=640:360",
            "-fps_mode",
            "passthrough",
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), N * size);
    for (i, (info, got)) in frames.iter().enumerate() {
        assert_eq!(info.frame_id, i as u64);
        let want = &out.stdout[i * size..(i + 1) * size];
        let max_diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert_eq!(
            max_diff, 0,
            "frame {i}: BGR24 differs from ffmpeg by up to {max_diff}"
        );
    }
    // SIGINT (Ctrl-C) stops as cleanly as SIGTERM.
    k.signal(libc::SIGINT);
    let status = k.wait(Duration::from_secs(10)).expect("exits on SIGINT");
    assert!(status.success(), "{status:?}\n{}", k.log());
    let kept = RingReader::open(dir.path(), "bgr").expect("--keep-ring leaves the ring");
    assert_eq!(kept.header().state, RingState::Closed);
}

/// A short clip with B-frames in fast mode with 2 frame-threads, looped: frame ids and timestamps keep
/// increasing across loops, and frame k equals the reference frame k mod clip length.
#[test]
fn file_loop_fast_keeps_time_increasing() {
    let Some(()) = ffmpeg_cli() else { return };
    const LEN: usize = 30;
    const TOTAL: u64 = 5 * LEN as u64;
    let dir = ring_dir();
    let clip = dir.path().join("loop.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
        ])
        .args([
            "-frames:v",
            &LEN.to_string(),
            "-c:v",
            "libx264",
            "-bf",
            "2",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let mut reference = Vec::new();
    ffmpeg_frames(&clip, "nv12", 320 * 240 * 3 / 2, None, |_, f| {
        reference.push(f.to_vec())
    });
    assert_eq!(reference.len(), LEN);

    let d = dir.path().to_str().unwrap();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "loop",
            "--source",
            clip.to_str().unwrap(),
            "--ring-dir",
            d,
            "--slots",
            "64",
            "--fast",
            "--loop",
            "--max-frames",
            &TOTAL.to_string(),
        ],
        dir.path(),
        "loop",
    );
    let reader = open_ring(dir.path(), "loop", Duration::from_secs(10));
    let frames = collect_frames(&reader, TOTAL as usize, Duration::from_secs(30));
    let status = k
        .wait(Duration::from_secs(30))
        .expect("exits after --max-frames");
    assert!(status.success(), "{}", k.log());
    assert!(
        frames.len() > LEN,
        "reader kept up with too few frames: {}",
        frames.len()
    );
    let mut last_pts = -1;
    let mut loops_seen = std::collections::BTreeSet::new();
    for (info, got) in &frames {
        assert!(
            info.pts_ns > last_pts,
            "timestamps must increase across loops"
        );
        last_pts = info.pts_ns;
        assert_eq!(
            info.pts_ns,
            info.frame_id as i64 * 40_000_000,
            "frame {}",
            info.frame_id
        );
        let idx = info.frame_id as usize % LEN;
        assert!(
            got == &reference[idx],
            "frame {} differs from reference frame {idx}",
            info.frame_id
        );
        loops_seen.insert(info.frame_id / LEN as u64);
    }
    println!(
        "fast loop: read {} of {TOTAL} frames, loops {loops_seen:?}",
        frames.len()
    );
    assert!(
        loops_seen.len() >= 2,
        "frames from several loops must be checked: {loops_seen:?}"
    );
}

/// kill -9 leaves a stale ring; the next kernel replaces it (new generation) and a
/// reader that notices re-opens it and gets frames again.
#[test]
fn kill9_then_restart_recreates_ring_and_readers_recover() {
    let Some(clip) = asset(CLIP) else { return };
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let args = [
        "--camera-id",
        "k9",
        "--source",
        clip.to_str().unwrap(),
        "--ring-dir",
        d,
        "--loop",
    ];
    let mut first = Kernel::start(&args, dir.path(), "k9-first");
    let reader = open_ring(dir.path(), "k9", Duration::from_secs(10));
    wait_until(&reader, Duration::from_secs(10), "frames", |r| {
        r.write_seq() > 3
    });
    let gen1 = reader.generation();

    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(5)).expect("killed");
    assert!(
        ring_path(dir.path(), "k9").exists(),
        "kill -9 leaves the ring file"
    );
    assert!(
        !reader.writer_alive(),
        "a dead writer is detectable (lock released)"
    );
    assert_eq!(
        reader.header().state,
        RingState::Live,
        "the header still says Live"
    );

    let mut second = Kernel::start(&args, dir.path(), "k9-second");
    wait_until(&reader, Duration::from_secs(10), "ring replaced", |r| {
        !r.is_current()
    });
    let fresh = open_ring(dir.path(), "k9", Duration::from_secs(10));
    assert_ne!(
        fresh.generation(),
        gen1,
        "a recreated ring has a new generation"
    );
    assert_eq!(fresh.writer_pid(), second.child.id());
    match fresh.wait_for_publish(0, Duration::from_secs(10)) {
        WaitOutcome::Published(_) => {}
        other => panic!(
            "no frame from the restarted kernel: {other:?}\n{}",
            second.log()
        ),
    }
    let latest = fresh.latest().unwrap();
    let bytes = fresh.read(latest.slot, latest.seq, |b| b.to_vec()).unwrap();
    assert!(has_content(&bytes));
    assert!(
        second.log().contains("replaced stale ring"),
        "{}",
        second.log()
    );
    assert!(second.terminate().success());
}

fn run_kernel(args: &[&str]) -> (i32, String) {
    let out = Command::new(KERNEL).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).unwrap().next().is_none()
}

/// Bad configuration: exit code 2, every problem named, nothing created.
#[test]
fn bad_config_exits_nonzero_with_clear_message_and_no_ring() {
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();

    let (code, err) = run_kernel(&[
        "--camera-id",
        "cam 1",
        "--source",
        "http://127.0.0.1/x",
        "--format",
        "YUV9",
        "--ring-dir",
        not_a_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "invalid configuration for camera \"cam 1\" (4 problems)",
        "--camera-id \"cam 1\"",
        "unsupported scheme \"http\"",
        "--format \"YUV9\": unknown pixel format",
        "not a directory",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let rtsp = "rtsp://127.0.0.1:1/x";
    let cases: [(&[&str], &str); 4] = [
        (
            &["--source", "/nonexistent/clip.mp4", "--ring-dir", d],
            "cannot read file",
        ),
        (
            &["--source", rtsp, "--ring-dir", "/nonexistent/rings"],
            "--ring-dir /nonexistent/rings",
        ),
        (
            &[
                "--source",
                rtsp,
                "--ring-dir",
                d,
                "--width",
                "641",
                "--height",
                "360",
            ],
            "needs even width and height",
        ),
        (
            &["--source", rtsp, "--ring-dir", d, "--transport", "quic"],
            "invalid value 'quic' for '--transport",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--camera-id", "cam1"];
        args.extend_from_slice(extra);
        let (code, err) = run_kernel(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: missing {want:?} in:\n{err}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "only the test's own file"
    );
}

/// An FFmpeg option nobody consumes (here `stimeout`, removed in FFmpeg 5) is an error,
/// not silently ignored; exits 1 without creating the ring.
#[test]
fn unused_ffmpeg_option_is_fatal() {
    let Some(clip) = asset(CLIP) else { return };
    let dir = ring_dir();
    let t = Instant::now();
    let (code, err) = run_kernel(&[
        "--camera-id",
        "opt",
        "--source",
        clip.to_str().unwrap(),
        "--ring-dir",
        dir.path().to_str().unwrap(),
        "--av-option",
        "stimeout=1000000",
    ]);
    // Permanent (the same options fail every time): the supervisor does not retry it.
    assert_eq!(code, proto_schema::exit::KERNEL_SOURCE_UNUSABLE, "{err}");
    assert!(err.contains("did not use option(s) stimeout"), "{err}");
    assert!(is_empty_dir(dir.path()));
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// A damaged file (garbage written over parts of the video data, as a flaky network or
/// disk would): decode errors are counted in the ring header, frames keep flowing, and
/// the kernel finishes the file normally.
#[test]
fn corrupt_packets_are_counted_and_decoding_continues() {
    let Some(clip) = asset(CLIP) else { return };
    let dir = ring_dir();
    let damaged = dir.path().join("damaged.mp4");
    let mut bytes = std::fs::read(&clip).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..40usize {
        // Deterministic positions inside the media data (the moov box is at the start).
        let at = 100_000 + i * 80_000;
        for b in &mut bytes[at..at + 1500] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let d = dir.path().to_str().unwrap();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "dmg",
            "--source",
            damaged.to_str().unwrap(),
            "--ring-dir",
            d,
            "--fast",
            "--keep-ring",
        ],
        dir.path(),
        "damaged",
    );
    let status = k
        .wait(Duration::from_secs(60))
        .expect("kernel finishes the file");
    assert!(status.success(), "{}", k.log());
    let reader = RingReader::open(dir.path(), "dmg").unwrap();
    let c = reader.header().counters;
    println!(
        "damaged file: {} decoded, {} published, {} decode errors",
        c.frames_decoded, c.frames_published, c.decode_errors
    );
    assert!(
        c.decode_errors > 0,
        "damage must show in the decode error counter"
    );
    assert!(
        c.frames_published > 400,
        "frames keep flowing past damage: {}",
        c.frames_published
    );
    assert_eq!(
        c.frames_decoded, c.frames_published,
        "every decoded frame is published"
    );
    assert!(k.log().contains("end of file"), "{}", k.log());
}

/// A second kernel for a ring that already has a live writer refuses to start (exit 1,
/// clear message) and the first kernel keeps publishing.
#[test]
fn second_writer_for_a_live_ring_is_refused() {
    let Some(clip) = asset(CLIP) else { return };
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let args = [
        "--camera-id",
        "dup",
        "--source",
        clip.to_str().unwrap(),
        "--ring-dir",
        d,
        "--loop",
    ];
    let mut first = Kernel::start(&args, dir.path(), "dup-first");
    let reader = open_ring(dir.path(), "dup", Duration::from_secs(10));
    wait_until(&reader, Duration::from_secs(10), "frames", |r| {
        r.write_seq() > 2
    });
    let (code, err) = run_kernel(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ring"), "{err}");
    let before = reader.write_seq();
    wait_until(
        &reader,
        Duration::from_secs(5),
        "first kernel still publishing",
        |r| r.write_seq() > before + 5,
    );
    assert!(reader.is_current(), "the live ring was not replaced");
    assert!(first.terminate().success());
}
