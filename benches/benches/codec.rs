//! Encode/decode cost of the wire messages: a typical `infer` request and an
//! `infer_result` with 10 detections.
//!
//! Each is measured three ways in the same run so the report can give ratios:
//! - `serde_*`: plain `serde_json::to_vec` / `from_slice::<Request|Response>` (the
//!   baseline: JSON alone, no framing, no validation);
//! - `encode`: `framing::encode` (length prefix + JSON, size check);
//! - `decode`: `decode_request` / `decode_response` (version-first envelope, typed parse
//!   with field paths and unknown-field detection, semantic checks);
//! - `frame_decode`: `FrameDecoder` extend + next + decode, i.e. what a server does per
//!   message after the socket read.
//!
//! Run: `cargo bench -p benches --bench codec`. After criterion's own report, the medians
//! of the per-iteration sample times and their ratios to the serde baseline are printed.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput};
use proto_schema::framing::{self, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN};
use proto_schema::message::{
    decode_request, decode_response, Detection, FrameMeta, FrameRef, InferenceRequest,
    InferenceResponse, Request, Response, Timings,
};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::PROTOCOL_VERSION;

/// Per-iteration nanoseconds of every sample, per benchmark.
static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Times `f` like `Bencher::iter`, also keeping each sample for the ratio summary.
fn timed<T>(b: &mut Bencher<'_>, key: &str, mut f: impl FnMut() -> T) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        let elapsed = start.elapsed();
        record(key, iters, elapsed);
        elapsed
    });
}

fn record(key: &str, iters: u64, elapsed: Duration) {
    let per_iter = elapsed.as_nanos() as f64 / iters.max(1) as f64;
    SAMPLES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_owned())
        .or_default()
        .push(per_iter);
}

fn median(key: &str) -> Option<f64> {
    let mut v = SAMPLES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)?
        .clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn print_ratios() {
    println!("\ncodec summary (median ns per message; ratio to the serde baseline, same run):");
    for group in ["request", "response"] {
        for (op, base) in [
            ("encode", "serde_encode"),
            ("decode", "serde_decode"),
            ("frame_decode", "serde_decode"),
        ] {
            let key = format!("{group}/{op}");
            let base_key = format!("{group}/{base}");
            if let (Some(t), Some(b)) = (median(&key), median(&base_key)) {
                println!(
                    "  {key:<24} {t:>9.0} ns   {base_key:<22} {b:>9.0} ns   ratio {:.2}x",
                    t / b
                );
            }
        }
    }
}

fn typical_request() -> Request {
    let geometry = FrameGeometry::packed(960, 540, PixelFormat::Nv12).expect("valid geometry");
    Request::Infer(InferenceRequest {
        v: PROTOCOL_VERSION,
        id: 1_234_567,
        camera_id: "cam-entrance-01".into(),
        model_id: "yolov8n_int8".into(),
        frame: FrameRef {
            ring: "cam-entrance-01".into(),
            generation: 3,
            slot: 5,
            seq: 90_210,
        },
        meta: FrameMeta::from_geometry(45_105, &geometry, 1_712_345_678_901_234_567),
        sent_ts_ns: 1_712_345_678_911_234_567,
        deadline_ts_ns: Some(1_712_345_679_011_234_567),
    })
}

fn typical_response() -> Response {
    const CLASSES: [&str; 5] = ["person", "bicycle", "car", "motorcycle", "traffic light"];
    let detections = (0..10u32)
        .map(|i| {
            let x = 0.05 + 0.09 * i as f32;
            Detection {
                class_id: i % 5,
                class_name: CLASSES[(i % 5) as usize].into(),
                confidence: 0.91 - 0.05 * i as f32,
                bbox: [x, 0.213_541_67, x + 0.061_718_75, 0.687_5],
            }
        })
        .collect();
    Response::InferResult(InferenceResponse {
        v: PROTOCOL_VERSION,
        id: 1_234_567,
        model_id: "yolov8n_int8".into(),
        camera_id: "cam-entrance-01".into(),
        frame_id: 45_105,
        detections,
        timings: Timings {
            queue_us: 412,
            preprocess_us: 1_873,
            inference_us: 14_220,
            postprocess_us: 96,
            total_us: 16_655,
            batch_size: 2,
        },
        error: None,
    })
}

fn bench_request(c: &mut Criterion) {
    let req = typical_request();
    let frame = framing::encode(&req, DEFAULT_MAX_FRAME).expect("encodes");
    let payload = &frame[HEADER_LEN..];
    let mut g = c.benchmark_group("codec/request");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("serde_encode", |b| {
        timed(b, "request/serde_encode", || {
            serde_json::to_vec(black_box(&req)).expect("serialises")
        })
    });
    g.bench_function("encode", |b| {
        timed(b, "request/encode", || {
            framing::encode(black_box(&req), DEFAULT_MAX_FRAME).expect("encodes")
        })
    });
    g.bench_function("serde_decode", |b| {
        timed(b, "request/serde_decode", || {
            serde_json::from_slice::<Request>(black_box(payload)).expect("parses")
        })
    });
    g.bench_function("decode", |b| {
        timed(b, "request/decode", || {
            decode_request(black_box(payload)).expect("decodes")
        })
    });
    g.bench_function("frame_decode", |b| {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        timed(b, "request/frame_decode", || {
            d.extend(black_box(&frame));
            let p = d.next().expect("frame ok").expect("complete");
            decode_request(&p).expect("decodes")
        })
    });
    g.finish();
}

fn bench_response(c: &mut Criterion) {
    let resp = typical_response();
    let frame = framing::encode(&resp, DEFAULT_MAX_FRAME).expect("encodes");
    let payload = &frame[HEADER_LEN..];
    let mut g = c.benchmark_group("codec/response_10_detections");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("serde_encode", |b| {
        timed(b, "response/serde_encode", || {
            serde_json::to_vec(black_box(&resp)).expect("serialises")
        })
    });
    g.bench_function("encode", |b| {
        timed(b, "response/encode", || {
            framing::encode(black_box(&resp), DEFAULT_MAX_FRAME).expect("encodes")
        })
    });
    g.bench_function("serde_decode", |b| {
        timed(b, "response/serde_decode", || {
            serde_json::from_slice::<Response>(black_box(payload)).expect("parses")
        })
    });
    g.bench_function("decode", |b| {
        timed(b, "response/decode", || {
            decode_response(black_box(payload)).expect("decodes")
        })
    });
    g.bench_function("frame_decode", |b| {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        timed(b, "response/frame_decode", || {
            d.extend(black_box(&frame));
            let p = d.next().expect("frame ok").expect("complete");
            decode_response(&p).expect("decodes")
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_request(&mut c);
    bench_response(&mut c);
    c.final_summary();
    print_ratios();
}
