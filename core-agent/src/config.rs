//! The one configuration file: cameras, models, subscriptions, outputs, directories,
//! supervision settings and limits.
//!
//! Every table rejects unknown keys. Every setting that has a default says it in its doc
//! comment; `config/example.toml` at the repository root shows all of them. Relative
//! paths (sources, model files, outputs, directories) are resolved against the directory
//! of the config file. [`validate()`] checks the parsed file as a whole and reports every
//! problem at once.
//!
//! Environment overrides, for the settings people set per host:
//! `FRAMEBUS_LOG` (log filter), `FRAMEBUS_LOG_FORMAT` (`text`|`json`),
//! `FRAMEBUS_RING_DIR`, `FRAMEBUS_SOCKET_DIR`; and `FRAMEBUS_API_TOKEN` (the API's
//! bearer token, read at start, never logged).

pub mod analytics;
pub mod api;
pub mod clips;
pub mod dashboard;
pub mod diff;
pub mod live;
pub mod outputs;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use proto_schema::pixel::PixelFormat;
use serde::{Deserialize, Serialize};

pub use validate::{validate, ConfigError, ValidationErrors};

/// Environment variable overriding [`AgentSettings::log`].
pub const ENV_LOG: &str = "FRAMEBUS_LOG";
/// Environment variable overriding [`AgentSettings::log_format`].
pub const ENV_LOG_FORMAT: &str = "FRAMEBUS_LOG_FORMAT";
/// Environment variable overriding [`AgentSettings::ring_dir`].
pub const ENV_RING_DIR: &str = "FRAMEBUS_RING_DIR";
/// Environment variable overriding [`AgentSettings::socket_dir`].
pub const ENV_SOCKET_DIR: &str = "FRAMEBUS_SOCKET_DIR";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[agent]`: addresses, directories, logging.
    #[serde(default)]
    pub agent: AgentSettings,
    /// `[supervisor]`: health checks, restarts, hot reload.
    #[serde(default)]
    pub supervisor: SupervisorSettings,
    /// `[limits]`: queue depths and counts.
    #[serde(default)]
    pub limits: Limits,
    /// `[[cameras]]`: one frame kernel and one stream agent each.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// `[[models]]`: one model server each.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// `[[subscriptions]]`: which camera feeds which model, how often.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// `[[outputs]]`: where result records go. Default: none (results are still counted).
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// `[analytics]`: where events and counts go (rules are per camera).
    #[serde(default)]
    pub analytics: analytics::AnalyticsSettings,
    /// `[api]`: limits of the HTTP listener (connections, header deadline).
    #[serde(default)]
    pub api: api::ApiSettings,
    /// `[dashboard]`: the web page, its live stream and login sessions.
    #[serde(default)]
    pub dashboard: dashboard::DashboardSettings,
    /// `[live]`: live view rates, viewer cap, JPEG quality.
    #[serde(default)]
    pub live: live::LiveSettings,
    /// `[clips]`: event clips with pre-roll. Default: off.
    #[serde(default)]
    pub clips: clips::ClipsSettings,
    /// `[brokers.mqtt]`, `[brokers.redis]`: events and counts to message brokers.
    #[serde(default)]
    pub brokers: outputs::BrokerSettings,
}

/// Log output format (`agent.log_format`), shared with the children's command lines.
pub use framebus_launch::LogFormat;

/// `[agent]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Status API address. Default `127.0.0.1:7878`; must be a loopback address.
    pub api_addr: SocketAddr,
    /// Directory of the frame rings, created 0750 if missing and refused if it exists
    /// with another owner or a looser mode. Default `/dev/shm/framebus`; env
    /// `FRAMEBUS_RING_DIR`.
    pub ring_dir: PathBuf,
    /// Directory of the model servers' sockets, checked like `ring_dir`. Default
    /// `/run/framebus` for root, else `$XDG_RUNTIME_DIR/framebus`, else
    /// `/tmp/framebus-<uid>`; env `FRAMEBUS_SOCKET_DIR`.
    pub socket_dir: PathBuf,
    /// Directory holding the `frame-kernel` and `model-server` binaries. Default: the
    /// directory of the running `core-agent` binary.
    pub bin_dir: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax), also handed to the children. Default
    /// `info`; env `FRAMEBUS_LOG`.
    pub log: String,
    /// Log format. Default `text`; env `FRAMEBUS_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Print a live per-camera table (fps, people, latency) to stdout. Default `false`.
    pub live_table: bool,
    /// Seconds between two live-table prints. Default `2`.
    pub table_interval_s: u64,
    /// File holding the API's bearer token: read if it exists (it must be mode 0600 or
    /// 0400 and owned by the agent's user or root), else generated there at start.
    /// `FRAMEBUS_API_TOKEN` wins over it. Default `<socket_dir>/api.token`.
    pub api_token_file: Option<PathBuf>,
    /// Directories whose files cameras added through the API may use as a source
    /// (config-file cameras are trusted and may name any file). Default: none, so the
    /// API accepts only `rtsp://` and `rtsps://` sources.
    pub media_dirs: Vec<PathBuf>,
}

