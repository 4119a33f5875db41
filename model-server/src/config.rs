//! Server settings: command-line flags (each with its documented default) and their
//! validation, which reports every problem at once.

use std::path::PathBuf;
use std::time::Duration;

use crate::family::FamilyChoice;
use crate::session::Device;

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
    /// Chosen at load (see `crate::calibrate`).
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

/// Every setting of one model server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
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
    #[arg(long, default_value = shm_ring::DEFAULT_RING_DIR)]
    pub ring_dir: PathBuf,
    /// Model family (pre/post-processing); `auto` detects it from the output shape and
    /// metadata.
    #[arg(long, value_enum, default_value_t = FamilyChoice::Auto)]
    pub family: FamilyChoice,
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
    #[arg(long, default_value_t = 64)]
    pub max_queue_per_source: usize,
    /// Longest wait in the queue in milliseconds before a request is shed (`overloaded`,
    /// no inference) when fresher work waits (always past twice it); `auto`: 4 x the
    /// recent batch run time, at least 100 ms, what core-agent passes (its agents want the
    /// freshest frame, not a late answer); 0 (the default): no bound, every accepted
    /// request is run (or answered `deadline_exceeded` past its own deadline).
    #[arg(long, default_value_t = Setting::Fixed(0))]
    pub max_queue_wait_ms: Setting,
    /// How long the oldest queued request waits for a batch to fill, in microseconds.
    #[arg(long, default_value_t = 2000)]
    pub batch_delay_us: u64,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.25)]
    pub score_threshold: f32,
    /// IoU above which NMS drops the weaker box of the same class.
    #[arg(long, default_value_t = 0.45)]
    pub iou_threshold: f32,
    /// Most detections per frame.
    #[arg(long, default_value_t = 100)]
    pub max_detections: usize,
    /// Concurrent client connections; further ones get `overloaded` and are closed.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Inference requests accepted but not yet answered, over all connections; further
    /// ones get `overloaded` at once.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// Socket file permission bits (octal).
    #[arg(long, default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Largest message payload in bytes; a longer length prefix gets `payload_too_large`
    /// and the connection is closed.
    #[arg(long, default_value_t = proto_schema::framing::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Once the first byte of a message has arrived, the rest must arrive within this many
    /// milliseconds, else the connection is closed (a stalled half-sent frame).
    #[arg(long, default_value_t = 5000)]
    pub read_timeout_ms: u64,
    /// A connection with no complete request and nothing in flight for this many
    /// milliseconds is closed, so idle clients cannot hold the connection limit; 0
    /// keeps them open forever.
    #[arg(long, default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Control socket: answers only `ping`, `get_status`, `get_stats` and `shutdown`,
    /// has its own small connection limit (4) and mode 0600, so the supervisor's health
    /// checks never compete with data clients for `--max-connections`. Default: none.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// On shutdown, longest wait for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_s: u64,
    /// Whether idle ONNX Runtime intra-op threads spin waiting for work. Off by default:
    /// spinning buys little latency on an idle machine and costs a lot when decoders and
    /// other servers share the cores (measured 2x slower runs under contention).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub spin: bool,
    /// Tokio threads for socket I/O.
    #[arg(long, default_value_t = 1)]
    pub io_threads: usize,
    /// Class names, one per line, overriding the model's `names` metadata.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Path of `libonnxruntime.so`.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: PathBuf,
}

/// The settings were rejected; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Default of `--calibration-ms`.
pub const DEFAULT_CALIBRATION_MS: u64 = 4000;
/// Largest `--calibration-ms`.
pub const MAX_CALIBRATION_MS: u64 = 5000;
/// Floor of the `auto` queue wait bound.
pub const AUTO_WAIT_FLOOR: Duration = Duration::from_millis(100);

/// Hard upper bounds, so a typo cannot ask for a million threads.
const MAX_INSTANCES: usize = 64;
const MAX_THREADS: usize = 256;
pub const MAX_BATCH: usize = 64;
const MAX_FRAME_LIMIT: usize = 64 << 20;
const MIN_FRAME_LIMIT: usize = 1024;

