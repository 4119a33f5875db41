//! The wire messages and their validating decoders.
//!
//! Every message is one JSON object tagged by `"type"` that carries the protocol version
//! `"v"` and a request id `"id"` (see `docs/protocol.md` for the full spec with examples).
//! Clients send [`Request`]s, servers answer with [`Response`]s carrying the same `id`.
//!
//! Untrusted bytes go through [`decode_request`] / [`decode_response`], never through plain
//! `serde_json`: they check the version before the body, reject unknown fields, name the
//! offending field, apply the semantic limits, and recover the request id so the error
//! response can carry it.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorBody, ErrorCode};
use crate::pixel::{FrameGeometry, PixelFormat, MAX_DIMENSION, MIN_DIMENSION};
use crate::PROTOCOL_VERSION;

/// Longest camera, model or ring name, in bytes.
pub use crate::name::MAX_NAME_LEN;
/// Largest accepted row stride in a [`FrameMeta`], in bytes (room for 8192 RGB pixels plus
/// alignment padding).
pub const MAX_STRIDE: u32 = 4 * MAX_DIMENSION;
/// Longest class name in a [`Detection`], in bytes.
pub const MAX_CLASS_NAME_LEN: usize = 128;
/// The latency stages reported in [`StatsReport::latency_us`], in pipeline order.
pub const LATENCY_STAGES: [&str; 5] = ["queue", "preprocess", "inference", "postprocess", "total"];

/// Whether `name` is a valid camera, model or ring name (the rule of
/// [`crate::name::validate`]).
pub fn is_valid_name(name: &str) -> bool {
    crate::name::validate(name).is_ok()
}

/// Which ring slot holds the frame, and which version of it the client means.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameRef {
    /// Ring name (the camera's ring, a file `<ring_dir>/<ring>.ring`); name rule of
    /// [`is_valid_name`].
    pub ring: String,
    /// Ring generation read from the ring header; changes when the ring is recreated.
    pub generation: u64,
    /// Slot index, `0..slots`.
    pub slot: u32,
    /// The slot's (even) sequence word when the client saw the frame; the server reads the
    /// slot only if it still holds this sequence, otherwise it answers `stale_frame`.
    pub seq: u64,
}

/// What the client believes the referenced frame looks like; the server checks it against
/// the ring's geometry (`geometry_mismatch` when it differs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Frame id assigned by the ring writer (monotonic per ring generation).
    pub frame_id: u64,
    /// Width in pixels, `1..=8192` (even for NV12/I420).
    pub width: u32,
    /// Height in pixels, `1..=8192` (even for NV12/I420).
    pub height: u32,
    /// Pixel format.
    pub format: PixelFormat,
    /// Row stride of each plane in bytes; 0 for planes the format does not use.
    pub strides: [u32; 3],
    /// Capture time as published in the ring slot, CLOCK_REALTIME (Unix epoch) nanoseconds.
    pub capture_ts_ns: u64,
}

impl FrameMeta {
    /// The metadata of frame `frame_id` laid out as `geometry`.
    pub fn from_geometry(frame_id: u64, geometry: &FrameGeometry, capture_ts_ns: u64) -> Self {
        FrameMeta {
            frame_id,
            width: geometry.width,
            height: geometry.height,
            format: geometry.format,
            strides: geometry.strides,
            capture_ts_ns,
        }
    }

    /// Whether size, format and strides equal the ring's geometry.
    pub fn matches_geometry(&self, geometry: &FrameGeometry) -> bool {
        self.width == geometry.width
            && self.height == geometry.height
            && self.format == geometry.format
            && self.strides == geometry.strides
    }