impl AgentSettings {
    /// The API token file: [`Self::api_token_file`] or `<socket_dir>/api.token`.
    pub fn token_file(&self) -> PathBuf {
        self.api_token_file
            .clone()
            .unwrap_or_else(|| self.socket_dir.join(crate::api::auth::TOKEN_FILE_NAME))
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
            ring_dir: PathBuf::from(shm_ring::DEFAULT_RING_DIR),
            socket_dir: shm_ring::owned_dir::default_socket_dir(),
            bin_dir: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            live_table: false,
            table_interval_s: 2,
            api_token_file: None,
            media_dirs: Vec::new(),
        }
    }
}

/// `[supervisor]` settings: how children are checked and restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSettings {
    /// Delay before the first restart after a failure. Default `100` ms.
    pub backoff_initial_ms: u64,
    /// Upper bound of the doubling restart delay. Default `5000` ms.
    pub backoff_max_ms: u64,
    /// Restarts allowed within `restart_window_s` before a process is marked failed.
    /// Default `5`.
    pub restart_limit: u32,
    /// Window of the restart limit. Default `60` s.
    pub restart_window_s: u64,
    /// Period of the health checks (ping, ring heartbeat, RSS). Default `500` ms.
    pub health_interval_ms: u64,
    /// A ping without a pong within this time fails the check. Default `1000` ms.
    pub ping_timeout_ms: u64,
    /// Consecutive failed health checks before a process is killed. Default `3`.
    pub unhealthy_after: u32,
    /// A ring whose heartbeat has not moved for this long is hung. Default `3000` ms.
    pub heartbeat_timeout_ms: u64,
    /// Time a started process gets to become ready (ring live / pong). Default `60` s.
    pub ready_timeout_s: u64,
    /// Time between SIGTERM and SIGKILL when stopping a process. Default `3000` ms.
    pub stop_grace_ms: u64,
    /// How often model files and the config file are checked for changes (hot
    /// reload); `0` turns watching off. Default `1000` ms.
    pub watch_interval_ms: u64,
    /// A process marked failed (too many restarts within the window) is started again
    /// after this cool-down, with a fresh restart budget; `0` never retries (an
    /// operator's restart or a changed model file still revives it). Default `60` s.
    pub failed_retry_s: u64,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
            restart_limit: 5,
            restart_window_s: 60,
            health_interval_ms: 500,
            ping_timeout_ms: 1_000,
            unhealthy_after: 3,
            heartbeat_timeout_ms: 3_000,
            ready_timeout_s: 60,
            stop_grace_ms: 3_000,
            watch_interval_ms: 1_000,
            failed_retry_s: 60,
        }
    }
}

/// `[limits]`: every queue and count is bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests in flight per (camera, model) unless the subscription says otherwise;
    /// frames that come while the limit is reached are skipped. Default `1`.
    pub max_in_flight: u32,
    /// Capacity of the result queue in front of the sinks; when full the oldest
    /// record is dropped and counted. Default `1024`.
    pub result_queue: usize,
    /// Most cameras (config plus API). Default `64`.
    pub max_cameras: usize,
    /// Most models. Default `16`.
    pub max_models: usize,
    /// A request without an answer after this long is given up (and counted).
    /// Default `2000` ms.
    pub request_timeout_ms: u64,
    /// At shutdown, time agents get to collect answers already asked for.
    /// Default `2000` ms.
    pub drain_timeout_ms: u64,
    /// Largest message accepted from a model server. Default 1 MiB.
    pub max_message_bytes: usize,
    /// A model-server data connection with no complete request and nothing in flight
    /// for this long is closed by the server (its `--idle-timeout-ms`), so idle
    /// clients cannot hold its connection limit; `0` never closes. Default `30000` ms.
    pub server_idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 1,
            result_queue: 1024,
            max_cameras: 64,
            max_models: 16,
            request_timeout_ms: 2_000,
            drain_timeout_ms: 2_000,
            max_message_bytes: proto_schema::framing::DEFAULT_MAX_FRAME,
            server_idle_timeout_ms: 30_000,
        }
    }
}

