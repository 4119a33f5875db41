//! The whole-system benchmark harness behind the `bench` binary.
//!
//! `benches/` is the workspace's whole-system harness: this module and `src/bin/bench.rs`
//! run the real processes (`bench saturate|live|ipc|ring|recovery|raw`, and the
//! single-process scenarios `bench server` and `bench kernel`), while `benches/benches/`
//! holds the criterion micro-benchmarks (`cargo bench -p benches`).
//!
//! It starts the real processes (core-agent, which supervises frame kernels and model
//! servers) from a generated config in temp dirs, measures baselines in the same run (raw
//! ONNX Runtime, memcpy), and reports ratios. Pure parts (percentiles, `/proc` parsing,
//! config generation, result and API parsing) are unit-tested here; the measurements are
//! the scenarios.

pub mod api;
pub mod assets;
pub mod client;
pub mod config;
pub mod http;
pub mod interrupt;
pub mod load;
pub mod machine;
pub mod measure;
pub mod ort_raw;
pub mod peer;
pub mod procstat;
pub mod report;
pub mod results;
pub mod rtsp;
pub mod scenario_ipc;
pub mod scenario_kernel;
pub mod scenario_live;
pub mod scenario_recovery;
pub mod scenario_ring;
pub mod scenario_saturate;
pub mod scenario_server;
pub mod stats;
pub mod system;
