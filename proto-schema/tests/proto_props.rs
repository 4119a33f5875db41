//! Property tests of the wire contract: round trips, stream splitting, hostile bytes and
//! the length check that must happen before any payload is read.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proto_schema::error::{ErrorBody, ErrorCode};
use proto_schema::framing::{self, FrameDecoder, FrameError, DEFAULT_MAX_FRAME};
use proto_schema::message::{
    decode_request, decode_response, Detection, FrameMeta, FrameRef, InferenceRequest,
    InferenceResponse, Percentiles, Request, Response, ServerState, StatsReport, StatusReport,
    Timings, LATENCY_STAGES, MAX_STRIDE,
};
use proto_schema::pixel::PixelFormat;
use proto_schema::PROTOCOL_VERSION;

const V: u16 = PROTOCOL_VERSION;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    (error_code(), any::<String>()).prop_map(|(code, message)| ErrorBody { code, message })
}

fn frame_meta() -> impl Strategy<Value = FrameMeta> {
    (
        proptest::sample::select(PixelFormat::ALL.to_vec()),
        1u32..=8192,
        1u32..=8192,
        [0u32..=64, 0u32..=64, 0u32..=64],
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(format, w, h, pad, frame_id, capture_ts_ns)| {
            let (width, height) = if format.needs_even_dimensions() {
                ((w + 1) & !1, (h + 1) & !1)
            } else {
                (w, h)
            };
            let mut strides = [0; 3];
            for (plane, stride) in strides.iter_mut().enumerate() {
                if let Some((row, _)) = format.plane_extent(plane, width, height) {
                    *stride = (row + pad[plane]).min(MAX_STRIDE);
                }
            }
            FrameMeta {
                frame_id,
                width: width.min(8192),
                height: height.min(8192),
                format,
                strides,
                capture_ts_ns,
            }
        })
}

