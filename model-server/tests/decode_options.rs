//! What the frame-kernel's decode options (`--skip-frames`, `--skip-loop-filter`) do to
//! detections on the real footage: the footage is decoded by the ffmpeg CLI with the
//! same libavcodec decoder options the kernel sets (`-skip_frame`, `-skip_loop_filter`;
//! `frame-kernel/tests/decode_options.rs` shows the kernel's frames equal ffmpeg's),
//! every 10th frame of the full decode (2.5 fps over the whole clip) that survives the
//! option is sent through the real `model-server` (YOLOX-nano), and its detections are
//! compared with those of the same frame (same timestamp) of the full decode.
//!
//! Skipping frames leaves the surviving pictures bit-identical, so their detections must
//! be identical. Skipping the loop filter changes every picture: the test reports how
//! much (share of full-decode boxes matched at IoU >= 0.5, same class, and the person
//! count per frame; `docs/benchmarks.md` quotes the numbers) and guards a floor.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};

use common::{iou, Env, Ring, Server, HEIGHT, WIDTH};
use proto_schema::message::Detection;
use proto_schema::pixel::PixelFormat;

const NV12: usize = (WIDTH * HEIGHT * 3 / 2) as usize;
const SCORE: f32 = 0.3;
/// Every `STEP`th frame of the clip is compared.
const STEP: i64 = 10;

/// Frames of the footage decoded with `opts` (ffmpeg decoder options), keyed by frame
/// index (pts / frame duration), only every `STEP`th index kept.
fn decode(env: &Env, opts: &[&str]) -> BTreeMap<i64, Vec<u8>> {
    // Timestamps of the frames that come out, in order (framecrc: `stream, dts, pts, ...`).
    let crc = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-threads", "1"])
        .args(opts)
        .arg("-i")
        .arg(env.video())
        .args(["-fps_mode", "passthrough", "-f", "framecrc", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        crc.status.success(),
        "{}",
        String::from_utf8_lossy(&crc.stderr)
    );
    let pts: Vec<i64> = String::from_utf8_lossy(&crc.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(2)?.trim().parse().ok())
        .collect();
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-threads", "1"])
        .args(opts)
        .arg("-i")
        .arg(env.video())
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "nv12",
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs");
    let mut out = child.stdout.take().unwrap();
    let mut frames = BTreeMap::new();
    let mut buf = vec![0u8; NV12];
    // framecrc's pts are in the output time base 1/25 here: one unit per frame.
    for &p in &pts {
        out.read_exact(&mut buf)
            .expect("as many frames as timestamps");
        if p % STEP == 0 {
            frames.insert(p, buf.clone());
        }
    }
    assert!(child.wait().unwrap().success());
    frames
}

#[derive(Debug, Default)]
struct Compare {
    frames: usize,
    /// Full-decode boxes, and those with a same-class partner at IoU >= 0.5.
    boxes: usize,
    matched: usize,
    /// Boxes of the option with no partner in the full decode.
    extra: usize,
    identical_frames: usize,
    same_person_count: usize,
}

fn matched(a: &Detection, others: &[Detection]) -> bool {
    others
        .iter()
        .any(|b| b.class_id == a.class_id && iou(&a.bbox, &b.bbox) >= 0.5)
}

#[test]
fn detections_on_frames_surviving_each_decode_option() {
    let Some(env) = Env::get() else { return };
    let model = env.model("yolox_nano");
    let server = Server::start(&env, &model, &["--score-threshold", &SCORE.to_string()]);
    let mut client = server.client();
    let mut ring: Option<Ring> = None;
    let mut id = 0u64;
    let mut detect = |bytes: &[u8]| -> Vec<Detection> {
        id += 1;
        let r = match ring.as_mut() {
            Some(r) => {
                r.publish(bytes);
                r
            }
            None => ring.insert(Ring::with_frame(
                &server.rings,
                "opts",
                PixelFormat::Nv12,
                bytes,
            )),
        };
        let resp = client.infer(&r.request(id, &server.model_id));
        assert!(resp.error.is_none(), "{:?}", resp.error);
        resp.detections
    };

    let full = decode(&env, &[]);
    assert_eq!(full.len(), 51, "508 frames, every 10th");
    let full_dets: BTreeMap<i64, Vec<Detection>> =
        full.iter().map(|(&k, b)| (k, detect(b))).collect();

    let options: [(&str, &[&str]); 5] = [
        ("skip_frame=bidir", &["-skip_frame", "bidir"]),
        ("skip_frame=noref", &["-skip_frame", "noref"]),
        ("skip_loop_filter=all", &["-skip_loop_filter", "all"]),
        (
            "noref + skip_loop_filter=all",
            &["-skip_frame", "noref", "-skip_loop_filter", "all"],
        ),
        (
            "bidir + skip_loop_filter=all",
            &["-skip_frame", "bidir", "-skip_loop_filter", "all"],
        ),
    ];
    for (name, opts) in options {
        let frames = decode(&env, opts);
        assert!(!frames.is_empty(), "{name}");
        let mut c = Compare::default();
        for (k, bytes) in &frames {
            let want = &full_dets[k];
            let got = detect(bytes);
            c.frames += 1;
            c.identical_frames += usize::from(bytes == &full[k]);
            c.boxes += want.len();
            c.matched += want.iter().filter(|w| matched(w, &got)).count();
            c.extra += got.iter().filter(|g| !matched(g, want)).count();
            let persons = |d: &[Detection]| d.iter().filter(|x| x.class_id == 0).count();
            c.same_person_count += usize::from(persons(want) == persons(&got));
            if name.starts_with("skip_frame") {
                // The surviving pictures are the full decode's, bit for bit.
                assert!(bytes == &full[k], "{name}: frame {k} differs");
                assert_eq!(got.len(), want.len(), "{name}: frame {k}");
            }
        }
        let share = c.matched as f64 / c.boxes.max(1) as f64;
        let line = format!(
            "{name:<30} {:>3} of {} sampled frames survive, {:>3} bit-identical; \
             full-decode boxes matched (IoU >= 0.5, same class): {}/{} = {:.1} %, \
             extra boxes {}, same person count on {}/{} frames",
            c.frames,
            full.len(),
            c.identical_frames,
            c.matched,
            c.boxes,
            share * 100.0,
            c.extra,
            c.same_person_count,
            c.frames
        );
        println!("{line}");
        if name.starts_with("skip_frame") {
            assert_eq!((c.matched, c.extra), (c.boxes, 0), "{line}");
            assert!(
                c.frames < full.len(),
                "{name} must skip some sampled frames"
            );
        } else {
            // The loop filter changes pictures, not what is in them: most boxes stay.
            assert!(share >= 0.8, "{line}");
            assert!(c.frames > 0);
        }
    }
    assert!(full_dets.values().map(Vec::len).sum::<usize>() > 100);
}
