//! `model-server`'s command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::argv::Argv;
use crate::{Device, ModelFamily, DEFAULT_RING_DIR};

/// Default of `--calibration-ms`.
pub const DEFAULT_CALIBRATION_MS: u64 = 4000;
/// Default of `--max-queue-per-source`.
pub const DEFAULT_MAX_QUEUE_PER_SOURCE: usize = 64;
/// Default of `--max-queue-wait-ms`: no bound.
pub const DEFAULT_MAX_QUEUE_WAIT_MS: Setting = Setting::Fixed(0);
/// Default of `--batch-delay-us`.
pub const DEFAULT_BATCH_DELAY_US: u64 = 2000;
/// Default of `--score-threshold`.
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.25;
/// Default of `--iou-threshold`.
pub const DEFAULT_IOU_THRESHOLD: f32 = 0.45;
/// Default of `--max-detections`.
pub const DEFAULT_MAX_DETECTIONS: usize = 100;
/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of `--max-inflight`.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
/// Default of `--socket-mode`.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default of `--max-frame`.
pub const DEFAULT_MAX_FRAME: usize = proto_schema::framing::DEFAULT_MAX_FRAME;
/// Default of `--read-timeout-ms`.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 5000;
/// Default of `--idle-timeout-ms`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Default of `--drain-timeout-s`.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 30;
/// Default of `--io-threads`.
pub const DEFAULT_IO_THREADS: usize = 1;

/// Parses an octal file mode such as `0660` or `660`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("not an octal mode: {e}"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s}: only permission bits (at most 0777) are allowed"
        ));
    }
    Ok(mode)
}

/// A count that is either given or chosen at load (`auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Setting {
    /// Chosen at load (see `model_server::calibrate`).
    #[default]
    Auto,
    /// Given.
    Fixed(usize),
}

impl Setting {
    /// The given value, if any.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Setting::Auto => None,
            Setting::Fixed(n) => Some(n),
        }
    }

    /// `auto` for `None`, else the count.
    pub fn from_option(n: Option<u32>) -> Self {
        n.map_or(Setting::Auto, |n| Setting::Fixed(n as usize))
    }
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Setting::Auto);
        }
        s.parse::<usize>()
            .map(Setting::Fixed)
            .map_err(|e| format!("{s:?}: expected `auto` or a count ({e})"))
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Auto => f.write_str("auto"),
            Setting::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// Serve one ONNX detector over a Unix socket.