/// RTSP transport (`cameras.transport`), shared with `frame-kernel --transport`.
pub use framebus_launch::Transport;

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Camera id; also the ring name unless `ring` is set. Rule:
    /// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
    pub id: String,
    /// `rtsp://...` URL (any `scheme://`) or a video file path.
    pub source: String,
    /// RTSP transport. Default `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// Pixel format written to the ring. Default `NV12`.
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    /// Output width; with `height`, frames are scaled to this size. Default: the
    /// source's size.
    #[serde(default)]
    pub width: Option<u32>,
    /// Output height. Default: the source's size.
    #[serde(default)]
    pub height: Option<u32>,
    /// The camera's nominal frame rate, used to check subscriptions. Default: unknown
    /// (not checked).
    #[serde(default)]
    pub fps: Option<f64>,
    /// Whether the camera runs at start. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// File sources only: replay at the native frame rate (like a live camera). Default
    /// `true`.
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// File sources with `realtime` only: playback speed, `0.05..=20`. Below 1 a
    /// recording is replayed slower than it was shot, so a subscription that takes every
    /// frame keeps up on a small machine (frame-exact analytics checks); above 1 rules
    /// are tried on a recording quickly. Default `1`.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// File sources only: start again at the end. Default `true`.
    #[serde(default = "default_true", rename = "loop")]
    pub loop_file: bool,
    /// Ring name. Default: the camera id.
    #[serde(default)]
    pub ring: Option<String>,
    /// Frame slots in the ring: how long a frame stays readable (slots / camera fps)
    /// before the writer reuses its slot. Default: the kernel's (8).
    #[serde(default)]
    pub ring_slots: Option<u32>,
    /// Resident-memory limit of the camera's frame kernel in MiB. Default: none.
    #[serde(default)]
    pub rss_limit_mb: Option<u64>,
    /// CPUs the frame kernel may run on. Default: all.
    #[serde(default)]
    pub cpu_affinity: Option<Vec<usize>>,
    /// The camera's main (high-resolution) stream, for viewing and recording, next to
    /// `source`, the (low-resolution) substream that is decoded for detection. Never
    /// decoded by framebus: when the camera keeps clips (`[clips] cameras`), they are
    /// remuxed from this stream as it comes instead of from `source`. An `rtsp://` or
    /// `rtsps://` URL; credentials are redacted like the source's.
    /// Default: none.
    #[serde(default)]
    pub record_source: Option<String>,
    /// `[cameras.decode]`: how much of `source` the kernel decodes.
    #[serde(default)]
    pub decode: DecodeConfig,
    /// `[cameras.motion]`: the motion gate in front of inference. Default: off. (Boxed:
    /// it keeps `CameraConfig` small where it travels by value.)
    #[serde(default)]
    pub motion: Box<MotionConfig>,
    /// `[cameras.analytics]`: tracking, lines and zones. Default: none (no analytics).
    /// Changes apply without restarting the camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<Box<analytics::CameraAnalytics>>,
}

