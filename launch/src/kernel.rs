//! `frame-kernel`'s command line.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::argv::Argv;
use crate::{LogFormat, Transport, DEFAULT_RING_DIR};

/// Default of `--slots`; equal to `shm_ring::DEFAULT_SLOTS` (a test checks).
pub const DEFAULT_SLOTS: u32 = 8;
/// Default of `--format`.
pub const DEFAULT_FORMAT: &str = "NV12";
/// Default of `--speed`.
pub const DEFAULT_SPEED: f64 = 1.0;
/// Default of `--decoder-threads`.
pub const DEFAULT_DECODER_THREADS: u32 = 1;
/// Default of `--stall-timeout-ms`.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 3000;
/// Default of `--first-frame-timeout-ms`.
pub const DEFAULT_FIRST_FRAME_TIMEOUT_MS: u64 = 10_000;
/// Default of `--open-timeout-ms`.
pub const DEFAULT_OPEN_TIMEOUT_MS: u64 = 5000;
/// Default of `--backoff-initial-ms`.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 100;
/// Default of `--backoff-max-ms`.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 500;
/// Default of `--skip-frames`.
pub const DEFAULT_SKIP_FRAMES: &str = "auto";
/// Default of `--skip-loop-filter`.
pub const DEFAULT_SKIP_LOOP_FILTER: &str = "none";
/// Default of `--hwaccel`.
pub const DEFAULT_HWACCEL: &str = "none";
/// Default of `--clip-keep-ms`.
pub const DEFAULT_CLIP_KEEP_MS: u64 = 15_000;
/// Default of `--clip-max-bytes`.
pub const DEFAULT_CLIP_MAX_BYTES: u64 = 64 << 20;

/// Decodes one camera (RTSP or a file played as a camera) into its shared-memory ring.
///
/// Values the kernel checks as a whole (formats, decode options, ranges) stay plain here
/// and are validated by `frame_kernel::config::Config::from_args`, which reports every
/// problem at once.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "frame-kernel", version)]
pub struct KernelLaunch {
    /// Camera id, shown on every log line. Same rule as ring names:
    /// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
    #[arg(long)]
    pub camera_id: String,

    /// Ring name (default: the camera id). The ring file is `<ring-dir>/<ring>.ring`.
    #[arg(long)]
    pub ring: Option<String>,

