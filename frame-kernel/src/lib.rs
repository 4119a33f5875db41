//! `frame-kernel`: one camera, decoded with FFmpeg, published frame by frame into the
//! camera's shared-memory ring (see `shm_ring`), surviving camera faults.
//!
//! One process per camera, so a decoder crash never takes another camera down.
//!
//! - [`config`]: the command line, validated all at once before anything is touched.
//! - [`source`]: RTSP/file open with checked options and an interrupt-callback deadline.
//! - [`codec`]: the decoder. [`convert`]: swscale straight into the slot.
//! - [`skip`]: which frames the decoder may leave out (`--skip-frames`), and
//!   [`hwaccel`]: hardware decoding with CPU fallback (`--hwaccel`).
//! - [`pacing`]: increasing timestamps across loops/reconnects; realtime or fast pacing.
//! - [`reconnect`]: stall detection and backoff with jitter, on an injected [`Clock`](proto_schema::time::Clock).
//! - [`publish`]: the ring glue (state, counters, heartbeat thread).
//! - [`packets`]: compressed packets kept in segment files for event clips;
//!   [`record`]: a main stream kept for clips without decoding it (`--record-source`).
//! - [`kernel`]: the main loop tying these together; [`signals`], [`ffmpeg_log`].

pub mod codec;
pub mod config;
pub mod convert;
pub mod ffmpeg_log;
pub mod hwaccel;
pub mod kernel;
pub mod pacing;
pub mod packets;
pub mod publish;
pub mod reconnect;
pub mod record;
pub mod signals;
pub mod skip;
pub mod source;

use std::sync::Once;

/// Initialises libav* once per process (idempotent).
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registration is a no-op on FFmpeg >= 4 but also sets up networking.
        if let Err(e) = ffmpeg_next::init() {
            tracing::error!(error = %e, "FFmpeg initialisation failed");
        }
        // SAFETY: plain global initialisation call, made once.
        unsafe {
            ffmpeg_next::ffi::avformat_network_init();
        }
    });
}
