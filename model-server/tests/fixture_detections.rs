//! The real `model-server` with the in-repo demo detector on the in-repo synthetic
//! footage (no shared assets needed): the three bright boxes of frame 25 come back as
//! three `person` detections at their places; a dark frame gives none.

mod common;

use std::path::PathBuf;

use common::{Env, Server};
use framebus_testkit::{assets, ffmpeg, fixtures};
use proto_schema::message::{FrameMeta, FrameRef, InferenceRequest};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::PROTOCOL_VERSION;
use shm_ring::RingWriter;

/// Publishes `nv12` into ring `name` and asks the server to run the model on it.
fn infer(server: &Server, name: &str, nv12: &[u8]) -> Vec<proto_schema::message::Detection> {
    let (w, h) = fixtures::BOXES_SIZE;
    let g = FrameGeometry::packed(w, h, PixelFormat::Nv12).unwrap();
    let mut writer = RingWriter::builder(name)
        .dir(&server.rings)
        .slots(2)
        .geometry(g)
        .create()
        .expect("ring created");
    let mut slot = writer.begin_write();
    slot.data_mut().copy_from_slice(nv12);
    let info = slot.publish(0, 0);
    let req = InferenceRequest {
        v: PROTOCOL_VERSION,
        id: 1,
        camera_id: name.to_owned(),
        model_id: server.model_id.clone(),
        frame: FrameRef {
            ring: name.to_owned(),
            generation: writer.generation(),
            slot: info.slot,
            seq: info.seq,
        },
        meta: FrameMeta::from_geometry(info.frame_id, &g, info.capture_ts_ns),
        sent_ts_ns: 0,
        deadline_ts_ns: None,
    };
    let r = server.client().infer(&req);
    assert!(r.error.is_none(), "inference failed: {:?}", r.error);
    r.detections
}

#[test]
fn demo_detector_finds_the_fixture_boxes() {
    let (Some(()), Some(ort_dylib)) = (ffmpeg::ffmpeg_cli(), assets::require_ort()) else {
        return;
    };
    let env = Env {
        assets: fixtures::dir(),
        ort_dylib,
        python: PathBuf::new(),
    };
    let server = Server::start(&env, &fixtures::demo_model(), &[]);
    let frame = ffmpeg::decode_frame(&fixtures::boxes_video(), 25, "nv12");
    let mut got = infer(&server, "boxes", &frame);
    got.retain(|d| d.confidence >= 0.5);
    got.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    // Frame 25 (t = 1 s): boxes at x 26..70 (y 60..180), 287..335 (y 120..248) and
    // 390..430 (y 200..310) in the 640x360 frame (see testkit/fixtures/make_fixtures.sh).
    let want = [
        [26.0, 60.0, 70.0, 180.0],
        [287.0, 120.0, 335.0, 248.0],
        [390.0, 200.0, 430.0, 310.0],
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    let (w, h) = (640.0, 360.0);
    // The demo detector works on 16-pixel cells of its 320x320 input: one cell is 32
    // frame pixels here, so a box centre may land up to half a cell off the box.
    let m = 16.0;
    for (d, b) in got.iter().zip(want) {
        assert_eq!(d.class_id, fixtures::DEMO_CLASS_ID, "{d:?}");
        assert_eq!(d.class_name, "person");
        let cx = (d.bbox[0] + d.bbox[2]) / 2.0 * w;
        let cy = (d.bbox[1] + d.bbox[3]) / 2.0 * h;
        assert!(
            (b[0] - m..=b[2] + m).contains(&cx) && (b[1] - m..=b[3] + m).contains(&cy),
            "detection {d:?} (centre {cx:.0},{cy:.0}) is not on box {b:?}"
        );
    }

    // The same frame with every box painted dark: nothing to find.
    let mut dark = frame.clone();
    let luma = 640 * 360;
    dark[..luma].fill(0x20);
    let none = infer(&server, "dark", &dark);
    assert!(
        none.iter().all(|d| d.confidence < 0.5),
        "dark frame: {none:#?}"
    );
}