///
/// Ranges and files are checked by `model_server::config::validate`, which reports every
/// problem at once.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "model-server",
    version,
    about = "Serve one ONNX detector over a Unix socket"
)]
pub struct ServerLaunch {
    /// ONNX model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Model id clients put in `model_id` (name rule); default: the model file's stem.
    #[arg(long)]
    pub model_id: Option<String>,
    /// Unix socket path to listen on (a stale socket file there is removed).
    #[arg(long)]
    pub socket: PathBuf,
    /// Directory holding the frame rings; frame references may only name rings in it.
    #[arg(long, default_value = DEFAULT_RING_DIR)]
    pub ring_dir: PathBuf,
    /// Also trust rings (and a ring directory) owned by this uid: an outside writer
    /// running as another user (docs/ring-format.md §6.1). Repeatable. Default: only
    /// this process's uid and root.
    #[arg(long = "trust-ring-uid", value_name = "UID")]
    pub trust_ring_uids: Vec<u32>,
    /// Also trust rings (and a ring directory) whose group is this gid, whoever owns
    /// them: every member of the group may then write frames this server reads.
    /// Repeatable. Default: none.
    #[arg(long = "trust-ring-gid", value_name = "GID")]
    pub trust_ring_gids: Vec<u32>,
    /// Model family (pre/post-processing); `auto` detects it from the output shape and
    /// metadata.
    #[arg(long, value_enum, default_value_t = ModelFamily::Auto)]
    pub family: ModelFamily,
    /// Execution device; `cuda` falls back to CPU with a warning when unavailable.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Intra-op threads per instance, or `auto`: with `--instances auto` too, chosen by the
    /// load-time calibration (never more threads in all than cores); with a fixed
    /// `--instances N`, cores / N (at least 1).
    #[arg(long, default_value_t = Setting::Auto)]
    pub threads: Setting,
    /// Model instances (sessions) running in parallel, or `auto`: with `--threads auto`
    /// too, chosen by the load-time calibration; with fixed `--threads T`, cores / T (at
    /// least 1).
    #[arg(long, default_value_t = Setting::Auto)]
    pub instances: Setting,
    /// Largest batch for models with a dynamic batch dimension (fixed-batch models run one
    /// request at a time regardless), or `auto`: chosen by the calibration among 1, 2
    /// and 4 when it runs, else 8.
    #[arg(long, default_value_t = Setting::Auto)]
    pub max_batch: Setting,
    /// Longest time for the whole load-time calibration, in milliseconds (at most 5000);
    /// 0 skips it (then threads x instances fall back to 1 x cores, batch to 8).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_MS)]
    pub calibration_ms: u64,
    /// File that keeps the calibration's choice: a restart under the same conditions
    /// (model file, cores, device, settings, version) loads with it at once instead of
    /// calibrating again. Default: none (calibrate at every start).
    #[arg(long, value_name = "FILE")]
    pub calibration_cache: Option<PathBuf>,
    /// Requests waiting per camera (per ring); a newer request for a full lane replaces
    /// the lane's oldest one, which gets `overloaded`. Default: as many as
    /// `--max-inflight` allows (pipelining clients keep every request).
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE_PER_SOURCE)]
    pub max_queue_per_source: usize,
    /// Longest wait in the queue in milliseconds before a request is shed (`overloaded`,
    /// no inference) when fresher work waits (always past twice it); `auto`: 2 x the
    /// recent batch run time, at least 100 ms, what core-agent passes (its agents want the
    /// freshest frame, not a late answer); 0 (the default): no bound, every accepted
    /// request is run (or answered `deadline_exceeded` past its own deadline).
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE_WAIT_MS)]
    pub max_queue_wait_ms: Setting,
    /// How long the oldest queued request waits for a batch to fill, in microseconds.
    #[arg(long, default_value_t = DEFAULT_BATCH_DELAY_US)]
    pub batch_delay_us: u64,
    /// Minimum detection score.
    #[arg(long, default_value_t = DEFAULT_SCORE_THRESHOLD)]
    pub score_threshold: f32,
    /// IoU above which NMS drops the weaker box of the same class.
    #[arg(long, default_value_t = DEFAULT_IOU_THRESHOLD)]
    pub iou_threshold: f32,
    /// Most detections per frame.
    #[arg(long, default_value_t = DEFAULT_MAX_DETECTIONS)]
    pub max_detections: usize,
    /// Concurrent client connections; further ones get `overloaded` and are closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Inference requests accepted but not yet answered, over all connections; further
    /// ones get `overloaded` at once.
    #[arg(long, default_value_t = DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Socket file permission bits (octal).
    #[arg(long, default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Largest message payload in bytes; a longer length prefix gets `payload_too_large`
    /// and the connection is closed.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Once the first byte of a message has arrived, the rest must arrive within this many
    /// milliseconds, else the connection is closed (a stalled half-sent frame).
    #[arg(long, default_value_t = DEFAULT_READ_TIMEOUT_MS)]
    pub read_timeout_ms: u64,
    /// A connection with no complete request and nothing in flight for this many
    /// milliseconds is closed, so idle clients cannot hold the connection limit; 0
    /// keeps them open forever.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Control socket: answers only `ping`, `get_status`, `get_stats` and `shutdown`,
    /// has its own small connection limit (4) and mode 0600, so the supervisor's health
    /// checks never compete with data clients for `--max-connections`. The only socket
    /// that honours `shutdown` (the data socket answers it `invalid_message`); without
    /// it, stop the server with SIGTERM. Default: none.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// On shutdown, longest wait for in-flight requests, in seconds.
    #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT_S)]
    pub drain_timeout_s: u64,
    /// Whether idle ONNX Runtime intra-op threads spin waiting for work. Off by default:
    /// spinning buys little latency on an idle machine and costs a lot when decoders and
    /// other servers share the cores (measured 2x slower runs under contention).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub spin: bool,
    /// Tokio threads for socket I/O.
    #[arg(long, default_value_t = DEFAULT_IO_THREADS)]
    pub io_threads: usize,
    /// Class names, one per line, overriding the model's `names` metadata.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Path of `libonnxruntime.so`. Required: a parent that leaves it out passes it
    /// through the environment.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

