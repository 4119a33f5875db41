//! The contract shared by frame-kernel, model-server and core-agent: wire messages and
//! their framing, the error codes, pixel formats and clip segment records. Sans-IO: the
//! shared-memory ring that carries the frames is the `shm-ring` crate.
//! `docs/protocol.md` and `docs/ring-format.md` are the human spec of the same contract.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod calibration;
pub mod coco;
pub mod error;
pub mod exit;
pub mod framing;
pub mod message;
pub mod name;
pub mod onnx_sniff;
pub mod pixel;
pub mod redact;
pub mod segment;
pub mod text;
pub mod time;

/// Version of the wire protocol carried in every message as `"v"`.
pub const PROTOCOL_VERSION: u16 = 1;