    fn validate(&self) -> Result<(), String> {
        let range = MIN_DIMENSION..=MAX_DIMENSION;
        if !range.contains(&self.width) || !range.contains(&self.height) {
            return Err(format!(
                "meta: frame size {}x{} out of range (each side must be {MIN_DIMENSION}..={MAX_DIMENSION})",
                self.width, self.height
            ));
        }
        if self.format.needs_even_dimensions()
            && (!self.width.is_multiple_of(2) || !self.height.is_multiple_of(2))
        {
            return Err(format!(
                "meta: {} needs even width and height, got {}x{}",
                self.format, self.width, self.height
            ));
        }
        for (plane, &stride) in self.strides.iter().enumerate() {
            match self.format.plane_extent(plane, self.width, self.height) {
                Some((row_bytes, _)) if stride < row_bytes || stride > MAX_STRIDE => {
                    return Err(format!(
                        "meta.strides[{plane}]: {stride} outside {row_bytes}..={MAX_STRIDE} \
                         for {} at width {}",
                        self.format, self.width
                    ));
                }
                None if stride != 0 => {
                    return Err(format!(
                        "meta.strides[{plane}]: {} has no plane {plane}, stride must be 0, got {stride}",
                        self.format
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `"type": "infer"`: run the model on one frame of a ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InferenceRequest {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u16,
    /// Request id chosen by the client, echoed in the response.
    pub id: u64,
    /// Camera the frame comes from (name rule).
    pub camera_id: String,
    /// Model to run (name rule); must be the model this server serves.
    pub model_id: String,
    /// Where the frame is.
    pub frame: FrameRef,
    /// What the frame is.
    pub meta: FrameMeta,
    /// When the client sent the request, CLOCK_MONOTONIC nanoseconds.
    pub sent_ts_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds after which the result is useless (`deadline_exceeded`);
    /// `null`/absent means no deadline.
    #[serde(default)]
    pub deadline_ts_ns: Option<u64>,
}

impl InferenceRequest {
    fn validate(&self) -> Result<(), String> {
        check_name("camera_id", &self.camera_id)?;
        check_name("model_id", &self.model_id)?;
        check_name("frame.ring", &self.frame.ring)?;
        self.meta.validate()
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into the model's class list.
    pub class_id: u32,
    /// Human-readable class name (`"person"`), at most [`MAX_CLASS_NAME_LEN`] bytes.
    pub class_name: String,
    /// Score in `0.0..=1.0`.
    pub confidence: f32,
    /// Box `[x1, y1, x2, y2]` normalised to the frame size: each in `0.0..=1.0`,
    /// `x1 <= x2`, `y1 <= y2`, origin top-left.
    pub bbox: [f32; 4],
}

impl Detection {
    fn validate(&self, index: usize) -> Result<(), String> {
        if self.class_name.len() > MAX_CLASS_NAME_LEN {
            return Err(format!(
                "detections[{index}].class_name: longer than {MAX_CLASS_NAME_LEN} bytes"
            ));
        }
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(format!(
                "detections[{index}].confidence: {} outside 0..=1",
                self.confidence
            ));
        }
        let [x1, y1, x2, y2] = self.bbox;
        if !self.bbox.iter().all(|c| (0.0..=1.0).contains(c)) || x1 > x2 || y1 > y2 {
            return Err(format!(
                "detections[{index}].bbox: {:?} is not a normalised [x1, y1, x2, y2] box",
                self.bbox
            ));
        }
        Ok(())
    }
}

/// Where the time of one request went, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timings {
    /// From receipt of the request to the start of preprocessing (waiting for a batch and
    /// a free model instance).
    pub queue_us: u64,
    /// Reading the frame from the ring, colour conversion, resize, normalisation.
    pub preprocess_us: u64,
    /// The model run (of the whole batch).
    pub inference_us: u64,
    /// Decoding outputs, non-maximum suppression.
    pub postprocess_us: u64,
    /// From receipt of the request to the response being ready to send.
    pub total_us: u64,
    /// Number of frames in the batch this request ran in (0 if it never ran).
    pub batch_size: u32,
}

/// `"type": "infer_result"`: the answer to an [`InferenceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResponse {
    /// Protocol version.
    pub v: u16,
    /// The request's id.
    pub id: u64,
    /// The request's model id.
    pub model_id: String,
    /// The request's camera id.
    pub camera_id: String,
    /// The request's `meta.frame_id`.
    pub frame_id: u64,
    /// Detections after thresholding and NMS; empty when `error` is set.
    pub detections: Vec<Detection>,
    /// Where the time went (zeros for stages never reached).
    pub timings: Timings,
    /// Why the request failed; `null` on success.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

impl InferenceResponse {
    /// A failed response to `request`: no detections, zero timings.
    pub fn failure(request: &InferenceRequest, error: ErrorBody) -> Self {
        InferenceResponse {
            v: PROTOCOL_VERSION,
            id: request.id,
            model_id: request.model_id.clone(),
            camera_id: request.camera_id.clone(),
            frame_id: request.meta.frame_id,
            detections: Vec::new(),
            timings: Timings::default(),
            error: Some(error),
        }
    }

    fn validate(&self) -> Result<(), String> {
        check_name("camera_id", &self.camera_id)?;
        check_name("model_id", &self.model_id)?;
        if self.error.is_some() && !self.detections.is_empty() {
            return Err("detections: must be empty when error is set".to_owned());
        }
        for (i, d) in self.detections.iter().enumerate() {
            d.validate(i)?;
        }
        Ok(())
    }
}

/// Life-cycle state of a model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Loading the model; inference requests get `model_unavailable`.
    Starting,
    /// Serving requests.
    Ready,
    /// Serving, but some model instances failed; capacity is reduced.
    Degraded,
    /// Shutting down: finishing queued work, new requests get `shutting_down`.
    Draining,
}

/// `"type": "status"`: what a server is and how it is configured right now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusReport {
    /// Protocol version.
    pub v: u16,
    /// The `get_status` request's id.
    pub id: u64,
    /// Life-cycle state.
    pub state: ServerState,
    /// The model this server serves (name rule).
    pub model_id: String,
    /// Path of the model file.
    pub model_path: String,
    /// Model family that selects pre/post-processing, e.g. `"yolov8"`, `"yolox"`.
    pub family: String,
    /// ONNX Runtime execution provider in use, e.g. `"cpu"`, `"cuda"`.
    pub provider: String,
    /// Model instances (sessions) running in parallel.
    pub instances: u32,
    /// Model input size `[width, height]` in pixels.
    pub input: [u32; 2],
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Server process id.
    pub pid: u32,
    /// Server software version (crate version).
    pub server_version: String,
    /// Open client connections.
    pub connections: u32,
    /// Connection limit; further connections wait or are refused.
    pub max_connections: u32,
    /// Requests waiting in the queue now.
    pub queue_depth: u32,
    /// Queue capacity; a request arriving at a full queue gets `overloaded`.
    pub queue_capacity: u32,
    /// Largest batch the server forms.
    pub max_batch: u32,
    /// Largest frame (payload bytes) the server accepts.
    pub max_frame: u32,
    /// How threads x instances x batch were chosen (absent from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Box<crate::calibration::Calibration>>,
}

/// Latency distribution of one stage, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples (all other fields are 0 when this is 0).
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean, rounded.
    pub mean: u64,
}

/// `"type": "stats"`: counters and latency distributions since the server started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Protocol version.
    pub v: u16,
    /// The `get_stats` request's id.
    pub id: u64,
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Inference requests received (including failed ones).
    pub requests: u64,
    /// Inference requests answered without error.
    pub ok: u64,
    /// Failed requests per error code; codes that never occurred are absent.
    pub errors_by_code: BTreeMap<ErrorCode, u64>,
    /// Inference requests per camera id.
    pub per_camera: BTreeMap<String, u64>,
    /// Latency per stage, keyed by the names in [`LATENCY_STAGES`]; stages without samples
    /// may be absent.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Per camera id, inference requests not served because of load (answered
    /// `overloaded` or `deadline_exceeded`); cameras without any are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shed_per_camera: BTreeMap<String, u64>,
}

impl StatsReport {
    fn validate(&self) -> Result<(), String> {
        for camera in self.per_camera.keys().chain(self.shed_per_camera.keys()) {
            check_name("per_camera", camera)?;
        }
        for (stage, p) in &self.latency_us {
            if !LATENCY_STAGES.contains(&stage.as_str()) {
                return Err(format!(
                    "latency_us: unknown stage {stage:?}, expected one of {LATENCY_STAGES:?}"
                ));
            }
            if !(p.min <= p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max) {
                return Err(format!(
                    "latency_us.{stage}: percentiles not ordered min <= p50 <= p90 <= p99 <= max"
                ));
            }
        }
        Ok(())
    }
}

/// A message from a client to a server, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// `"infer"`: run the model on a frame; answered by [`Response::InferResult`].
    Infer(InferenceRequest),
    /// `"ping"`: liveness check; answered by [`Response::Pong`].
    Ping {
        /// Protocol version.
        v: u16,
        /// Request id.
        id: u64,
    },
    /// `"get_status"`: answered by [`Response::Status`].
    GetStatus {
        /// Protocol version.
        v: u16,
        /// Request id.
        id: u64,
    },
    /// `"get_stats"`: answered by [`Response::Stats`].
    GetStats {
        /// Protocol version.
        v: u16,
        /// Request id.
        id: u64,
    },
    /// `"shutdown"`: drain and exit; answered by [`Response::ShutdownAck`] before draining.
    Shutdown {
        /// Protocol version.
        v: u16,
        /// Request id.
        id: u64,
    },
}

impl Request {
    /// The `"type"` values of requests.
    pub const TYPES: [&'static str; 5] = ["infer", "ping", "get_status", "get_stats", "shutdown"];

    /// `{"type":"ping"}` at the current version.
    pub fn ping(id: u64) -> Self {
        Request::Ping {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// `{"type":"get_status"}` at the current version.
    pub fn get_status(id: u64) -> Self {
        Request::GetStatus {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// `{"type":"get_stats"}` at the current version.
    pub fn get_stats(id: u64) -> Self {
        Request::GetStats {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// `{"type":"shutdown"}` at the current version.
    pub fn shutdown(id: u64) -> Self {
        Request::Shutdown {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// The request id.
    pub fn id(&self) -> u64 {
        match self {
            Request::Infer(r) => r.id,
            Request::Ping { id, .. }
            | Request::GetStatus { id, .. }
            | Request::GetStats { id, .. }
            | Request::Shutdown { id, .. } => *id,
        }
    }

    /// The protocol version the message claims.
    pub fn version(&self) -> u16 {
        match self {
            Request::Infer(r) => r.v,
            Request::Ping { v, .. }
            | Request::GetStatus { v, .. }
            | Request::GetStats { v, .. }
            | Request::Shutdown { v, .. } => *v,
        }
    }

    /// The `"type"` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::Infer(_) => "infer",
            Request::Ping { .. } => "ping",
            Request::GetStatus { .. } => "get_status",
            Request::GetStats { .. } => "get_stats",
            Request::Shutdown { .. } => "shutdown",
        }
    }

    /// The checks [`decode_request`] applies after parsing: version and semantic limits.
    /// Senders may call it to catch their own bugs before sending.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        check_version(self.version())?;
        match self {
            Request::Infer(r) => r.validate(),
            _ => Ok(()),
        }
        .map_err(|m| ErrorBody::new(ErrorCode::InvalidMessage, m))
    }
}

/// A message from a server to a client, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// `"infer_result"`: the result (or typed failure) of an `infer` request.
    InferResult(InferenceResponse),
    /// `"pong"`: answer to `ping`.
    Pong {
        /// Protocol version.
        v: u16,
        /// The ping's id.
        id: u64,
    },
    /// `"status"`: answer to `get_status`.
    Status(StatusReport),
    /// `"stats"`: answer to `get_stats`.
    Stats(StatsReport),
    /// `"shutdown_ack"`: the server accepted `shutdown` and starts draining.
    ShutdownAck {
        /// Protocol version.
        v: u16,
        /// The shutdown request's id.
        id: u64,
    },
    /// `"error"`: the request could not be parsed or is of an unknown type/version, so no
    /// typed answer is possible.
    Error {
        /// The responder's protocol version.
        v: u16,
        /// The request's id if it could be recovered, else `null`.
        id: Option<u64>,
        /// What was wrong.
        error: ErrorBody,
    },
}

impl Response {
    /// The `"type"` values of responses.
    pub const TYPES: [&'static str; 6] = [
        "infer_result",
        "pong",
        "status",
        "stats",
        "shutdown_ack",
        "error",
    ];

    /// `{"type":"pong"}` at the current version.
    pub fn pong(id: u64) -> Self {
        Response::Pong {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// `{"type":"shutdown_ack"}` at the current version.
    pub fn shutdown_ack(id: u64) -> Self {
        Response::ShutdownAck {
            v: PROTOCOL_VERSION,
            id,
        }
    }

    /// `{"type":"error"}` at the current version.
    pub fn error(id: Option<u64>, error: ErrorBody) -> Self {
        Response::Error {
            v: PROTOCOL_VERSION,
            id,
            error,
        }
    }

    /// The id of the request this answers; `None` only for an `error` whose request id could
    /// not be recovered.
    pub fn id(&self) -> Option<u64> {
        match self {
            Response::InferResult(r) => Some(r.id),
            Response::Status(r) => Some(r.id),
            Response::Stats(r) => Some(r.id),
            Response::Pong { id, .. } | Response::ShutdownAck { id, .. } => Some(*id),
            Response::Error { id, .. } => *id,
        }
    }

    /// The protocol version the message claims.
    pub fn version(&self) -> u16 {
        match self {
            Response::InferResult(r) => r.v,
            Response::Status(r) => r.v,
            Response::Stats(r) => r.v,
            Response::Pong { v, .. }
            | Response::ShutdownAck { v, .. }
            | Response::Error { v, .. } => *v,
        }
    }

    /// The `"type"` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Response::InferResult(_) => "infer_result",
            Response::Pong { .. } => "pong",
            Response::Status(_) => "status",
            Response::Stats(_) => "stats",
            Response::ShutdownAck { .. } => "shutdown_ack",
            Response::Error { .. } => "error",
        }
    }

    /// The error this response reports, if any (an `error` message or a failed
    /// `infer_result`).
    pub fn error_body(&self) -> Option<&ErrorBody> {
        match self {
            Response::InferResult(r) => r.error.as_ref(),
            Response::Error { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The checks [`decode_response`] applies after parsing: version and semantic limits.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        check_version(self.version())?;
        match self {
            Response::InferResult(r) => r.validate(),
            Response::Status(r) => check_name("model_id", &r.model_id),
            Response::Stats(r) => r.validate(),
            _ => Ok(()),
        }
        .map_err(|m| ErrorBody::new(ErrorCode::InvalidMessage, m))
    }
}

/// A message that failed to decode, with the request id when it could be recovered.
///
/// A server answers it with [`DecodeError::into_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message{} rejected: {error}", id.map(|i| format!(" {i}")).unwrap_or_default())]
pub struct DecodeError {
    /// The message's `"id"` if it was present and an unsigned integer.
    pub id: Option<u64>,
    /// Code and human-readable reason (names the offending field).
    pub error: ErrorBody,
}

impl DecodeError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            error: ErrorBody::new(code, message),
        }
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.error.code
    }

    /// The `{"type":"error"}` response that reports this failure to the sender.
    pub fn into_response(self) -> Response {
        Response::error(self.id, self.error)
    }
}

impl From<DecodeError> for ErrorBody {
    fn from(e: DecodeError) -> Self {
        e.error
    }
}

/// Decodes and validates one request payload (the JSON bytes of a frame, without the
/// length prefix).
///
/// Checks, in order: UTF-8 and JSON syntax (`malformed_frame`); a JSON object
/// (`invalid_message`); `"v"` ([`PROTOCOL_VERSION`], else `unsupported_version`, checked
/// before the body so a newer version's fields are not reported as invalid); `"type"`
/// (`unknown_message_type`); fields present, well-typed and known (`invalid_message`
/// naming the field path); then names, dimensions and strides (`invalid_message`).
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    let (envelope, text) = Envelope::read(payload)?;
    let id = envelope.id;
    let request = match envelope.ty.as_str() {
        "infer" => Request::Infer(parse_body(text, id)?),
        "ping" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Request::Ping { v, id }
        }
        "get_status" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Request::GetStatus { v, id }
        }
        "get_stats" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Request::GetStats { v, id }
        }
        "shutdown" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Request::Shutdown { v, id }
        }
        other => {
            return Err(DecodeError::new(
                id,
                ErrorCode::UnknownMessageType,
                format!(
                    "unknown request type {other:?}, expected one of {:?}",
                    Request::TYPES
                ),
            ))
        }
    };
    request
        .validate()
        .map_err(|error| DecodeError { id, error })?;
    Ok(request)
}

