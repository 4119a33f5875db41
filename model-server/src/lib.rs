//! `model-server`: one ONNX model loaded once, answering inference requests from many
//! cameras over a Unix socket.
//!
//! Request path: [`server`] reads a length-prefixed request, [`frames`] validates its frame
//! reference against the ring directory, [`batcher`] queues it in its camera's lane (fair
//! across cameras, bounded, shedding past saturation) for one of the model instances
//! ([`worker`]), which letterboxes the frame straight from the ring mapping
//! ([`preprocess`]), runs the [`session`], decodes and filters boxes ([`postprocess`]) and
//! answers; [`stats`] records every outcome. [`app`] wires it together in start-up and
//! shutdown order; [`config`] holds the settings; [`calibrate`] chooses threads x
//! instances (x batch) at load.

pub mod app;
pub mod batcher;
pub mod calibrate;
pub mod calibration_cache;
pub mod config;
pub mod family;
pub mod frames;
pub mod postprocess;
pub mod preprocess;
pub mod server;
pub mod session;
pub mod stats;
pub mod wire_code;
pub mod worker;
