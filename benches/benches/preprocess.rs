//! The model server's letterbox (`model_server::preprocess`): a 960x540 NV12 frame (the
//! footage's size and the ring's default format) into the YOLOX (416) and YOLOv8 (640)
//! input tensors.
//!
//! Baseline in the same run: `floor`, writing the same tensor from a lookup table with no
//! resampling or colour conversion (what any letterbox must at least spend). The ratio
//! letterbox / floor shows how much the resampling itself costs; `bench ipc` reports
//! the same step against the model's `session.run`.
//!
//! Run: `cargo bench -p benches --bench preprocess`.

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use model_server::family::Family;
use model_server::preprocess::Scratch;
use proto_schema::pixel::{FrameGeometry, PixelFormat};

const W: u32 = 960;
const H: u32 = 540;

/// A frame with structure in every plane (gradients and a checker), so no branch or
/// cache behaves as it would on a flat image.
fn nv12_frame() -> (Vec<u8>, FrameGeometry) {
    let g = FrameGeometry::packed(W, H, PixelFormat::Nv12).expect("960x540 NV12");
    let mut data = vec![0u8; g.frame_size as usize];
    for (i, b) in data.iter_mut().enumerate() {
        let (x, y) = (i % W as usize, i / W as usize);
        *b = ((x * 7 + y * 3) ^ ((x / 16 + y / 16) * 40)) as u8;
    }
    (data, g)
}

fn bench(c: &mut Criterion) {
    let (frame, geometry) = nv12_frame();
    let mut medians = Vec::new();
    for (name, family, size) in [
        ("yolox", Family::Yolox, 416),
        ("yolov8", Family::Yolov8, 640),
    ] {
        let spec = family.input_spec(size, size);
        let mut out = vec![0f32; 3 * (size * size) as usize];
        let mut scratch = Scratch::default();
        let mut group = c.benchmark_group(name);
        group.bench_function("letterbox", |b| {
            b.iter(|| {
                scratch
                    .letterbox_into(black_box(&frame), &geometry, &spec, &mut out)
                    .expect("letterbox")
            })
        });
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
        group.bench_function("floor", |b| {
            b.iter(|| {
                for (o, &p) in out.iter_mut().zip(black_box(&frame).iter().cycle()) {
                    *o = lut[p as usize];
                }
            })
        });
        group.finish();
        // A plain median of repeated single runs for the ratio line (criterion's own
        // estimates are in its report above).
        let time = |f: &mut dyn FnMut()| {
            let mut v: Vec<f64> = (0..201)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let lb = time(&mut || {
            scratch
                .letterbox_into(black_box(&frame), &geometry, &spec, &mut out)
                .expect("letterbox");
        });
        let floor = time(&mut || {
            for (o, &p) in out.iter_mut().zip(black_box(&frame).iter().cycle()) {
                *o = lut[p as usize];
            }
        });
        medians.push((name, lb, floor));
    }
    println!("\npreprocess medians (same run):");
    for (name, lb, floor) in medians {
        println!(
            "  {name}: letterbox {lb:.3} ms, floor {floor:.3} ms, letterbox / floor {:.2}x",
            lb / floor
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