    /// `rtsp://` / `rtsps://` URL, or a video file (path or `file://` URL) played as a
    /// live camera. Every local user can read a process's arguments
    /// (`/proc/<pid>/cmdline`): a URL with a password belongs in `--source-fd`.
    #[arg(
        long,
        required_unless_present = "source_fd",
        conflicts_with = "source_fd"
    )]
    pub source: Option<String>,

    /// Read the source (as for `--source`) from this inherited file descriptor until
    /// end of file, then close it (descriptors 0..=2 stay open, at end of file). One
    /// trailing newline is ignored. `core-agent` passes every camera this way (a pipe
    /// on descriptor 0 it has already written and closed), so credentials never appear
    /// in the command line. At most 8 KiB.
    #[arg(long, value_name = "FD")]
    pub source_fd: Option<i32>,

    /// Directory holding the ring file.
    #[arg(long, env = "FRAMEBUS_RING_DIR", default_value = DEFAULT_RING_DIR)]
    pub ring_dir: PathBuf,

    /// Number of frame slots in the ring (2..=1024).
    #[arg(long, default_value_t = DEFAULT_SLOTS)]
    pub slots: u32,

    /// Output pixel format: NV12, I420, BGR24 or RGB24 (case-insensitive).
    #[arg(long, default_value = DEFAULT_FORMAT)]
    pub format: String,

    /// Output width (with --height). Default: the source's width.
    #[arg(long)]
    pub width: Option<u32>,

    /// Output height (with --width). Default: the source's height.
    #[arg(long)]
    pub height: Option<u32>,

    /// RTSP transport: tcp or udp.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        hide_possible_values = true,
        default_value_t
    )]
    pub transport: Transport,

    /// File sources: release frames at the stream's frame rate (the default).
    #[arg(long, conflicts_with = "fast")]
    pub realtime: bool,

    /// File sources: release frames as fast as they decode (benchmarks).
    #[arg(long)]
    pub fast: bool,

    /// File sources, realtime pacing: playback speed, `0.05..=20` (0.5 = half speed, so
    /// consumers that need every frame keep up; 4 = try rules on a recording quickly).
    /// Frame timestamps stay the stream's; only the release schedule changes.
    #[arg(long, default_value_t = DEFAULT_SPEED, conflicts_with = "fast")]
    pub speed: f64,

    /// File sources: play the file in an endless loop, timestamps still increasing.
    /// Without it the kernel closes the ring and exits 0 at the end of the file.
    #[arg(long = "loop")]
    pub loop_file: bool,

    /// Stop (exit 0) after publishing this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,

    /// Decoder threads; 0 lets libavcodec pick one per core. More than 1 adds frames of
    /// latency (frame threading).
    #[arg(long, default_value_t = DEFAULT_DECODER_THREADS)]
    pub decoder_threads: u32,

    /// A connection that delivers no frame for this long is dropped and reconnected.
    #[arg(long, default_value_t = DEFAULT_STALL_TIMEOUT_MS)]
    pub stall_timeout_ms: u64,

    /// Longest wait for the first frame of a connection while packets arrive (a camera
    /// joined mid-GOP sends nothing decodable until its next keyframe).
    #[arg(long, default_value_t = DEFAULT_FIRST_FRAME_TIMEOUT_MS)]
    pub first_frame_timeout_ms: u64,

    /// Hard deadline for opening the source (connect, RTSP handshake, stream probing).
    #[arg(long, default_value_t = DEFAULT_OPEN_TIMEOUT_MS)]
    pub open_timeout_ms: u64,

    /// RTSP socket I/O timeout (FFmpeg's `timeout` option). Default: the stall timeout.
    #[arg(long)]
    pub io_timeout_ms: Option<u64>,

    /// First reconnect delay.
    #[arg(long, default_value_t = DEFAULT_BACKOFF_INITIAL_MS)]
    pub backoff_initial_ms: u64,

    /// Largest reconnect delay (before ±20 % jitter).
    #[arg(long, default_value_t = DEFAULT_BACKOFF_MAX_MS)]
    pub backoff_max_ms: u64,

    /// Extra FFmpeg demuxer/protocol option `KEY=VALUE` (repeatable). An option FFmpeg
    /// does not consume is an error, not silently ignored.
    #[arg(long = "av-option", value_name = "KEY=VALUE")]
    pub av_options: Vec<String>,

    /// Frames the decoder may leave out (never published): none, bidir (B-frames),
    /// noref (non-reference frames) or auto: noref when --consumer-fps is at most half
    /// the stream's declared rate, turned off for good if published frames then come
    /// further apart than 1 / consumer-fps. Without --consumer-fps, auto skips nothing.
    #[arg(long, default_value = DEFAULT_SKIP_FRAMES, value_name = "none|bidir|noref|auto")]
    pub skip_frames: String,

    /// The highest rate (frames per second) any consumer asks of this camera, for
    /// `--skip-frames auto`.
    #[arg(long, value_name = "FPS")]
    pub consumer_fps: Option<f64>,

    /// A consumer needs every frame (live view at full rate, recording): nothing is
    /// skipped, whatever --skip-frames says.
    #[arg(long)]
    pub all_frames: bool,

    /// Skip the in-loop deblocking filter: none, noref (non-reference frames only) or
    /// all (the bare flag). Saves decode CPU but lowers image quality: see
    /// docs/benchmarks.md for what it does to detections.
    #[arg(
        long,
        default_value = DEFAULT_SKIP_LOOP_FILTER,
        default_missing_value = "all",
        num_args = 0..=1,
        value_name = "none|noref|all"
    )]
    pub skip_loop_filter: String,

    /// Hardware decoding: none, auto (cuda, then vaapi), vaapi or cuda. When the device
    /// or the decoder's support is missing, the kernel decodes on the CPU and logs why.
    #[arg(long, default_value = DEFAULT_HWACCEL, value_name = "none|auto|vaapi|cuda")]
    pub hwaccel: String,

    /// Leave the ring file in place (state Closed) on exit.
    #[arg(long)]
    pub keep_ring: bool,

    /// Log format: text or json.
    #[arg(
        long,
        env = "FRAMEBUS_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        hide_possible_values = true,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// Keep the camera's compressed packets for event clips in keyframe-aligned
    /// segment files in this directory (created 0750; see `frame_kernel::packets`).
    /// Default: none (nothing kept).
    #[arg(long, value_name = "DIR")]
    pub clip_dir: Option<PathBuf>,

    /// With --clip-dir: history always kept, ms (the clips' pre-roll plus a margin;
    /// one GOP more is kept on top).
    #[arg(long, default_value_t = DEFAULT_CLIP_KEEP_MS, value_name = "MS")]
    pub clip_keep_ms: u64,

    /// With --clip-dir: most bytes of segments kept.
    #[arg(long, default_value_t = DEFAULT_CLIP_MAX_BYTES, value_name = "BYTES")]
    pub clip_max_bytes: u64,

    /// With --clip-dir: the camera's main stream (`rtsp://` / `rtsps://`), kept for clips
    /// as it comes and never decoded, while `--source` (then the camera's low-resolution
    /// substream) is decoded for detection. As for `--source`, a URL with a password
    /// belongs in `--record-source-fd`.
    #[arg(long, conflicts_with = "record_source_fd", requires = "clip_dir")]
    pub record_source: Option<String>,

    /// Read the record source (as for `--record-source`) from this inherited file
    /// descriptor, as `--source-fd` reads the source. When it is the `--source-fd`
    /// itself, that descriptor holds two lines: the source, then the record source
    /// (how `core-agent` passes both).
    #[arg(long, value_name = "FD", requires = "clip_dir")]
    pub record_source_fd: Option<i32>,
}