impl ServerLaunch {
    /// The command line serving `model` on `socket`, every other flag at its default;
    /// `ort_dylib` empty (left out by `to_argv`: the child reads `ORT_DYLIB_PATH`).
    pub fn new(model: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            model_id: None,
            socket: socket.into(),
            ring_dir: PathBuf::from(DEFAULT_RING_DIR),
            trust_ring_uids: Vec::new(),
            trust_ring_gids: Vec::new(),
            family: ModelFamily::Auto,
            device: Device::Cpu,
            threads: Setting::Auto,
            instances: Setting::Auto,
            max_batch: Setting::Auto,
            calibration_ms: DEFAULT_CALIBRATION_MS,
            calibration_cache: None,
            max_queue_per_source: DEFAULT_MAX_QUEUE_PER_SOURCE,
            max_queue_wait_ms: DEFAULT_MAX_QUEUE_WAIT_MS,
            batch_delay_us: DEFAULT_BATCH_DELAY_US,
            score_threshold: DEFAULT_SCORE_THRESHOLD,
            iou_threshold: DEFAULT_IOU_THRESHOLD,
            max_detections: DEFAULT_MAX_DETECTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            socket_mode: DEFAULT_SOCKET_MODE,
            max_frame: DEFAULT_MAX_FRAME,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            control_socket: None,
            drain_timeout_s: DEFAULT_DRAIN_TIMEOUT_S,
            spin: false,
            io_threads: DEFAULT_IO_THREADS,
            labels: None,
            ort_dylib: PathBuf::new(),
            log_json: false,
        }
    }

    /// The arguments (without the program name) that parse back into `self`.
    ///
    /// Flags at their default are left out, except `--model`, `--socket` and
    /// `--ring-dir`, and except `--threads`, `--instances`, `--max-queue-wait-ms` and
    /// `--spin`, which core-agent always states (what a server runs with is visible in
    /// `ps`). An empty `ort_dylib` is left out: the child then reads `ORT_DYLIB_PATH`.
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut a = Argv::default();
        a.opt("--model", &self.model);
        a.some("--model-id", self.model_id.as_ref());
        a.opt("--socket", &self.socket);
        if let Some(c) = &self.control_socket {
            a.opt("--control-socket", c);
        }
        a.non_default(
            "--idle-timeout-ms",
            self.idle_timeout_ms,
            DEFAULT_IDLE_TIMEOUT_MS,
        );
        a.opt("--ring-dir", &self.ring_dir);
        for uid in &self.trust_ring_uids {
            a.opt("--trust-ring-uid", uid.to_string());
        }
        for gid in &self.trust_ring_gids {
            a.opt("--trust-ring-gid", gid.to_string());
        }
        a.non_default("--family", self.family, ModelFamily::Auto);
        a.non_default("--device", self.device, Device::Cpu);
        a.opt("--threads", self.threads.to_string());
        a.opt("--instances", self.instances.to_string());
        a.opt("--max-queue-wait-ms", self.max_queue_wait_ms.to_string());
        a.opt("--spin", self.spin.to_string());
        if let Some(c) = &self.calibration_cache {
            a.opt("--calibration-cache", c);
        }
        a.non_default("--max-batch", self.max_batch, Setting::Auto);
        a.non_default(
            "--batch-delay-us",
            self.batch_delay_us,
            DEFAULT_BATCH_DELAY_US,
        );
        a.non_default(
            "--score-threshold",
            self.score_threshold,
            DEFAULT_SCORE_THRESHOLD,
        );
        a.non_default("--iou-threshold", self.iou_threshold, DEFAULT_IOU_THRESHOLD);
        a.non_default("--max-frame", self.max_frame, DEFAULT_MAX_FRAME);
        a.non_default(
            "--calibration-ms",
            self.calibration_ms,
            DEFAULT_CALIBRATION_MS,
        );
        a.non_default(
            "--max-queue-per-source",
            self.max_queue_per_source,
            DEFAULT_MAX_QUEUE_PER_SOURCE,
        );
        a.non_default(
            "--max-detections",
            self.max_detections,
            DEFAULT_MAX_DETECTIONS,
        );
        a.non_default(
            "--max-connections",
            self.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        );
        a.non_default("--max-inflight", self.max_inflight, DEFAULT_MAX_INFLIGHT);
        if self.socket_mode != DEFAULT_SOCKET_MODE {
            a.opt("--socket-mode", format!("{:04o}", self.socket_mode));
        }
        a.non_default(
            "--read-timeout-ms",
            self.read_timeout_ms,
            DEFAULT_READ_TIMEOUT_MS,
        );
        a.non_default(
            "--drain-timeout-s",
            self.drain_timeout_s,
            DEFAULT_DRAIN_TIMEOUT_S,
        );
        a.non_default("--io-threads", self.io_threads, DEFAULT_IO_THREADS);
        if let Some(l) = &self.labels {
            a.opt("--labels", l);
        }
        if !self.ort_dylib.as_os_str().is_empty() {
            a.opt("--ort-dylib", &self.ort_dylib);
        }
        a.switch("--log-json", self.log_json);
        a.0
    }

    /// The model id: `--model-id`, else the model file's stem.
    pub fn model_id(&self) -> String {
        self.model_id.clone().unwrap_or_else(|| {
            self.model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// Partial-frame read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// Idle connection timeout; `None` for never.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerLaunch, clap::Error> {
        let mut all = vec!["model-server", "--ort-dylib", "/nonexistent/libort.so"];
        all.extend_from_slice(args);
        ServerLaunch::try_parse_from(all)
    }

    #[test]
    fn defaults() {
        let c = parse(&["--model", "/m/yolox_nano.onnx", "--socket", "/tmp/s.sock"]).unwrap();
        assert_eq!(c.model_id(), "yolox_nano");
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.ring_dir, PathBuf::from("/dev/shm/framebus"));
        assert_eq!(
            (c.threads, c.instances, c.max_batch),
            (Setting::Auto, Setting::Auto, Setting::Auto)
        );
        assert_eq!(c.family, ModelFamily::Auto);
        assert!(!c.spin && !c.log_json);
        let mut n = ServerLaunch::new("/m/yolox_nano.onnx", "/tmp/s.sock");
        n.ort_dylib = "/nonexistent/libort.so".into();
        assert_eq!(c, n, "new() is what a bare command line parses to");
        assert!(parse(&["--model", "m", "--socket", "s", "--threads", "two"]).is_err());
    }

    #[test]
    fn socket_mode_is_octal_and_bounded() {
        let with = |m: &str| parse(&["--model", "m", "--socket", "s", "--socket-mode", m]);
        assert_eq!(with("0600").unwrap().socket_mode, 0o600);
        assert_eq!(with("640").unwrap().socket_mode, 0o640);
        assert!(with("0999").is_err());
        assert!(with("01777").is_err());
    }

    #[test]
    fn ring_trust_flags_repeat() {
        let c = parse(&[
            "--model",
            "m",
            "--socket",
            "s",
            "--trust-ring-uid",
            "2000",
            "--trust-ring-uid",
            "65534",
            "--trust-ring-gid",
            "10001",
        ])
        .unwrap();
        assert_eq!(c.trust_ring_uids, [2000, 65534]);
        assert_eq!(c.trust_ring_gids, [10001]);
        let n = parse(&["--model", "m", "--socket", "s"]).unwrap();
        assert!(n.trust_ring_uids.is_empty() && n.trust_ring_gids.is_empty());
        assert!(parse(&["--model", "m", "--socket", "s", "--trust-ring-uid", "x"]).is_err());
    }
}
