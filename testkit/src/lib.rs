//! Test support for the framebus workspace: one home for what every crate's integration
//! tests (and the `bench` harness) used to copy.
//!
//! - [`assets`]: the shared real assets (`$FRAMEBUS_ASSETS`, default `../shared/assets`
//!   beside the repository). Outside CI a missing asset is a printed `SKIP` and the test
//!   returns early; with `CI=true` it is a failure, because real-data tests must run there.
//! - [`fixtures`]: small generated fixtures checked into `testkit/fixtures/` (a tiny
//!   detector model and four seconds of synthetic footage), so a fresh clone runs
//!   meaningful end-to-end tests without the shared assets.
//! - [`bins`]: the workspace's binaries in the target dir of the same build.
//! - [`camera`]: fake cameras (a file played into a ring by the real `frame-kernel`, RTSP
//!   served by `tools/fake_rtsp_camera.py`).
//! - [`ffmpeg`]: the `ffmpeg` CLI as reference decoder.
//! - [`process`]: a child process guard (killed and reaped on drop) and output capture.
//! - [`dirs`] and [`net`]: temp dirs with the modes the services demand, a free loopback port.
//!
//! This crate is a dev-dependency of the service crates (never shipped); `benches`, itself an
//! unpublished harness, uses it as a normal dependency.

pub mod assets;
pub mod bins;
pub mod camera;
pub mod dirs;
pub mod ffmpeg;
pub mod fixtures;
pub mod net;
pub mod process;

pub use assets::{asset, assets_dir, in_ci, missing, require, workspace_root};