fn infer_request() -> impl Strategy<Value = InferenceRequest> {
    (
        any::<u64>(),
        name(),
        name(),
        (name(), any::<u64>(), any::<u32>(), any::<u64>()),
        frame_meta(),
        any::<u64>(),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(id, camera_id, model_id, (ring, generation, slot, seq), meta, sent, deadline)| {
                InferenceRequest {
                    v: V,
                    id,
                    camera_id,
                    model_id,
                    frame: FrameRef {
                        ring,
                        generation,
                        slot,
                        seq,
                    },
                    meta,
                    sent_ts_ns: sent,
                    deadline_ts_ns: deadline,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => infer_request().prop_map(Request::Infer),
        1 => any::<u64>().prop_map(Request::ping),
        1 => any::<u64>().prop_map(Request::get_status),
        1 => any::<u64>().prop_map(Request::get_stats),
        1 => any::<u64>().prop_map(Request::shutdown),
    ]
}

fn unit() -> impl Strategy<Value = f32> {
    0.0f32..=1.0
}

fn detection() -> impl Strategy<Value = Detection> {
    (
        any::<u32>(),
        "\\PC{0,32}",
        unit(),
        (unit(), unit(), unit(), unit()),
    )
        .prop_map(
            |(class_id, class_name, confidence, (a, b, c, d))| Detection {
                class_id,
                class_name,
                confidence,
                bbox: [a.min(b), c.min(d), a.max(b), c.max(d)],
            },
        )
}

fn timings() -> impl Strategy<Value = Timings> {
    (any::<[u64; 5]>(), any::<u32>()).prop_map(|(t, batch_size)| Timings {
        queue_us: t[0],
        preprocess_us: t[1],
        inference_us: t[2],
        postprocess_us: t[3],
        total_us: t[4],
        batch_size,
    })
}

fn infer_response() -> impl Strategy<Value = InferenceResponse> {
    (
        (any::<u64>(), name(), name(), any::<u64>()),
        vec(detection(), 0..12),
        timings(),
        option::of(error_body()),
    )
        .prop_map(
            |((id, model_id, camera_id, frame_id), detections, timings, error)| InferenceResponse {
                v: V,
                id,
                model_id,
                camera_id,
                frame_id,
                detections: if error.is_some() {
                    Vec::new()
                } else {
                    detections
                },
                timings,
                error,
            },
        )
}

fn status() -> impl Strategy<Value = StatusReport> {
    (
        (any::<u64>(), 0usize..4, name(), any::<String>()),
        (
            "[a-z0-9]{1,12}",
            "[a-z]{1,8}",
            any::<u32>(),
            any::<[u32; 2]>(),
        ),
        (any::<u64>(), any::<u32>(), "[0-9.]{1,10}"),
        any::<[u32; 7]>(),
    )
        .prop_map(
            |(
                (id, state, model_id, model_path),
                (family, provider, instances, input),
                (uptime_s, pid, server_version),
                n,
            )| {
                StatusReport {
                    v: V,
                    id,
                    state: [
                        ServerState::Starting,
                        ServerState::Ready,
                        ServerState::Degraded,
                        ServerState::Draining,
                    ][state],
                    model_id,
                    model_path,
                    family,
                    provider,
                    instances,
                    input,
                    uptime_s,
                    pid,
                    server_version,
                    connections: n[0],
                    max_connections: n[1],
                    queue_depth: n[2],
                    queue_capacity: n[3],
                    max_batch: n[4],
                    max_frame: n[5].max(n[6]),
                    calibration: n[0]
                        .is_multiple_of(2)
                        .then(|| Box::new(calibration(n[1], n[2]))),
                }
            },
        )
}

fn calibration(a: u32, b: u32) -> proto_schema::calibration::Calibration {
    proto_schema::calibration::Calibration {
        how: "calibrated".into(),
        reason: String::new(),
        threads: a,
        instances: b,
        max_batch: 1,
        spin: a.is_multiple_of(2),
        cores: 2,
        elapsed_ms: u64::from(b),
        runs: vec![proto_schema::calibration::CalibrationRun {
            threads: a,
            instances: b,
            batch: 1,
            images: u64::from(a) * 3,
            wall_us: 1_000_000,
            cpu_us: u64::from(b) * 7,
        }],
    }
}

fn percentiles() -> impl Strategy<Value = Percentiles> {
    (any::<u64>(), any::<[u64; 5]>(), any::<u64>()).prop_map(|(count, mut q, mean)| {
        q.sort_unstable();
        Percentiles {
            count,
            min: q[0],
            p50: q[1],
            p90: q[2],
            p99: q[3],
            max: q[4],
            mean,
        }
    })
}

fn stats() -> impl Strategy<Value = StatsReport> {
    (
        any::<[u64; 4]>(),
        btree_map(error_code(), any::<u64>(), 0..6),
        btree_map(name(), any::<u64>(), 0..6),
        btree_map(
            proptest::sample::select(LATENCY_STAGES.to_vec()).prop_map(str::to_owned),
            percentiles(),
            0..5,
        ),
    )
        .prop_map(|(n, errors_by_code, per_camera, latency_us)| StatsReport {
            v: V,
            id: n[0],
            uptime_s: n[1],
            requests: n[2],
            ok: n[3],
            errors_by_code,
            shed_per_camera: per_camera.iter().map(|(k, v)| (k.clone(), v / 2)).collect(),
            per_camera,
            latency_us,
        })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        4 => infer_response().prop_map(Response::InferResult),
        1 => any::<u64>().prop_map(Response::pong),
        1 => status().prop_map(Response::Status),
        1 => stats().prop_map(Response::Stats),
        1 => any::<u64>().prop_map(Response::shutdown_ack),
        1 => (option::of(any::<u64>()), error_body()).prop_map(|(id, e)| Response::error(id, e)),
    ]
}

/// Encodes messages back to back into one byte stream.
fn stream<T: serde::Serialize>(msgs: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        framing::encode_into(m, DEFAULT_MAX_FRAME, &mut out).unwrap();
    }
    out
}

