//! Real models on real footage: frames of `people_walk_540p.mp4` decoded by the ffmpeg
//! CLI (NV12, I420, BGR24, RGB24), written into a ring, sent through the socket of the
//! real binary, and compared with an independent reference
//! (`tests/reference/detect_reference.py`: ONNX Runtime + numpy, its own conversion,
//! letterbox, decode and NMS of the same bytes).

mod common;

use common::{assert_matches, decode_frame, reference, Env, Ring, Server};
use proto_schema::pixel::PixelFormat;

const THRESHOLD: f32 = 0.25;
/// Detections this close to the threshold may fall on either side of it: only those
/// firmly above must be in both lists.
const MARGIN: f32 = 0.03;
const FRAMES: [u32; 3] = [100, 250, 400];

fn check_model(model: &str, family: &str, formats: &[(PixelFormat, &str)]) {
    let Some(env) = Env::get() else { return };
    let path = env.model(model);
    let server = Server::start(&env, &path, &["--score-threshold", &THRESHOLD.to_string()]);
    let mut client = server.client();
    for index in FRAMES {
        for (n, &(format, pix_fmt)) in formats.iter().enumerate() {
            let bytes = decode_frame(&env, index, pix_fmt);
            let want = reference(&env, &path, family, &bytes, pix_fmt, THRESHOLD);
            let name = format!("f{index}-{n}");
            let ring = Ring::with_frame(&server.rings, &name, format, &bytes);
            let resp =
                client.infer(&ring.request(u64::from(index) * 10 + n as u64, &server.model_id));
            assert!(
                resp.error.is_none(),
                "{model} frame {index} {format}: {:?}",
                resp.error
            );
            assert_eq!(resp.id, u64::from(index) * 10 + n as u64);
            assert_eq!(resp.frame_id, ring.info.frame_id);
            assert_eq!(resp.timings.batch_size, 1);
            let persons = assert_matches(&resp.detections, &want, THRESHOLD, MARGIN);
            println!(
                "{model} frame {index} {format}: {} detections, {persons} persons matched, \
                 preprocess {} us, inference {} us",
                resp.detections.len(),
                resp.timings.preprocess_us,
                resp.timings.inference_us
            );
            if index == 100 {
                assert!(
                    persons >= 3,
                    "frame 100 has several people, matched {persons}"
                );
                assert!(resp.detections.iter().any(|d| d.class_name == "person"));
            }
        }
    }
}

#[test]
fn yolov8_matches_reference_on_nv12_i420_and_bgr() {
    check_model(
        "yolov8n_int8",
        "yolov8",
        &[
            (PixelFormat::Nv12, "nv12"),
            (PixelFormat::I420, "yuv420p"),
            (PixelFormat::Bgr24, "bgr24"),
        ],
    );
}

#[test]
fn yolox_matches_reference_on_nv12_and_rgb() {
    check_model(
        "yolox_nano",
        "yolox",
        &[(PixelFormat::Nv12, "nv12"), (PixelFormat::Rgb24, "rgb24")],
    );
}