/// `[cameras.motion]`: skip inference on frames where nothing moves (frame differencing
/// on a small grey thumbnail of the ring's luma plane) and reuse the last result, with
/// a keep-alive inference rate that always stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Whether the gate runs. Default `false`.
    pub enabled: bool,
    /// Share of the unmasked thumbnail pixels that must change for a frame to count as
    /// motion, `0 < threshold <= 1`. Default `0.002` (0.2 %).
    pub threshold: f64,
    /// Grey-level difference (0-255) from the running background above which a
    /// thumbnail pixel counts as changed, `1..=255`. Default `20`.
    pub pixel_delta: u8,
    /// Thumbnail width in pixels (height follows the frame's aspect), `8..=640`.
    /// Default `96`.
    pub thumbnail_width: u32,
    /// Regions where motion is ignored: polygons of `[x, y]` points in normalised
    /// coordinates (`0..=1` across the frame, origin top left), 3 to 64 points each, at
    /// most 32 polygons. Default: none.
    pub masks: Vec<Vec<[f64; 2]>>,
    /// Inferences per second that stay without motion, so a result is never older than
    /// `1 / keepalive_fps` seconds; `0` turns the keep-alive off. `0..=1000`. Default `1`.
    pub keepalive_fps: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.002,
            pixel_delta: 20,
            thumbnail_width: 96,
            masks: Vec::new(),
            keepalive_fps: 1.0,
        }
    }
}

/// `[cameras.decode]`: decode options of one camera (`frame-kernel --skip-frames`,
/// `--skip-loop-filter`, `--hwaccel`, `--all-frames`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Frames the decoder may leave out. Default `auto`: non-reference frames are skipped
    /// when the camera's highest subscribed fps is at most half the stream's rate (and
    /// not when published frames would then come further apart than the subscription
    /// interval).
    pub skip_frames: SkipFramesSetting,
    /// Skip the in-loop deblocking filter on every frame: less decode CPU, lower image
    /// quality (see docs/benchmarks.md for its effect on detections). Default `false`.
    pub skip_loop_filter: bool,
    /// Hardware decoding, with CPU fallback. Default `none`.
    pub hwaccel: HwAccelSetting,
    /// A consumer needs every frame (live view at full rate, recording of the decoded
    /// stream): no skipping at all. Default `false`.
    pub all_frames: bool,
}

impl DecodeConfig {
    /// Sets the kernel's decode flags for a camera whose subscriptions ask at most
    /// `consumer_fps` (`None`: no subscriptions).
    pub fn apply_to(&self, launch: &mut framebus_launch::KernelLaunch, consumer_fps: Option<f64>) {
        launch.skip_frames = self.skip_frames.as_str().to_owned();
        launch.consumer_fps = consumer_fps;
        launch.all_frames = self.all_frames;
        if self.skip_loop_filter {
            launch.skip_loop_filter = "all".to_owned();
        }
        launch.hwaccel = self.hwaccel.as_str().to_owned();
    }

    /// The kernel's decode arguments (as [`DecodeConfig::apply_to`] sets them), for a
    /// camera whose subscriptions ask at most `consumer_fps`.
    pub fn kernel_args(&self, consumer_fps: Option<f64>) -> Vec<String> {
        let mut launch = framebus_launch::KernelLaunch::new("", 0);
        self.apply_to(&mut launch, consumer_fps);
        launch
            .decode_argv()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// `decode.skip_frames`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipFramesSetting {
    /// Skip non-reference frames when the subscriptions need at most half the rate.
    #[default]
    Auto,
    /// Decode every frame.
    Never,
    /// Always skip B-frames.
    Bidir,
    /// Always skip non-reference frames.
    Noref,
}

impl SkipFramesSetting {
    /// Name as written in the config and on the kernel's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipFramesSetting::Auto => "auto",
            SkipFramesSetting::Never => "none",
            SkipFramesSetting::Bidir => "bidir",
            SkipFramesSetting::Noref => "noref",
        }
    }
}

/// `decode.hwaccel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwAccelSetting {
    /// CPU decoding.
    #[default]
    None,
    /// CUDA, then VAAPI, else the CPU.
    Auto,
    /// VAAPI, else the CPU.
    Vaapi,
    /// CUDA (NVDEC), else the CPU.
    Cuda,
}

impl HwAccelSetting {
    /// Name as written in the config and on the kernel's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            HwAccelSetting::None => "none",
            HwAccelSetting::Auto => "auto",
            HwAccelSetting::Vaapi => "vaapi",
            HwAccelSetting::Cuda => "cuda",
        }
    }
}

impl CameraConfig {
    /// The ring this camera's kernel writes.
    pub fn ring_name(&self) -> &str {
        self.ring.as_deref().unwrap_or(&self.id)
    }