/// Feeds `bytes` to a decoder in the given chunks and decodes every frame as requests.
fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Request> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        d.extend(&bytes[start..end]);
        start = end;
        while let Some(frame) = d.next().unwrap() {
            out.push(decode_request(&frame).unwrap());
        }
    }
    d.finish().unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_round_trip(req in request()) {
        let bytes = framing::encode(&req, DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.extend(&bytes);
        let payload = d.next().unwrap().unwrap();
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(decode_request(&payload).unwrap(), req.clone());
        // The untyped serde path agrees with the validating decoder.
        prop_assert_eq!(serde_json::from_slice::<Request>(&payload).unwrap(), req);
    }

    #[test]
    fn response_round_trip(resp in response()) {
        let bytes = framing::encode(&resp, DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.extend(&bytes);
        let payload = d.next().unwrap().unwrap();
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(decode_response(&payload).unwrap(), resp);
    }

    #[test]
    fn stream_split_at_every_byte_boundary(msgs in vec(request(), 1..4)) {
        let bytes = stream(&msgs);
        // Two chunks, cut at every position.
        for cut in 0..=bytes.len() {
            prop_assert_eq!(&decode_chunked(&bytes, &[cut]), &msgs);
        }
        // One byte at a time: every position is a boundary at once.
        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(&decode_chunked(&bytes, &every), &msgs);
    }

    #[test]
    fn stream_random_chunking(msgs in vec(request(), 1..8), seeds in vec(any::<usize>(), 0..40)) {
        let bytes = stream(&msgs);
        let mut cuts: Vec<usize> = seeds.iter().map(|s| s % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_chunked(&bytes, &cuts), msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
        let mut d = FrameDecoder::new(512);
        for piece in bytes.chunks(chunk) {
            d.extend(piece);
            loop {
                match d.next() {
                    Ok(Some(frame)) => {
                        let _ = decode_request(&frame);
                        let _ = decode_response(&frame);
                    }
                    Ok(None) => break,
                    Err(FrameError::ZeroLength) => continue,
                    Err(e) => {
                        let too_large = matches!(e, FrameError::TooLarge { .. });
                        prop_assert!(too_large, "{}", e);
                        return Ok(());
                    }
                }
            }
        }
        let _ = d.finish();
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
    }

    #[test]
    fn framed_garbage_never_panics(payloads in vec(prop_oneof![
        vec(any::<u8>(), 0..200),
        "\\{(\"(type|v|id|meta|frame|error|detections)\":(\"[a-z_]{0,12}\"|-?[0-9]{1,22}|\\[\\]|\\{\\}|null|true|1e999),?){0,6}\\}"
            .prop_map(String::into_bytes),
    ], 0..8)) {
        let mut bytes = Vec::new();
        for p in &payloads {
            bytes.extend_from_slice(&(p.len() as u32).to_be_bytes());
            bytes.extend_from_slice(p);
        }
        let mut d = FrameDecoder::new(512);
        d.extend(&bytes);
        let mut frames = 0;
        loop {
            match d.next() {
                Ok(Some(frame)) => {
                    frames += 1;
                    let req = decode_request(&frame);
                    let resp = decode_response(&frame);
                    // Anything accepted is valid.
                    if let Ok(r) = req { r.validate().unwrap(); }
                    if let Ok(r) = resp { r.validate().unwrap(); }
                }
                Ok(None) => break,
                Err(FrameError::ZeroLength) => frames += 1,
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
        prop_assert_eq!(frames, payloads.len());
        prop_assert!(d.finish().is_ok());
    }

    #[test]
    fn mutated_messages_never_panic(req in infer_request(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut payload = serde_json::to_vec(&Request::Infer(req)).unwrap();
        let i = pos % payload.len();
        payload[i] = byte;
        if let Ok(decoded) = decode_request(&payload) {
            // Whatever got through is valid and survives another round trip.
            decoded.validate().unwrap();
            let again = serde_json::to_vec(&decoded).unwrap();
            prop_assert_eq!(decode_request(&again).unwrap(), decoded);
        }
    }

    #[test]
    fn invalid_fields_are_reported_with_the_id(req in infer_request(), which in 0usize..5) {
        let id = req.id;
        let mut j = serde_json::to_value(Request::Infer(req)).unwrap();
        match which {
            0 => j["meta"]["width"] = 0.into(),
            1 => j["meta"]["height"] = 8193.into(),
            2 => j["camera_id"] = "bad/name".into(),
            3 => { j["meta"].as_object_mut().unwrap().remove("format"); }
            _ => j["frame"]["extra"] = true.into(),
        }
        let e = decode_request(&serde_json::to_vec(&j).unwrap()).unwrap_err();
        prop_assert_eq!(e.code(), ErrorCode::InvalidMessage);
        prop_assert_eq!(e.id, Some(id));
    }

    #[test]
    fn other_versions_are_rejected_before_the_body(
        v in any::<u64>().prop_filter("not ours", |v| *v != u64::from(V)),
        id in any::<u64>(),
        ty in "[a-z_]{1,12}",
        junk in btree_map("[a-z]{1,6}", any::<i64>(), 0..4),
    ) {
        let mut obj: BTreeMap<String, serde_json::Value> =
            junk.into_iter().map(|(k, x)| (k, x.into())).collect();
        obj.insert("type".into(), ty.into());
        obj.insert("v".into(), v.into());
        obj.insert("id".into(), id.into());
        let payload = serde_json::to_vec(&obj).unwrap();
        let e = decode_request(&payload).unwrap_err();
        prop_assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        prop_assert_eq!(e.id, Some(id));
        let e = decode_response(&payload).unwrap_err();
        prop_assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn oversized_lengths_rejected_without_reading_the_payload(
        max in 1usize..1_000_000,
        excess in 1u64..=u64::from(u32::MAX),
        tail in vec(any::<u8>(), 0..64),
    ) {
        let len = (max as u64 + excess).min(u64::from(u32::MAX)) as u32;
        prop_assume!(len as usize > max);
        let bytes = [&len.to_be_bytes()[..], &tail].concat();

        // The prefix alone decides: no payload byte is needed to refuse the frame.
        let e = framing::check_len(len.to_be_bytes(), max).unwrap_err();
        let exact = matches!(e, FrameError::TooLarge { len: l, max: m } if l == len as usize && m == max);
        prop_assert!(exact, "{}", e);

        let mut d = FrameDecoder::new(max);
        d.extend(&bytes);
        let rejected = matches!(d.next(), Err(FrameError::TooLarge { .. }));
        prop_assert!(rejected);
        prop_assert!(d.buffer_mut().capacity() < bytes.len() + 64);
    }
}
