//! The launch contract between `core-agent` and the processes it starts.
//!
//! Each child has one typed command line here: [`KernelLaunch`] for `frame-kernel`,
//! [`ServerLaunch`] for `model-server`. The child parses its arguments with it (clap
//! derive: flags, environment variables, defaults and `--help` are defined once, here),
//! then validates the values in its own `config.rs`; the parent fills the same struct
//! and turns it into an argument vector with `to_argv()`. A round-trip property test
//! (`tests/round_trip.rs`) guards that any valid struct survives `to_argv` and parsing
//! unchanged, and that every flag `--help` lists is one `to_argv` can write.
//!
//! The enums both sides name ([`Transport`], [`LogFormat`], [`Device`], [`ModelFamily`])
//! are defined once, in [`kinds`]. [`logging`] is the one logging setup of all three
//! binaries; `proto_schema::exit` is their one exit-code table.

#![forbid(unsafe_code)]

pub mod kernel;
pub mod kinds;
pub mod logging;
pub mod server;

mod argv;

pub use kernel::KernelLaunch;
pub use kinds::{Device, LogFormat, ModelFamily, Transport};
pub use server::{ServerLaunch, Setting};

/// Default ring directory (`--ring-dir`; env `FRAMEBUS_RING_DIR`). Equal to
/// `shm_ring::DEFAULT_RING_DIR` (a test checks), stated here so this crate does not
/// depend on the ring runtime.
pub const DEFAULT_RING_DIR: &str = "/dev/shm/framebus";

/// Environment variable of the ring directory (both children).
pub const ENV_RING_DIR: &str = "FRAMEBUS_RING_DIR";
/// Environment variable of the log format (`text` or `json`).
pub const ENV_LOG_FORMAT: &str = "FRAMEBUS_LOG_FORMAT";
/// Environment variable of the ONNX Runtime library (`model-server --ort-dylib`).
pub const ENV_ORT_DYLIB: &str = "ORT_DYLIB_PATH";