    /// Whether the source is a URL (`scheme://...`) rather than a file.
    pub fn is_url(&self) -> bool {
        self.source.contains("://")
    }
}

/// Execution device of a model server (`models.device`), shared with
/// `model-server --device`.
pub use framebus_launch::Device;
/// Model family (`models.family`), shared with `model-server --family`.
pub use framebus_launch::ModelFamily;

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model id (same rule as camera ids).
    pub id: String,
    /// ONNX file.
    pub path: PathBuf,
    /// Model family. Default `auto`.
    #[serde(default)]
    pub family: ModelFamily,
    /// Execution device. Default `cpu`.
    #[serde(default)]
    pub device: Device,
    /// Intra-op threads per instance. Default: absent, `auto` (with `instances` absent
    /// too, the model server measures a few threads x instances settings at load, at most
    /// 5 s, and keeps the one with the most inferences per CPU-second; with `instances`
    /// given, cores / instances).
    #[serde(default)]
    pub threads: Option<u32>,
    /// Sessions run in parallel. Default: absent, `auto` (see `threads`; with `threads`
    /// given, cores / threads).
    #[serde(default)]
    pub instances: Option<u32>,
    /// Whether idle intra-op threads spin waiting for work (`model-server --spin`). Spinning
    /// makes multi-threaded runs faster on cores the server has to itself and slower when
    /// decoders share them. Default `false`.
    #[serde(default)]
    pub spin: bool,
    /// Most frames per batch (models with a fixed batch of 1 run one at a time).
    /// Default `1`.
    #[serde(default = "default_one")]
    pub max_batch: u32,
    /// Longest wait for a batch to fill, microseconds. Default `2000`.
    #[serde(default = "default_batch_delay")]
    pub batch_delay_us: u64,
    /// Minimum detection score. Default `0.25`.
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    /// NMS IoU threshold. Default `0.45`.
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// Socket path. Default `<socket_dir>/<id>.sock`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Resident-memory limit of the server in MiB. Default: none.
    #[serde(default)]
    pub rss_limit_mb: Option<u64>,
    /// CPUs the server may run on. Default: all.
    #[serde(default)]
    pub cpu_affinity: Option<Vec<usize>>,
}

impl ModelConfig {
    /// The socket this model's server listens on.
    pub fn socket_path(&self, socket_dir: &Path) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| socket_dir.join(format!("{}.sock", self.id)))
    }

    /// The server's control socket (health checks only): the socket path plus `.ctl`.
    pub fn control_socket_path(&self, socket_dir: &Path) -> PathBuf {
        let mut p = self.socket_path(socket_dir).into_os_string();
        p.push(".ctl");
        PathBuf::from(p)
    }
}

/// One `[[subscriptions]]` entry: `camera` frames go to `model` at `fps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Camera id.
    pub camera: String,
    /// Model id.
    pub model: String,
    /// Target inference rate, frames per second (> 0).
    pub fps: f64,
    /// Keep only detections of these class names. Default: all classes.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Requests in flight for this pair. Default: `limits.max_in_flight`.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// One `[[outputs]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputConfig {
    /// One JSON object per result record, appended to `path`.
    Jsonl {
        /// File to append to (created if missing).
        path: PathBuf,
    },
    /// One JSON object per result record on standard output.
    Stdout,
}

fn default_format() -> PixelFormat {
    PixelFormat::Nv12
}
fn default_true() -> bool {
    true
}
fn default_speed() -> f64 {
    1.0
}
fn default_batch_delay() -> u64 {
    2_000
}
fn default_one() -> u32 {
    1
}
fn default_score() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}