impl KernelLaunch {
    /// The command line of camera `camera_id` reading its source from descriptor
    /// `source_fd`, every other flag at its default (the environment is not read: the
    /// parent states what it means).
    pub fn new(camera_id: impl Into<String>, source_fd: i32) -> Self {
        Self {
            camera_id: camera_id.into(),
            ring: None,
            source: None,
            source_fd: Some(source_fd),
            ring_dir: PathBuf::from(DEFAULT_RING_DIR),
            slots: DEFAULT_SLOTS,
            format: DEFAULT_FORMAT.to_owned(),
            width: None,
            height: None,
            transport: Transport::default(),
            realtime: false,
            fast: false,
            speed: DEFAULT_SPEED,
            loop_file: false,
            max_frames: None,
            decoder_threads: DEFAULT_DECODER_THREADS,
            stall_timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
            first_frame_timeout_ms: DEFAULT_FIRST_FRAME_TIMEOUT_MS,
            open_timeout_ms: DEFAULT_OPEN_TIMEOUT_MS,
            io_timeout_ms: None,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            av_options: Vec::new(),
            skip_frames: DEFAULT_SKIP_FRAMES.to_owned(),
            consumer_fps: None,
            all_frames: false,
            skip_loop_filter: DEFAULT_SKIP_LOOP_FILTER.to_owned(),
            hwaccel: DEFAULT_HWACCEL.to_owned(),
            keep_ring: false,
            log_format: LogFormat::default(),
            clip_dir: None,
            clip_keep_ms: DEFAULT_CLIP_KEEP_MS,
            clip_max_bytes: DEFAULT_CLIP_MAX_BYTES,
            record_source: None,
            record_source_fd: None,
        }
    }

