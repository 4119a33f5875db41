//! Live view cost (issue 13): one MJPEG viewer at 5 fps at 540p must cost ≤ 5 % of one
//! core, as a ratio to the camera's own decode cost measured in the same run.
//!
//! - `render`: what the encoder thread does per frame: copy a real 960x540 NV12 frame
//!   of the footage (frame 100) into the encoder's buffer as full-range YCbCr 4:2:0
//!   planes, draw 8 labelled boxes, a line and a zone, encode a quality-80 JPEG
//!   (libjpeg-turbo from the planes). `copy_only` and `draw_only` for the split.
//! - The summary after the criterion groups, all in the same run:
//!   - **instructions** (`valgrind --tool=callgrind`, independent of the machine's load):
//!     per rendered frame, from two runs of this binary rendering 2 and 12 frames
//!     (the difference over 10, so start-up cancels out), and per decoded frame, from
//!     two runs of `ffmpeg -threads 1 -i people_walk_540p.mp4 -pix_fmt nv12 -f null -`
//!     over 10 and 60 frames (the camera's decode plus the kernel's NV12 conversion,
//!     single-threaded). The viewer/decode ratio is `5 x render / 25 x decode`.
//!     Skipped (said) without valgrind, or with `FRAMEBUS_LIVE_VIEW_CALLGRIND=0`.
//!   - **CPU time** (`getrusage`: this thread for 40 renders; the ffmpeg child for the
//!     whole clip): the viewer's share of one core at 5 fps, the decode's at 25 fps,
//!     and their ratio. On a loaded machine CPU time is inflated (shared caches and
//!     cores), the instruction counts are not.
//!
//! `cargo bench -p benches --bench live_view -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use core_agent::live::draw::{draw_overlay, BoxMark, Canvas, Layout, LineMark, Overlay, ZoneMark};
use core_agent::live::frame::{copy_frame, draw_and_encode};
use criterion::Criterion;
use proto_schema::pixel::{FrameGeometry, PixelFormat};

const W: u32 = 960;
const H: u32 = 540;
/// The viewer's rate and the camera's.
const VIEW_FPS: f64 = 5.0;
const CAMERA_FPS: f64 = 25.0;
/// Set in the child this bench runs under callgrind: render this many frames and exit.
const RENDERS_ENV: &str = "FRAMEBUS_LIVE_VIEW_RENDERS";
/// The raw NV12 frame the child renders.
const FRAME_ENV: &str = "FRAMEBUS_LIVE_VIEW_FRAME";

fn assets() -> PathBuf {
    framebus_testkit::assets_dir()
}

/// Frame 100 of the footage as NV12, or a synthetic gradient when ffmpeg or the
/// asset is missing (said on stderr).
fn nv12_frame(video: &Path) -> Vec<u8> {
    let size = (W * H * 3 / 2) as usize;
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args([
            "-vf",
            "select=eq(n\\,100)",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "nv12",
            "-",
        ])
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.stdout.len() == size => o.stdout,
        _ => {
            eprintln!(
                "live_view: no real frame (ffmpeg or {} missing); using a gradient",
                video.display()
            );
            (0..size).map(|i| (i % 251) as u8).collect()
        }
    }
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; `who` is one of the
    // RUSAGE_* constants.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time per frame of decoding the clip (single thread, + NV12 conversion).
fn decode_cpu(video: &Path) -> Option<Duration> {
    let before = rusage(libc::RUSAGE_CHILDREN);
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-threads", "1", "-i"])
        .arg(video)
        .args(["-pix_fmt", "nv12", "-f", "null", "-"])
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let cpu = rusage(libc::RUSAGE_CHILDREN) - before;
    let text = String::from_utf8_lossy(&out.stderr);
    // The last "frame=  508" of the final report.
    let frames: u32 = text
        .rsplit("frame=")
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (frames > 0).then(|| cpu / frames)
}

/// Instructions `cmd` executes under callgrind (its "I refs" total).
fn callgrind(cmd: &mut Command) -> Option<u64> {
    let mut full = Command::new("valgrind");
    full.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdout(Stdio::null());
    let out = full.output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let Some(line) = text.lines().find(|l| l.contains("refs:")) else {
        eprintln!("live_view: callgrind gave no count: {}", text.trim());
        return None;
    };
    line.rsplit(':')
        .next()?
        .trim()
        .replace(',', "")
        .parse()
        .ok()
}

/// Instructions per rendered frame (this binary as the child) and per decoded frame
/// (ffmpeg), each the difference of two runs so that start-up cancels out.
fn instructions(frame: &Path, video: &Path) -> Option<(f64, f64)> {
    let me = std::env::current_exe().ok()?;
    let render = |n: u32| {
        callgrind(
            Command::new(&me)
                .env(RENDERS_ENV, n.to_string())
                .env(FRAME_ENV, frame),
        )
    };
    let decode = |n: u32| {
        callgrind(
            Command::new("ffmpeg")
                .args(["-v", "error", "-threads", "1", "-i"])
                .arg(video)
                .args(["-frames:v", &n.to_string()])
                .args(["-pix_fmt", "nv12", "-f", "null", "-"]),
        )
    };
    let per_render = render(12)?.checked_sub(render(2)?)? as f64 / 10.0;
    let per_decode = decode(60)?.checked_sub(decode(10)?)? as f64 / 50.0;
    Some((per_render, per_decode))
}

