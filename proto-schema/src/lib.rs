//! The contract shared by frame-kernel, model-server and core-agent: wire messages and
//! their framing, the error codes, and the shared-memory ring (layout, writer, reader).
//! `docs/protocol.md` and `docs/ring-format.md` are the human spec of the same contract.

pub mod calibration;
pub mod coco;
pub mod error;
pub mod exit;
pub mod framing;
pub mod message;
pub mod onnx_sniff;
pub mod owned_dir;
pub mod pixel;
pub mod redact;
pub mod ring;
pub mod segment;

/// Version of the wire protocol carried in every message as `"v"`.
pub const PROTOCOL_VERSION: u16 = 1;