    /// The arguments (without the program name) that parse back into `self`.
    ///
    /// Flags at their default are left out, except `--ring-dir` and `--log-format`,
    /// which are always written so an inherited environment variable cannot change
    /// them, and `--skip-frames` (the decode choice is always visible in `ps`).
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut a = Argv::default();
        a.opt("--camera-id", &self.camera_id);
        a.some("--ring", self.ring.as_ref());
        a.some("--source", self.source.as_ref());
        a.some("--source-fd", self.source_fd);
        a.opt("--ring-dir", &self.ring_dir);
        a.non_default("--slots", self.slots, DEFAULT_SLOTS);
        a.non_default("--format", self.format.as_str(), DEFAULT_FORMAT);
        a.some("--width", self.width);
        a.some("--height", self.height);
        a.non_default("--transport", self.transport, Transport::default());
        a.switch("--realtime", self.realtime);
        a.switch("--fast", self.fast);
        a.non_default("--speed", self.speed, DEFAULT_SPEED);
        a.switch("--loop", self.loop_file);
        a.some("--max-frames", self.max_frames);
        a.non_default(
            "--decoder-threads",
            self.decoder_threads,
            DEFAULT_DECODER_THREADS,
        );
        a.non_default(
            "--stall-timeout-ms",
            self.stall_timeout_ms,
            DEFAULT_STALL_TIMEOUT_MS,
        );
        a.non_default(
            "--first-frame-timeout-ms",
            self.first_frame_timeout_ms,
            DEFAULT_FIRST_FRAME_TIMEOUT_MS,
        );
        a.non_default(
            "--open-timeout-ms",
            self.open_timeout_ms,
            DEFAULT_OPEN_TIMEOUT_MS,
        );
        a.some("--io-timeout-ms", self.io_timeout_ms);
        a.non_default(
            "--backoff-initial-ms",
            self.backoff_initial_ms,
            DEFAULT_BACKOFF_INITIAL_MS,
        );
        a.non_default(
            "--backoff-max-ms",
            self.backoff_max_ms,
            DEFAULT_BACKOFF_MAX_MS,
        );
        for o in &self.av_options {
            a.opt("--av-option", o);
        }
        a.0.extend(self.decode_argv());
        a.switch("--keep-ring", self.keep_ring);
        a.opt("--log-format", self.log_format.as_str());
        if let Some(d) = &self.clip_dir {
            a.opt("--clip-dir", d);
        }
        // With clips on, their bounds are always written (what the kernel keeps is
        // visible in `ps`).
        let clips = self.clip_dir.is_some();
        if clips || self.clip_keep_ms != DEFAULT_CLIP_KEEP_MS {
            a.opt("--clip-keep-ms", self.clip_keep_ms.to_string());
        }
        if clips || self.clip_max_bytes != DEFAULT_CLIP_MAX_BYTES {
            a.opt("--clip-max-bytes", self.clip_max_bytes.to_string());
        }
        a.some("--record-source", self.record_source.as_ref());
        a.some("--record-source-fd", self.record_source_fd);
        a.0
    }

    /// The decode flags alone (`--skip-frames`, always; `--consumer-fps`,
    /// `--all-frames`, `--skip-loop-filter`, `--hwaccel` when set), as `to_argv` writes
    /// them.
    pub fn decode_argv(&self) -> Vec<OsString> {
        let mut a = Argv::default();
        a.opt("--skip-frames", &self.skip_frames);
        a.some("--consumer-fps", self.consumer_fps);
        a.switch("--all-frames", self.all_frames);
        a.non_default(
            "--skip-loop-filter",
            self.skip_loop_filter.as_str(),
            DEFAULT_SKIP_LOOP_FILTER,
        );
        a.non_default("--hwaccel", self.hwaccel.as_str(), DEFAULT_HWACCEL);
        a.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_ring_crate() {
        assert_eq!(DEFAULT_SLOTS, shm_ring::DEFAULT_SLOTS);
        assert_eq!(DEFAULT_RING_DIR, shm_ring::DEFAULT_RING_DIR);
    }

    #[test]
    fn new_is_what_a_bare_command_line_parses_to() {
        let parsed = KernelLaunch::try_parse_from([
            "frame-kernel",
            "--camera-id",
            "door",
            "--source-fd",
            "0",
            "--ring-dir",
            DEFAULT_RING_DIR,
            "--log-format",
            "text",
        ])
        .unwrap();
        assert_eq!(parsed, KernelLaunch::new("door", 0));
        assert_eq!(
            KernelLaunch::new("door", 0).to_argv(),
            [
                "--camera-id",
                "door",
                "--source-fd",
                "0",
                "--ring-dir",
                "/dev/shm/framebus",
                "--skip-frames",
                "auto",
                "--log-format",
                "text"
            ]
        );
    }

    #[test]
    fn enums_parse_case_insensitively_and_the_bare_loop_filter_flag_means_all() {
        let l = KernelLaunch::try_parse_from([
            "frame-kernel",
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/x",
            "--transport",
            "UDP",
            "--log-format",
            "Json",
            "--skip-loop-filter",
        ])
        .unwrap();
        assert_eq!(
            (l.transport, l.log_format, l.skip_loop_filter.as_str()),
            (Transport::Udp, LogFormat::Json, "all")
        );
        let e = KernelLaunch::try_parse_from([
            "frame-kernel",
            "--camera-id",
            "c",
            "--source",
            "x",
            "--transport",
            "quic",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("--transport"), "{e}");
    }
}