/// Why the config file could not be loaded (before validation).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Config file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("config {path}: {message}")]
    Parse {
        /// Config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override holds a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

impl Config {
    /// Parses TOML text; relative paths are resolved against `base_dir`.
    pub fn from_toml(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, LoadError> {
        let mut config: Config = toml::from_str(text).map_err(|e| LoadError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        config.resolve_paths(base_dir);
        Ok(config)
    }

    /// Reads and parses `path`, then applies the environment overrides. Does not
    /// validate: call [`validate()`].
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let mut config = Config::from_toml(&text, path, &base)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        // Scale-out: keep only this replica's cameras (FRAMEBUS_SHARD_*; docs/deploy.md).
        if let Some(shard) = crate::shard::Shard::from_env(|name| std::env::var(name).ok())
            .map_err(|e| LoadError::Env {
                name: e.variable(),
                value: std::env::var(e.variable()).unwrap_or_default(),
                reason: e.to_string(),
            })?
        {
            shard.retain(&mut config);
        }
        Ok(config)
    }

    /// Applies `FRAMEBUS_*` overrides read through `get` (injected for tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), LoadError> {
        if let Some(v) = get(ENV_LOG).filter(|v| !v.trim().is_empty()) {
            self.agent.log = v;
        }
        if let Some(v) = get(ENV_LOG_FORMAT).filter(|v| !v.trim().is_empty()) {
            self.agent.log_format = v.parse().map_err(|reason| LoadError::Env {
                name: ENV_LOG_FORMAT,
                value: v.clone(),
                reason,
            })?;
        }
        for (name, dir) in [
            (ENV_RING_DIR, &mut self.agent.ring_dir),
            (ENV_SOCKET_DIR, &mut self.agent.socket_dir),
        ] {
            if let Some(v) = get(name).filter(|v| !v.trim().is_empty()) {
                let p = PathBuf::from(&v);
                if !p.is_absolute() {
                    return Err(LoadError::Env {
                        name,
                        value: v,
                        reason: "must be an absolute path".to_owned(),
                    });
                }
                *dir = p;
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.agent.ring_dir);
        abs(&mut self.agent.socket_dir);
        if let Some(dir) = self.agent.bin_dir.as_mut() {
            abs(dir);
        }
        if let Some(f) = self.agent.api_token_file.as_mut() {
            abs(f);
        }
        for dir in &mut self.agent.media_dirs {
            abs(dir);
        }
        for cam in &mut self.cameras {
            if !cam.is_url() && Path::new(&cam.source).is_relative() && !cam.source.is_empty() {
                cam.source = base.join(&cam.source).to_string_lossy().into_owned();
            }
        }
        for model in &mut self.models {
            abs(&mut model.path);
            if let Some(s) = model.socket.as_mut() {
                abs(s);
            }
        }
        for out in &mut self.outputs {
            if let OutputConfig::Jsonl { path } = out {
                abs(path);
            }
        }
        if let Some(p) = self.analytics.events_path.as_mut() {
            abs(p);
        }
        if let Some(p) = self.analytics.counts_dir.as_mut() {
            abs(p);
        }
        // Only when used, so a config without clips keeps the default as written.
        if self.clips.any() {
            abs(&mut self.clips.dir);
        }
    }

    /// The camera with this id.
    pub fn camera(&self, id: &str) -> Option<&CameraConfig> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// The model with this id.
    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The highest rate any subscription asks of one camera (`None`: none subscribed),
    /// passed to its kernel as `--consumer-fps`.
    pub fn consumer_fps(&self, camera: &str) -> Option<f64> {
        self.subscriptions_of(camera)
            .map(|s| s.fps)
            .fold(None, |m, f| Some(m.map_or(f, |m: f64| m.max(f))))
    }

    /// Subscriptions of one camera.
    pub fn subscriptions_of<'a>(
        &'a self,
        camera: &'a str,
    ) -> impl Iterator<Item = &'a SubscriptionConfig> + 'a {
        self.subscriptions
            .iter()
            .filter(move |s| s.camera == camera)
    }

    /// Renders the config back to TOML (used to show the demo's generated config).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[cameras]]
        id = "cam1"
        source = "video.mp4"

        [[models]]
        id = "det"
        path = "models/det.onnx"

        [[subscriptions]]
        camera = "cam1"
        model = "det"
        fps = 5
    "#;

    fn parse(text: &str) -> Result<Config, LoadError> {
        Config::from_toml(text, Path::new("test.toml"), Path::new("/etc/framebus"))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.agent.api_addr.to_string(), "127.0.0.1:7878");
        assert_eq!(c.agent.ring_dir, PathBuf::from("/dev/shm/framebus"));
        assert_eq!(
            c.agent.socket_dir,
            shm_ring::owned_dir::default_socket_dir()
        );
        assert_eq!(c.limits.max_in_flight, 1);
        assert_eq!(c.supervisor.restart_limit, 5);
        let cam = &c.cameras[0];
        assert_eq!(cam.format, PixelFormat::Nv12);
        assert_eq!(cam.transport, Transport::Tcp);
        assert!(cam.enabled && cam.realtime && cam.loop_file);
        assert_eq!(cam.ring_name(), "cam1");
        assert_eq!(*cam.motion, MotionConfig::default());
        assert!(!cam.motion.enabled);
        assert_eq!((cam.motion.threshold, cam.motion.pixel_delta), (0.002, 20));
        assert_eq!(
            (cam.motion.thumbnail_width, cam.motion.keepalive_fps),
            (96, 1.0)
        );
        let motion = parse(&MINIMAL.replace(
            "source = \"video.mp4\"",
            "source = \"video.mp4\"\n[cameras.motion]\nenabled = true\nmasks = [[[0, 0], [0.5, 0], [0.5, 1]]]",
        ))
        .unwrap();
        assert!(motion.cameras[0].motion.enabled);
        assert_eq!(motion.cameras[0].motion.masks[0][1], [0.5, 0.0]);
        let err = parse(&MINIMAL.replace(
            "source = \"video.mp4\"",
            "source = \"video.mp4\"\n[cameras.motion]\nthreshhold = 0.1",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
        let m = &c.models[0];
        assert_eq!(m.family, ModelFamily::Auto);
        assert_eq!((m.threads, m.instances, m.max_batch), (None, None, 1));
        assert!(!m.spin);
        let spin = parse(&MINIMAL.replace("models/det.onnx\"", "models/det.onnx\"\nspin = true"));
        assert!(spin.unwrap().models[0].spin);
        assert_eq!(
            m.socket_path(Path::new("/run/fb")),
            PathBuf::from("/run/fb/det.sock")
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cameras[0].source, "/etc/framebus/video.mp4");
        assert_eq!(
            c.models[0].path,
            PathBuf::from("/etc/framebus/models/det.onnx")
        );
        let url = parse(&MINIMAL.replace("video.mp4", "rtsp://127.0.0.1:8554/a")).unwrap();
        assert_eq!(url.cameras[0].source, "rtsp://127.0.0.1:8554/a");
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        for (table, bad) in [
            ("top", "bogus = 1\n"),
            ("agent", "[agent]\nbogus = 1\n"),
            ("limits", "[limits]\nbogus = 1\n"),
            ("supervisor", "[supervisor]\nbogus = 1\n"),
        ] {
            let err = parse(&format!("{bad}{MINIMAL}")).unwrap_err();
            assert!(err.to_string().contains("bogus"), "{table}: {err}");
        }
        let err = parse(&MINIMAL.replace("fps = 5", "fps = 5\nfsp = 3")).unwrap_err();
        assert!(err.to_string().contains("fsp"), "{err}");
        let err = parse("[[outputs]]\ntype = \"jsonl\"\npath = \"a\"\nmode = 1\n").unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        let err = parse("[[outputs]]\ntype = \"kafka\"\n").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn env_overrides_win_and_are_checked() {
        let mut c = parse(MINIMAL).unwrap();
        let env = |k: &str| match k {
            ENV_LOG => Some("debug".to_owned()),
            ENV_LOG_FORMAT => Some("JSON".to_owned()),
            ENV_RING_DIR => Some("/tmp/rings".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.agent.log, "debug");
        assert_eq!(c.agent.log_format, LogFormat::Json);
        assert_eq!(c.agent.ring_dir, PathBuf::from("/tmp/rings"));
        assert_eq!(
            c.agent.socket_dir,
            shm_ring::owned_dir::default_socket_dir()
        );

        let err = c
            .apply_env(|k| (k == ENV_SOCKET_DIR).then(|| "rel/dir".to_owned()))
            .unwrap_err();
        assert!(matches!(
            err,
            LoadError::Env {
                name: ENV_SOCKET_DIR,
                ..
            }
        ));
        let err = c
            .apply_env(|k| (k == ENV_LOG_FORMAT).then(|| "xml".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("xml"));
    }

    #[test]
    fn renders_back_to_toml_that_parses() {
        let mut c = parse(MINIMAL).unwrap();
        c.outputs.push(OutputConfig::Jsonl {
            path: "/tmp/r.jsonl".into(),
        });
        c.outputs.push(OutputConfig::Stdout);
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }
}