impl ServerConfig {
    /// The model id: `--model-id`, else the model file's stem.
    pub fn model_id(&self) -> String {
        self.model_id.clone().unwrap_or_else(|| {
            self.model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// The queue wait bound policy.
    pub fn max_wait(&self) -> crate::batcher::MaxWait {
        use crate::batcher::MaxWait;
        match self.max_queue_wait_ms {
            Setting::Auto => MaxWait::Auto {
                floor: AUTO_WAIT_FLOOR,
            },
            Setting::Fixed(0) => MaxWait::Off,
            Setting::Fixed(ms) => MaxWait::Fixed(Duration::from_millis(ms as u64)),
        }
    }

    /// Partial-frame read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// Idle connection timeout; `None` for never.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    /// Checks every setting; the error lists all problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let id = self.model_id();
        if !proto_schema::message::is_valid_name(&id) {
            p.push(format!(
                "model id {id:?} breaks the name rule ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$ \
                 (set --model-id)"
            ));
        }
        if !self.model.is_file() {
            p.push(format!("--model {}: no such file", self.model.display()));
        } else if let Err(e) = proto_schema::onnx_sniff::check_onnx_file(&self.model) {
            p.push(format!("--model {e}"));
        }
        // The server only reads rings, so it never creates their directory: it must
        // be one the service owns (frame-kernel or core-agent created it), never a
        // world-writable one where another user could plant or truncate rings.
        if let Err(e) = shm_ring::owned_dir::check_owned_dir(&self.ring_dir) {
            p.push(format!("--ring-dir: {e}"));
        }
        if self.socket.as_os_str().is_empty() {
            p.push("--socket: empty path".into());
        } else if self.socket.as_os_str().len() > 107 {
            p.push(format!(
                "--socket {}: longer than the 107 bytes a Unix socket path may have",
                self.socket.display()
            ));
        }
        if let Some(ctl) = &self.control_socket {
            if ctl.as_os_str().len() > 107 || ctl.as_os_str().is_empty() {
                p.push(format!(
                    "--control-socket {}: empty or longer than 107 bytes",
                    ctl.display()
                ));
            } else if *ctl == self.socket {
                p.push("--control-socket: must differ from --socket".into());
            }
        }
        if let Some(labels) = &self.labels {
            if !labels.is_file() {
                p.push(format!("--labels {}: no such file", labels.display()));
            }
        }
        let mut range = |name: &str, v: usize, lo: usize, hi: usize| {
            if !(lo..=hi).contains(&v) {
                p.push(format!("{name} {v}: must be {lo}..={hi}"));
            }
        };
        if let Some(n) = self.instances.fixed() {
            range("--instances", n, 1, MAX_INSTANCES);
        }
        if let Some(n) = self.threads.fixed() {
            range("--threads", n, 1, MAX_THREADS);
        }
        if let Some(n) = self.max_batch.fixed() {
            range("--max-batch", n, 1, MAX_BATCH);
        }
        if let Some(n) = self.max_queue_wait_ms.fixed() {
            range("--max-queue-wait-ms", n, 0, 3_600_000);
        }
        range(
            "--max-queue-per-source",
            self.max_queue_per_source,
            1,
            1 << 20,
        );
        range(
            "--calibration-ms",
            self.calibration_ms as usize,
            0,
            MAX_CALIBRATION_MS as usize,
        );
        range("--io-threads", self.io_threads, 1, MAX_THREADS);
        range("--max-detections", self.max_detections, 1, 10_000);
        range("--max-connections", self.max_connections, 1, 1 << 20);
        range("--max-inflight", self.max_inflight, 1, 1 << 20);
        range(
            "--max-frame",
            self.max_frame,
            MIN_FRAME_LIMIT,
            MAX_FRAME_LIMIT,
        );
        if self.batch_delay_us > 1_000_000 {
            p.push(format!(
                "--batch-delay-us {}: at most 1000000 (1 s)",
                self.batch_delay_us
            ));
        }
        for (name, v) in [
            ("--score-threshold", self.score_threshold),
            ("--iou-threshold", self.iou_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("{name} {v}: must be within 0..=1"));
            }
        }
        if self.read_timeout_ms == 0 {
            p.push("--read-timeout-ms: must be positive".into());
        }
        if !self.ort_dylib.is_file() {
            p.push(format!(
                "ONNX Runtime library {}: no such file (set --ort-dylib or ORT_DYLIB_PATH)",
                self.ort_dylib.display()
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: ServerConfig,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        let mut all = vec!["model-server", "--ort-dylib", "/nonexistent/libort.so"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.config)
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
        assert_eq!(c.max_inflight, 64);
        assert_eq!(c.family, FamilyChoice::Auto);
        assert_eq!(c.calibration_ms, DEFAULT_CALIBRATION_MS);
        assert_eq!(c.max_queue_per_source, 64);
        assert_eq!(c.max_wait(), crate::batcher::MaxWait::Off);
        assert!(!c.spin);
        let fixed = parse(&[
            "--model",
            "m.onnx",
            "--socket",
            "s",
            "--threads",
            "1",
            "--instances",
            "2",
            "--max-batch",
            "4",
            "--max-queue-wait-ms",
            "auto",
        ])
        .unwrap();
        assert_eq!(
            (fixed.threads, fixed.instances, fixed.max_batch),
            (Setting::Fixed(1), Setting::Fixed(2), Setting::Fixed(4))
        );
        assert_eq!(
            fixed.max_wait(),
            crate::batcher::MaxWait::Auto {
                floor: AUTO_WAIT_FLOOR
            }
        );
        assert!(parse(&["--model", "m", "--socket", "s", "--threads", "two"]).is_err());
    }

    #[test]
    fn socket_mode_is_octal_and_bounded() {
        let base = ["--model", "m.onnx", "--socket", "s"];
        let with = |m: &str| {
            let mut a = base.to_vec();
            a.extend(["--socket-mode", m]);
            parse(&a).map(|c| c.socket_mode)
        };
        assert_eq!(with("0600").unwrap(), 0o600);
        assert_eq!(with("640").unwrap(), 0o640);
        assert!(with("0999").is_err());
        assert!(with("01777").is_err());
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = parse(&[
            "--model",
            "/nonexistent/model.onnx",
            "--model-id",
            "../evil",
            "--socket",
            "/tmp/x.sock",
            "--ring-dir",
            "/nonexistent-dir",
            "--instances",
            "0",
            "--score-threshold",
            "1.5",
            "--max-frame",
            "10",
            "--calibration-ms",
            "60000",
        ])
        .unwrap();
        let e = c.validate().unwrap_err();
        let all = e.problems.join("\n");
        for needle in [
            "model id",
            "--model ",
            "--ring-dir",
            "--instances",
            "--score-threshold",
            "--max-frame",
            "--calibration-ms",
            "ONNX Runtime library",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(e.problems.len(), 8, "{all}");
    }

    /// Issue 10: rings are only read from a directory the service owns; a world-writable
    /// one (like `/dev/shm` itself) or one another user created is refused.
    #[test]
    fn ring_dir_must_be_an_owned_directory() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let problems = |dir: &std::path::Path| {
            let c = parse(&[
                "--model",
                "m.onnx",
                "--socket",
                "/tmp/x.sock",
                "--ring-dir",
                dir.to_str().unwrap(),
            ])
            .unwrap();
            let e = c.validate().unwrap_err();
            e.problems
                .into_iter()
                .filter(|p| p.starts_with("--ring-dir"))
                .collect::<Vec<_>>()
        };
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(problems(t.path()), Vec::<String>::new());
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let p = problems(&open);
        assert!(p.len() == 1 && p[0].contains("too open"), "{p:?}");
        if shm_ring::owned_dir::effective_uid() != 0 {
            eprintln!("skipped the foreign-owner case: chown needs root");
            return;
        }
        let foreign = t.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let p = problems(&foreign);
        assert!(p.len() == 1 && p[0].contains("owned by uid 65534"), "{p:?}");
    }
}