/// Decodes and validates one response payload; the client-side twin of
/// [`decode_request`] with the same checks and codes.
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    let (envelope, text) = Envelope::read(payload)?;
    let id = envelope.id;
    let response = match envelope.ty.as_str() {
        "infer_result" => Response::InferResult(parse_body(text, id)?),
        "pong" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Response::Pong { v, id }
        }
        "status" => Response::Status(parse_body(text, id)?),
        "stats" => Response::Stats(parse_body(text, id)?),
        "shutdown_ack" => {
            let VersionId { v, id } = parse_body(text, id)?;
            Response::ShutdownAck { v, id }
        }
        "error" => {
            let ErrorFields { v, id, error } = parse_body(text, id)?;
            Response::Error { v, id, error }
        }
        other => {
            return Err(DecodeError::new(
                id,
                ErrorCode::UnknownMessageType,
                format!(
                    "unknown response type {other:?}, expected one of {:?}",
                    Response::TYPES
                ),
            ))
        }
    };
    response
        .validate()
        .map_err(|error| DecodeError { id, error })?;
    Ok(response)
}

/// The three fields every message has, read (with everything else skipped) before the
/// body is parsed.
struct Envelope {
    id: Option<u64>,
    ty: String,
}

/// The raw envelope: `Value`s so that wrong types become precise messages, not serde's.
#[derive(Deserialize)]
struct RawEnvelope {
    v: Option<Value>,
    id: Option<Value>,
    #[serde(rename = "type")]
    ty: Option<Value>,
}