fn overlay() -> Overlay {
    Overlay {
        boxes: (0..8)
            .map(|k| {
                let x = 0.05 + 0.11 * k as f32;
                BoxMark {
                    bbox: [x, 0.3, x + 0.08, 0.75],
                    class_id: 0,
                    class: "person".into(),
                    track: Some(100 + k),
                }
            })
            .collect(),
        lines: vec![LineMark {
            name: "mid".into(),
            from: [0.5, 0.25],
            to: [0.5, 0.75],
        }],
        zones: vec![ZoneMark {
            name: "box".into(),
            polygon: vec![[0.6, 0.3], [0.9, 0.3], [0.9, 0.7], [0.6, 0.7]],
        }],
    }
}

/// One frame as the encoder thread renders it.
#[inline(never)]
fn render(g: &FrameGeometry, src: &[u8], o: &Overlay, buf: &mut Vec<u8>, out: &mut Vec<u8>) {
    assert!(copy_frame(g, src, buf), "the frame fits its geometry");
    draw_and_encode("bench", g, buf, o, 80, out).expect("encodes");
}

fn bench(c: &mut Criterion) {
    let video = assets().join("video/people_walk_540p.mp4");
    let src = nv12_frame(&video);
    let g = FrameGeometry::packed(W, H, PixelFormat::Nv12).expect("540p NV12");
    let o = overlay();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut group = c.benchmark_group("live_view_540p");
    group.bench_function("render", |b| {
        b.iter(|| {
            render(&g, black_box(&src), &o, &mut buf, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("copy_only", |b| {
        b.iter(|| black_box(copy_frame(&g, black_box(&src), &mut buf)))
    });
    group.bench_function("draw_only", |b| {
        b.iter(|| {
            let mut cv = Canvas::new(&mut buf, W as usize, H as usize, Layout::I420).unwrap();
            draw_overlay(&mut cv, black_box(&o));
        })
    });
    group.finish();

    // CPU time of this thread over 40 renders.
    let before = rusage(libc::RUSAGE_THREAD);
    for _ in 0..40 {
        render(&g, &src, &o, &mut buf, &mut out);
    }
    let per_render = (rusage(libc::RUSAGE_THREAD) - before) / 40;
    let viewer = per_render.as_secs_f64() * VIEW_FPS;
    eprintln!(
        "live_view: CPU time: render {:.2} ms/frame ({} bytes); one {VIEW_FPS} fps viewer = {:.2} % of one core",
        per_render.as_secs_f64() * 1e3,
        out.len(),
        viewer * 100.0
    );
    let decode_share = decode_cpu(&video).map(|dec| dec.as_secs_f64() * CAMERA_FPS);
    match decode_share {
        Some(d) => eprintln!(
            "live_view: CPU time: camera decode (ffmpeg, 1 thread, +nv12) = {:.1} % of one core at {CAMERA_FPS} fps; viewer/decode = {:.3}",
            d * 100.0,
            viewer / d
        ),
        None => eprintln!("live_view: decode CPU time not measured (ffmpeg or the footage missing)"),
    }

    if std::env::var("FRAMEBUS_LIVE_VIEW_CALLGRIND").as_deref() == Ok("0") {
        eprintln!("live_view: callgrind skipped (FRAMEBUS_LIVE_VIEW_CALLGRIND=0)");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let frame = dir.path().join("frame.nv12");
    std::fs::write(&frame, &src).expect("the frame written");
    match instructions(&frame, &video) {
        Some((r, d)) => {
            let ratio = r * VIEW_FPS / (d * CAMERA_FPS);
            eprintln!(
                "live_view: callgrind: render {:.1} M instructions/frame, decode {:.1} M/frame; viewer {:.0} M/s vs decode {:.0} M/s: viewer/decode = {ratio:.3}",
                r / 1e6,
                d / 1e6,
                r * VIEW_FPS / 1e6,
                d * CAMERA_FPS / 1e6,
            );
            if let Some(d) = decode_share {
                eprintln!(
                    "live_view: viewer = {:.2} % of one core (the instruction ratio x the decode's CPU share)",
                    ratio * d * 100.0
                );
            }
        }
        None => eprintln!(
            "live_view: callgrind counts not measured (valgrind, ffmpeg or the footage missing)"
        ),
    }
}

/// The child run under callgrind: render `n` frames of the raw frame and exit.
fn render_child(n: &str) {
    let n: u32 = n.parse().expect("a frame count");
    let path = std::env::var_os(FRAME_ENV).expect("the frame's path");
    let src = std::fs::read(path).expect("the raw frame");
    let g = FrameGeometry::packed(W, H, PixelFormat::Nv12).expect("540p NV12");
    let o = overlay();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for _ in 0..n {
        render(&g, &src, &o, &mut buf, &mut out);
    }
    black_box(out.len());
}

fn main() {
    if let Ok(n) = std::env::var(RENDERS_ENV) {
        render_child(&n);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
