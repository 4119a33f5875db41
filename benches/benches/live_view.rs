//! Live view cost (issue 13): one MJPEG viewer at 5 fps at 540p must cost ≤ 5 % of one
//! core, as a ratio to the camera's own decode cost measured in the same run.
//!
//! - `copy_draw_encode`: what the encoder thread does per frame: copy a real 960x540
//!   NV12 frame of the footage (frame 100) into the encoder's buffer as full-range
//!   YCbCr, draw 8 labelled boxes, a line and a zone, encode a quality-80 JPEG.
//! - `copy_only` and `draw_only` for the split.
//! - The camera's decode: CPU time (user + sys, `getrusage` of the child) per frame of
//!   `ffmpeg -threads 1 -i people_walk_540p.mp4 -pix_fmt nv12 -f null -`, i.e. decode
//!   plus the kernel's conversion, single-threaded, over the whole clip.
//!
//! The summary line prints per-frame costs, the viewer's share of one core at 5 fps
//! (`5 x encode`), and its ratio to the camera's decode at 25 fps (`5 x encode / 25 x
//! decode`).
//!
//! `cargo bench -p benches --bench live_view -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use core_agent::live::draw::{draw_overlay, BoxMark, Canvas, Layout, LineMark, Overlay, ZoneMark};
use core_agent::live::frame::{copy_frame, draw_and_encode};
use criterion::Criterion;
use proto_schema::pixel::{FrameGeometry, PixelFormat};

const W: u32 = 960;
const H: u32 = 540;

fn assets() -> PathBuf {
    framebus_testkit::assets_dir()
}

/// Frame 100 of the footage as NV12, or a synthetic gradient when ffmpeg or the
/// asset is missing (said on stderr).
fn nv12_frame(video: &std::path::Path) -> Vec<u8> {
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

fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_CHILDREN is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time per frame of decoding the clip (single thread, + NV12 conversion).
fn decode_cost(video: &std::path::Path) -> Option<Duration> {
    let before = children_cpu();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-threads", "1", "-i"])
        .arg(video)
        .args(["-pix_fmt", "nv12", "-f", "null", "-"])
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let cpu = children_cpu() - before;
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

fn bench(c: &mut Criterion) {
    let video = assets().join("video/people_walk_540p.mp4");
    let src = nv12_frame(&video);
    let g = FrameGeometry::packed(W, H, PixelFormat::Nv12).expect("540p NV12");
    let o = overlay();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut group = c.benchmark_group("live_view_540p");
    group.bench_function("copy_draw_encode", |b| {
        b.iter(|| {
            assert!(copy_frame(&g, black_box(&src), &mut buf));
            draw_and_encode("bench", &g, &mut buf, &o, 80, &mut out).expect("encodes");
            black_box(out.len())
        })
    });
    group.bench_function("copy_only", |b| {
        b.iter(|| black_box(copy_frame(&g, black_box(&src), &mut buf)))
    });
    group.bench_function("draw_only", |b| {
        b.iter(|| {
            let mut cv = Canvas::new(&mut buf, W as usize, H as usize, Layout::Ycbcr).unwrap();
            draw_overlay(&mut cv, black_box(&o));
        })
    });
    group.finish();

    // The summary, measured here in the same run: the median of 40 frames.
    let mut times: Vec<Duration> = (0..40)
        .map(|_| {
            let t = Instant::now();
            copy_frame(&g, &src, &mut buf);
            draw_and_encode("bench", &g, &mut buf, &o, 80, &mut out).expect("encodes");
            t.elapsed()
        })
        .collect();
    times.sort();
    let enc = times[times.len() / 2];
    let viewer_share = enc.as_secs_f64() * 5.0;
    eprintln!(
        "live_view: copy+draw+encode {:.2} ms/frame ({} bytes); one 5 fps viewer = {:.2} % of one core",
        enc.as_secs_f64() * 1e3,
        out.len(),
        viewer_share * 100.0
    );
    match decode_cost(&video) {
        Some(dec) => eprintln!(
            "live_view: camera decode {:.2} ms/frame (ffmpeg, 1 thread, +nv12) = {:.1} % of one core at 25 fps; viewer/decode = {:.3}",
            dec.as_secs_f64() * 1e3,
            dec.as_secs_f64() * 25.0 * 100.0,
            viewer_share / (dec.as_secs_f64() * 25.0)
        ),
        None => eprintln!("live_view: ffmpeg decode not measured (ffmpeg or the footage missing)"),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