impl Envelope {
    fn read(payload: &[u8]) -> Result<(Envelope, &str), DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|e| {
            DecodeError::new(
                None,
                ErrorCode::MalformedFrame,
                format!("payload is not UTF-8: {e}"),
            )
        })?;
        // serde would also read a struct from an array of its fields; messages are objects.
        let is_object = text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        let not_object = || {
            DecodeError::new(
                None,
                ErrorCode::InvalidMessage,
                "message must be a JSON object",
            )
        };
        let raw: RawEnvelope = serde_json::from_str(text).map_err(|e| {
            if !e.is_data() {
                DecodeError::new(
                    None,
                    ErrorCode::MalformedFrame,
                    format!("payload is not JSON: {e}"),
                )
            } else if !is_object {
                not_object()
            } else {
                DecodeError::new(None, ErrorCode::InvalidMessage, e.to_string())
            }
        })?;
        if !is_object {
            return Err(not_object());
        }
        let id = raw.id.as_ref().and_then(Value::as_u64);
        let invalid = |m: String| DecodeError::new(id, ErrorCode::InvalidMessage, m);
        match raw.v {
            None => return Err(invalid("v: missing field `v`".to_owned())),
            Some(v) => match v.as_u64() {
                Some(n) if n == u64::from(PROTOCOL_VERSION) => {}
                Some(n) => {
                    return Err(DecodeError::new(
                        id,
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {n} is not supported; this side speaks version {PROTOCOL_VERSION}"
                        ),
                    ))
                }
                None => {
                    return Err(invalid(format!(
                        "v: expected an unsigned integer protocol version, got {v}"
                    )))
                }
            },
        }
        let ty = match raw.ty {
            None => return Err(invalid("type: missing field `type`".to_owned())),
            Some(Value::String(s)) => s,
            Some(other) => return Err(invalid(format!("type: expected a string, got {other}"))),
        };
        Ok((Envelope { id, ty }, text))
    }
}

