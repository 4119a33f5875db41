//! `core-agent`: the control plane of the frame bus.
//!
//! One TOML file ([`config`]) describes cameras, models and which camera feeds which
//! model at what rate. The agent starts one `frame-kernel` per camera and one
//! `model-server` per model under [`supervisor`] (readiness, health checks, restarts
//! with backoff, hot reload), runs one stream [`agent`] per camera (ring notification →
//! FPS gate → inference request by frame reference → result record), sends the records
//! to the [`results`] sinks, and reports everything through the HTTP [`api`].
//!
//! `unsafe` lives in three places only: [`supervisor::child`] (the `pre_exec` hook that
//! sets the parent-death signal and CPU affinity, and `kill(2)` on process groups), the
//! clip muxer `clips::mux` (stream parameters set on FFmpeg's codecpar) and
//! [`live::jpeg`] (the calls into libjpeg-turbo).

pub mod agent;
pub mod analytics;
pub mod api;
pub mod app;
pub mod clips;
pub mod clock;
pub mod config;
pub mod demo;
pub mod fds;
pub mod live;
pub mod metrics;
pub mod outputs;
pub mod peer;
pub mod queue;
pub mod results;
pub mod shard;
pub mod sinks;
pub mod status;
pub mod supervisor;
pub mod system;
pub mod table;
pub mod web;