/// Body of the messages that carry nothing but version and id.
#[derive(Deserialize)]
struct VersionId {
    v: u16,
    id: u64,
}

/// Body of `{"type":"error"}`.
#[derive(Deserialize)]
struct ErrorFields {
    v: u16,
    #[serde(default)]
    id: Option<u64>,
    error: ErrorBody,
}

/// Parses the body of a message whose envelope was checked: every field must be known
/// (only `"type"` is skipped) and errors name the field path.
fn parse_body<T: DeserializeOwned>(text: &str, id: Option<u64>) -> Result<T, DecodeError> {
    let mut unknown: Option<String> = None;
    let mut note_ignored = |path: serde_ignored::Path<'_>| {
        if unknown.is_none() {
            let path = path.to_string();
            if path != "type" {
                unknown = Some(path);
            }
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    // Valid messages are the common case: parse without path tracking, and parse again
    // with it only to explain a failure.
    let parsed = T::deserialize(serde_ignored::Deserializer::new(&mut de, &mut note_ignored));
    match (parsed, unknown) {
        (Ok(value), None) => Ok(value),
        (Ok(_), Some(path)) => Err(DecodeError::new(
            id,
            ErrorCode::InvalidMessage,
            format!("{path}: unknown field"),
        )),
        (Err(e), _) => Err(DecodeError::new(
            id,
            ErrorCode::InvalidMessage,
            explain::<T>(text).unwrap_or_else(|| e.to_string()),
        )),
    }
}

/// The failure of parsing `text` as `T`, prefixed with the path of the offending field.
fn explain<T: DeserializeOwned>(text: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let e = serde_path_to_error::deserialize::<_, T>(&mut de).err()?;
    let path = e.path().to_string();
    Some(if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    })
}

fn check_version(v: u16) -> Result<(), ErrorBody> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v} is not supported; this side speaks version {PROTOCOL_VERSION}"),
        ))
    }
}

fn check_name(field: &str, value: &str) -> Result<(), String> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{field}: {value:?} is not a valid name (1-{MAX_NAME_LEN} of A-Z a-z 0-9 _ -, \
             starting with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer_json() -> serde_json::Value {
        serde_json::json!({
            "type": "infer", "v": 1, "id": 7, "camera_id": "cam-1", "model_id": "yolov8n",
            "frame": {"ring": "cam-1", "generation": 3, "slot": 2, "seq": 40},
            "meta": {"frame_id": 20, "width": 960, "height": 540, "format": "NV12",
                     "strides": [960, 960, 0], "capture_ts_ns": 1000},
            "sent_ts_ns": 2000, "deadline_ts_ns": null
        })
    }

    fn decode(v: &serde_json::Value) -> Result<Request, DecodeError> {
        decode_request(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn names() {
        for ok in ["a", "cam-1", "Cam_01", "9", &"x".repeat(64)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "a.b",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn decodes_a_valid_infer_request() {
        let r = decode(&infer_json()).unwrap();
        let Request::Infer(r) = r else {
            panic!("not infer")
        };
        assert_eq!(r.id, 7);
        assert_eq!(r.meta.format, PixelFormat::Nv12);
        assert_eq!(r.deadline_ts_ns, None);
    }

    #[test]
    fn absent_optional_field_is_none() {
        let mut j = infer_json();
        j.as_object_mut().unwrap().remove("deadline_ts_ns");
        assert!(decode(&j).is_ok());
    }

    #[test]
    fn syntax_errors_are_malformed_frames() {
        for bad in [&b"{"[..], b"not json", b"{} trailing", b"", b"\xff\xfe{}"] {
            let e = decode_request(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::MalformedFrame, "{bad:?}: {e}");
            assert_eq!(e.id, None);
        }
    }

    #[test]
    fn non_objects_are_invalid_messages() {
        for bad in ["[]", "3", "\"ping\"", "null"] {
            let e = decode_request(bad.as_bytes()).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidMessage, "{bad}: {e}");
        }
    }

    #[test]
    fn version_is_checked_before_the_body() {
        // A future version with fields this side does not know: the version is the error.
        let e = decode_request(br#"{"type":"infer","v":2,"id":9,"tensor":[1,2]}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(e.id, Some(9));
        // ...even when the type is new too.
        let e = decode_request(br#"{"type":"subscribe","v":2,"id":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        let e = decode_request(br#"{"type":"ping","v":"1","id":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage);
        assert!(e.error.message.starts_with("v:"), "{e}");
        let e = decode_request(br#"{"type":"ping","id":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage);
    }

    #[test]
    fn unknown_type_keeps_the_id() {
        let e = decode_request(br#"{"type":"subscribe","v":1,"id":12}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownMessageType);
        assert_eq!(e.id, Some(12));
        assert_eq!(
            e.into_response(),
            Response::error(
                Some(12),
                ErrorBody::new(
                    ErrorCode::UnknownMessageType,
                    "unknown request type \"subscribe\", expected one of \
                     [\"infer\", \"ping\", \"get_status\", \"get_stats\", \"shutdown\"]"
                )
            )
        );
        let e = decode_request(br#"{"v":1,"id":12}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage);
        assert!(e.error.message.contains("type"), "{e}");
    }

    #[test]
    fn field_errors_name_the_path() {
        let mut j = infer_json();
        j["meta"].as_object_mut().unwrap().remove("width");
        let e = decode(&j).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage);
        assert_eq!(e.id, Some(7));
        assert!(
            e.error.message.contains("meta") && e.error.message.contains("width"),
            "{e}"
        );

        let mut j = infer_json();
        j["frame"]["slot"] = "two".into();
        let e = decode(&j).unwrap_err();
        assert!(e.error.message.starts_with("frame.slot:"), "{e}");

        let mut j = infer_json();
        j["meta"]["format"] = "YUYV".into();
        let e = decode(&j).unwrap_err();
        assert!(e.error.message.starts_with("meta.format:"), "{e}");

        let mut j = infer_json();
        j["meta"]["colour"] = "red".into();
        let e = decode(&j).unwrap_err();
        assert_eq!(e.error.message, "meta.colour: unknown field");

        let mut j = infer_json();
        j["id"] = (-1).into();
        let e = decode(&j).unwrap_err();
        assert_eq!(e.id, None);
        assert!(e.error.message.starts_with("id:"), "{e}");
    }

    #[test]
    fn semantic_limits() {
        let cases: [(&str, serde_json::Value, &str); 8] = [
            ("/meta/width", 0.into(), "meta:"),
            ("/meta/height", 8194.into(), "meta:"),
            ("/meta/width", 961.into(), "even"),
            (
                "/meta/strides",
                serde_json::json!([959, 960, 0]),
                "meta.strides[0]",
            ),
            (
                "/meta/strides",
                serde_json::json!([960, 960, 4]),
                "meta.strides[2]",
            ),
            (
                "/meta/strides",
                serde_json::json!([1 << 20, 960, 0]),
                "meta.strides[0]",
            ),
            ("/camera_id", "../etc".into(), "camera_id"),
            ("/frame/ring", "".into(), "frame.ring"),
        ];
        for (pointer, value, expect) in cases {
            let mut j = infer_json();
            *j.pointer_mut(pointer).unwrap() = value;
            let e = decode(&j).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidMessage);
            assert_eq!(e.id, Some(7));
            assert!(e.error.message.contains(expect), "{pointer}: {e}");
        }
    }

    #[test]
    fn control_requests() {
        for (json, want) in [
            (r#"{"type":"ping","v":1,"id":1}"#, Request::ping(1)),
            (
                r#"{"id":2,"type":"get_status","v":1}"#,
                Request::get_status(2),
            ),
            (
                r#"{"type":"get_stats","v":1,"id":3}"#,
                Request::get_stats(3),
            ),
            (r#"{"type":"shutdown","v":1,"id":4}"#, Request::shutdown(4)),
        ] {
            let got = decode_request(json.as_bytes()).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), want);
        }
        let e = decode_request(br#"{"type":"ping","v":1,"id":1,"x":0}"#).unwrap_err();
        assert_eq!(e.error.message, "x: unknown field");
    }

    #[test]
    fn responses_are_validated() {
        let ok = br#"{"type":"infer_result","v":1,"id":7,"model_id":"m","camera_id":"c",
            "frame_id":1,"detections":[{"class_id":0,"class_name":"person","confidence":0.5,
            "bbox":[0.1,0.2,0.3,0.4]}],"timings":{"queue_us":1,"preprocess_us":2,
            "inference_us":3,"postprocess_us":4,"total_us":10,"batch_size":1},"error":null}"#;
        assert!(matches!(
            decode_response(ok).unwrap(),
            Response::InferResult(_)
        ));
        let flipped = String::from_utf8(ok.to_vec())
            .unwrap()
            .replace("[0.1,0.2,0.3,0.4]", "[0.3,0.2,0.1,0.4]");
        let e = decode_response(flipped.as_bytes()).unwrap_err();
        assert!(e.error.message.starts_with("detections[0].bbox"), "{e}");
        let nan = String::from_utf8(ok.to_vec())
            .unwrap()
            .replace("0.5", "null");
        let e = decode_response(nan.as_bytes()).unwrap_err();
        assert!(
            e.error.message.starts_with("detections[0].confidence"),
            "{e}"
        );

        let err =
            br#"{"type":"error","v":1,"id":null,"error":{"code":"malformed_frame","message":"x"}}"#;
        assert_eq!(
            decode_response(err).unwrap(),
            Response::error(None, ErrorBody::new(ErrorCode::MalformedFrame, "x"))
        );
        let e = decode_response(br#"{"type":"ping","v":1,"id":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownMessageType);
    }

    #[test]
    fn meta_matches_geometry() {
        let g = FrameGeometry::packed(960, 540, PixelFormat::Nv12).unwrap();
        let meta = FrameMeta::from_geometry(5, &g, 9);
        assert!(meta.matches_geometry(&g));
        meta.validate().unwrap();
        let other = FrameGeometry::packed(960, 540, PixelFormat::I420).unwrap();
        assert!(!meta.matches_geometry(&other));
    }
}
