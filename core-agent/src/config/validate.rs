//! Validation of a parsed [`Config`] as a whole. Every check runs; the result lists
//! every problem, so one edit-run cycle fixes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use proto_schema::pixel::FrameGeometry;
use proto_schema::text::hidden_chars;
use shm_ring::validate_ring_name;

use super::{CameraConfig, Config, OutputConfig};

/// One problem found in a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// An id (camera, model, ring) breaks the name rule `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
    #[error("{kind} id {id:?} is not a valid name: {reason}")]
    InvalidId {
        /// `camera`, `model` or `ring`.
        kind: &'static str,
        /// The id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries of one kind share an id.
    #[error("duplicate {kind} id {id:?}")]
    DuplicateId {
        /// `camera` or `model`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A subscription names a camera that is not configured.
    #[error("subscription #{index} names unknown camera {camera:?}")]
    UnknownCamera {
        /// Position of the subscription (1-based).
        index: usize,
        /// The camera id it names.
        camera: String,
    },
    /// A subscription names a model that is not configured.
    #[error("subscription #{index} ({camera} -> {model}) names unknown model {model:?}")]
    UnknownModel {
        /// Position of the subscription (1-based).
        index: usize,
        /// Its camera.
        camera: String,
        /// The model id it names.
        model: String,
    },
    /// The same (camera, model) pair is subscribed twice.
    #[error("camera {camera:?} subscribes to model {model:?} twice")]
    DuplicateSubscription {
        /// Camera id.
        camera: String,
        /// Model id.
        model: String,
    },
    /// A subscription rate that is not a positive finite number.
    #[error("subscription {camera} -> {model}: fps {fps} must be a positive number")]
    InvalidFps {
        /// Camera id.
        camera: String,
        /// Model id.
        model: String,
        /// The rate given.
        fps: f64,
    },
    /// A subscription asks for more frames than the camera delivers.
    #[error("subscription {camera} -> {model}: fps {fps} is above the camera's {camera_fps} fps")]
    FpsAboveCamera {
        /// Camera id.
        camera: String,
        /// Model id.
        model: String,
        /// The rate asked for.
        fps: f64,
        /// The camera's rate.
        camera_fps: f64,
    },
    /// Two processes would listen on one socket.
    #[error("models {first:?} and {second:?} both claim socket {path}")]
    SharedSocket {
        /// The socket path.
        path: PathBuf,
        /// First model.
        first: String,
        /// Second model.
        second: String,
    },
    /// Two cameras' kernels would write one ring.
    #[error("cameras {first:?} and {second:?} both claim ring {ring:?}")]
    SharedRing {
        /// Ring name.
        ring: String,
        /// First camera.
        first: String,
        /// Second camera.
        second: String,
    },
    /// The camera's output size or format cannot be laid out in a ring.
    #[error("camera {camera:?}: {reason}")]
    InvalidGeometry {
        /// Camera id.
        camera: String,
        /// Why.
        reason: String,
    },
    /// A camera without a source.
    #[error("camera {camera:?}: source is empty")]
    EmptySource {
        /// Camera id.
        camera: String,
    },
    /// A camera's source file does not exist.
    #[error("camera {camera:?}: source file {path} does not exist")]
    MissingSourceFile {
        /// Camera id.
        camera: String,
        /// The file.
        path: PathBuf,
    },
    /// A model file does not exist.
    #[error("model {model:?}: file {path} does not exist")]
    MissingModelFile {
        /// Model id.
        model: String,
        /// The file.
        path: PathBuf,
    },
    /// A model file is not an ONNX model (`--check` only: a text file, an empty or
    /// truncated file).
    #[error("model {model:?}: {reason}")]
    NotOnnx {
        /// Model id.
        model: String,
        /// Why, naming the file.
        reason: String,
    },
    /// A numeric setting outside its range.
    #[error("{field}: {value} is out of range ({expected})")]
    OutOfRange {
        /// Dotted path of the setting, e.g. `models.det.threads`.
        field: String,
        /// The value given.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// The API would listen on a non-loopback address.
    #[error("agent.api_addr {addr} is not a loopback address (only loopback is allowed)")]
    NonLoopbackApi {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// More cameras or models than the limits allow.
    #[error("{count} {kind} configured, limit is {max}")]
    TooMany {
        /// `cameras` or `models`.
        kind: &'static str,
        /// How many are configured.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two outputs write one file.
    #[error("two outputs write the same file {path}")]
    SharedOutput {
        /// The file.
        path: PathBuf,
    },
    /// A camera source with a control character (newline, CR, NUL, DEL, ...): it
    /// could forge log lines or smuggle arguments; or with an invisible format
    /// character (a bidi override, a zero-width space, ...; [`proto_schema::text`]):
    /// it makes the source display as something else. The source is shown redacted.
    #[error("camera {camera:?}: source {redacted:?} contains {count} control character(s), the first ({code}) at byte {at}")]
    ControlCharacter {
        /// Camera id.
        camera: String,
        /// The source, credentials redacted.
        redacted: String,
        /// How many control and format characters it holds.
        count: usize,
        /// The first one, as `U+000A` or `U+202E, a bidi control`.
        code: String,
        /// Byte offset of the first one.
        at: usize,
    },
    /// A camera added through the API names a URL scheme other than `rtsp` or `rtsps`
    /// (`file://`, `http://`, ... would let an API client make the kernel open any file
    /// or URL).
    #[error("camera {camera:?}: source scheme {scheme:?} is not allowed through the API (only rtsp:// and rtsps://, or a file under agent.media_dirs)")]
    SourceScheme {
        /// Camera id.
        camera: String,
        /// The scheme given (before `://`).
        scheme: String,
    },
    /// A file source added through the API that is not an absolute, `..`-free path.
    #[error("camera {camera:?}: source path {path} {reason}")]
    BadSourcePath {
        /// Camera id.
        camera: String,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file source added through the API outside every `agent.media_dirs` entry (or
    /// resolving outside them through a symlink), or any file source while
    /// `agent.media_dirs` is empty.
    #[error("camera {camera:?}: source file {path} {}", outside_text(resolved.as_deref(), media_dirs))]
    SourceOutsideMediaDirs {
        /// Camera id.
        camera: String,
        /// The path given.
        path: PathBuf,
        /// Where it resolves to, when that differs from the path given.
        resolved: Option<PathBuf>,
        /// The configured media directories.
        media_dirs: Vec<PathBuf>,
    },
    /// An `agent.media_dirs` entry that is not an existing directory.
    #[error("agent.media_dirs: {path} is not an existing directory")]
    MissingMediaDir {
        /// The entry.
        path: PathBuf,
    },
    /// A camera's `record_source` that is empty, holds control or format characters
    /// ([`proto_schema::text::is_hidden`]), or is not an
    /// `rtsp://` / `rtsps://` URL. Shown redacted.
    #[error("camera {camera:?}: record_source {redacted:?} {reason}")]
    RecordSource {
        /// Camera id.
        camera: String,
        /// The record source, credentials redacted.
        redacted: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `decode.all_frames = true` (a consumer needs every frame) with a `skip_frames`
    /// that always skips.
    #[error(
        "camera {camera:?}: decode.all_frames = true contradicts decode.skip_frames = {skip:?}"
    )]
    DecodeConflict {
        /// Camera id.
        camera: String,
        /// The `skip_frames` given.
        skip: &'static str,
    },
    /// A `[brokers]` setting that cannot work (bad url, out-of-range number, ...).
    #[error("{key}: {reason}")]
    InvalidBroker {
        /// Dotted key, e.g. `brokers.mqtt.url`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An analytics setting or rule that cannot work (self-intersecting polygon,
    /// zero-length line, unknown class, score out of range, ...).
    #[error("{key}: {reason}")]
    InvalidRule {
        /// Dotted key, e.g. `cameras.door.analytics.zones[0].polygon`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A CPU affinity list that is empty or names a CPU the host lacks.
    #[error("{owner}: cpu_affinity {cpus:?} is empty or names a CPU >= {max}")]
    InvalidAffinity {
        /// `camera X` or `model Y`.
        owner: String,
        /// The list.
        cpus: Vec<usize>,
        /// Number of CPUs the mask can hold.
        max: usize,
    },
}

fn outside_text(resolved: Option<&std::path::Path>, dirs: &[PathBuf]) -> String {
    let via = resolved
        .map(|r| format!("resolves to {} and ", r.display()))
        .unwrap_or_default();
    if dirs.is_empty() {
        format!(
            "{via}is refused: file sources through the API need agent.media_dirs, which is empty"
        )
    } else {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!("{via}is not under agent.media_dirs ({})", list.join(", "))
    }
}

/// Something legal but probably not what was meant; printed at start, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigWarning {
    /// No cameras and no models: the agent only serves its API.
    #[error("the config has no cameras and no models, so core-agent will only serve its API; add [[cameras]], [[models]] and [[subscriptions]] (see config/example.toml), or run `core-agent --demo`")]
    Empty,
}

/// The warnings of a (valid) config.
pub fn warnings(config: &Config) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    if config.cameras.is_empty() && config.models.is_empty() {
        out.push(ConfigWarning::Empty);
    }
    out
}

/// Every problem of one config.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationErrors(pub Vec<ConfigError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid config: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks `config` and returns every problem found. `check_files` also checks that
/// model and source files exist (off when re-validating at run time, where a file may
/// be in the middle of being replaced).
pub fn validate(config: &Config, check_files: bool) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    check_agent(config, &mut errs);
    if check_files {
        for d in config.agent.media_dirs.iter().filter(|d| !d.is_dir()) {
            errs.push(ConfigError::MissingMediaDir { path: d.clone() });
        }
    }
    let cameras = check_cameras(config, check_files, &mut errs);
    let models = check_models(config, check_files, &mut errs);
    check_subscriptions(config, &cameras, &models, &mut errs);
    check_outputs(config, &mut errs);
    super::analytics::check(config, &mut errs);
    super::api::check(config, &mut errs);
    super::dashboard::check(config, &mut errs);
    super::live::check(config, &mut errs);
    super::clips::check(config, &mut errs);
    super::outputs::check(config, check_files, &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs))
    }
}

fn range(
    errs: &mut Vec<ConfigError>,
    ok: bool,
    field: String,
    value: impl fmt::Display,
    expected: &'static str,
) {
    if !ok {
        errs.push(ConfigError::OutOfRange {
            field,
            value: value.to_string(),
            expected,
        });
    }
}

fn check_agent(c: &Config, errs: &mut Vec<ConfigError>) {
    if !c.agent.api_addr.ip().is_loopback() {
        errs.push(ConfigError::NonLoopbackApi {
            addr: c.agent.api_addr,
        });
    }
    let l = &c.limits;
    range(
        errs,
        l.max_in_flight >= 1 && l.max_in_flight <= 64,
        "limits.max_in_flight".into(),
        l.max_in_flight,
        "1..=64",
    );
    range(
        errs,
        l.result_queue >= 1 && l.result_queue <= 1 << 20,
        "limits.result_queue".into(),
        l.result_queue,
        "1..=1048576",
    );
    range(
        errs,
        l.max_cameras >= 1,
        "limits.max_cameras".into(),
        l.max_cameras,
        ">= 1",
    );
    range(
        errs,
        l.max_models >= 1,
        "limits.max_models".into(),
        l.max_models,
        ">= 1",
    );
    range(
        errs,
        l.request_timeout_ms >= 10,
        "limits.request_timeout_ms".into(),
        l.request_timeout_ms,
        ">= 10",
    );
    range(
        errs,
        l.server_idle_timeout_ms == 0 || l.server_idle_timeout_ms >= 100,
        "limits.server_idle_timeout_ms".into(),
        l.server_idle_timeout_ms,
        "0 (never) or >= 100",
    );
    range(
        errs,
        l.max_message_bytes >= 4096,
        "limits.max_message_bytes".into(),
        l.max_message_bytes,
        ">= 4096",
    );
    let s = &c.supervisor;
    range(
        errs,
        s.backoff_initial_ms >= 1,
        "supervisor.backoff_initial_ms".into(),
        s.backoff_initial_ms,
        ">= 1",
    );
    range(
        errs,
        s.backoff_max_ms >= s.backoff_initial_ms,
        "supervisor.backoff_max_ms".into(),
        s.backoff_max_ms,
        ">= backoff_initial_ms",
    );
    range(
        errs,
        s.restart_limit >= 1,
        "supervisor.restart_limit".into(),
        s.restart_limit,
        ">= 1",
    );
    range(
        errs,
        s.restart_window_s >= 1,
        "supervisor.restart_window_s".into(),
        s.restart_window_s,
        ">= 1",
    );
    range(
        errs,
        s.health_interval_ms >= 10,
        "supervisor.health_interval_ms".into(),
        s.health_interval_ms,
        ">= 10",
    );
    range(
        errs,
        s.ping_timeout_ms >= 10,
        "supervisor.ping_timeout_ms".into(),
        s.ping_timeout_ms,
        ">= 10",
    );
    range(
        errs,
        s.unhealthy_after >= 1,
        "supervisor.unhealthy_after".into(),
        s.unhealthy_after,
        ">= 1",
    );
    range(
        errs,
        s.heartbeat_timeout_ms >= 100,
        "supervisor.heartbeat_timeout_ms".into(),
        s.heartbeat_timeout_ms,
        ">= 100",
    );
    range(
        errs,
        s.ready_timeout_s >= 1,
        "supervisor.ready_timeout_s".into(),
        s.ready_timeout_s,
        ">= 1",
    );
    range(
        errs,
        s.failed_retry_s <= 86_400,
        "supervisor.failed_retry_s".into(),
        s.failed_retry_s,
        "0 (never) or up to 86400 (a day)",
    );
    range(
        errs,
        c.agent.table_interval_s >= 1,
        "agent.table_interval_s".into(),
        c.agent.table_interval_s,
        ">= 1",
    );
}

fn check_id(kind: &'static str, id: &str, errs: &mut Vec<ConfigError>) -> bool {
    match validate_ring_name(id) {
        Ok(()) => true,
        Err(e) => {
            errs.push(ConfigError::InvalidId {
                kind,
                id: id.to_owned(),
                reason: e.to_string(),
            });
            false
        }
    }
}

fn check_affinity(owner: String, cpus: &Option<Vec<usize>>, errs: &mut Vec<ConfigError>) {
    if let Some(cpus) = cpus {
        let max = crate::supervisor::child::MAX_CPUS;
        if cpus.is_empty() || cpus.iter().any(|&c| c >= max) {
            errs.push(ConfigError::InvalidAffinity {
                owner,
                cpus: cpus.clone(),
                max,
            });
        }
    }
}

/// Checks one camera on its own (shared by the config and the `POST /cameras` API).
pub fn check_camera(cam: &CameraConfig, check_files: bool, errs: &mut Vec<ConfigError>) {
    check_id("camera", &cam.id, errs);
    if let Some(ring) = &cam.ring {
        check_id("ring", ring, errs);
    }
    // The one place a source's characters are checked (file, reload, --check, API).
    let controls: Vec<(usize, char)> = hidden_chars(&cam.source).collect();
    if let Some(&(at, c)) = controls.first() {
        errs.push(ConfigError::ControlCharacter {
            camera: cam.id.clone(),
            redacted: proto_schema::redact::redact_url(&cam.source).into_owned(),
            count: controls.len(),
            code: proto_schema::text::describe(c),
            at,
        });
    } else if cam.source.trim().is_empty() {
        errs.push(ConfigError::EmptySource {
            camera: cam.id.clone(),
        });
    } else if check_files && !cam.is_url() && !std::path::Path::new(&cam.source).is_file() {
        errs.push(ConfigError::MissingSourceFile {
            camera: cam.id.clone(),
            path: PathBuf::from(&cam.source),
        });
    }
    match (cam.width, cam.height) {
        (Some(w), Some(h)) => {
            if let Err(e) = FrameGeometry::packed(w, h, cam.format) {
                errs.push(ConfigError::InvalidGeometry {
                    camera: cam.id.clone(),
                    reason: e.to_string(),
                });
            }
        }
        (None, None) => {}
        _ => errs.push(ConfigError::InvalidGeometry {
            camera: cam.id.clone(),
            reason: "width and height must be given together".to_owned(),
        }),
    }
    if let Some(fps) = cam.fps {
        range(
            errs,
            fps.is_finite() && fps > 0.0 && fps <= 1000.0,
            format!("cameras.{}.fps", cam.id),
            fps,
            "0 < fps <= 1000",
        );
    }
    if let Some(mb) = cam.rss_limit_mb {
        range(
            errs,
            mb >= 16,
            format!("cameras.{}.rss_limit_mb", cam.id),
            mb,
            ">= 16",
        );
    }
    if let Some(n) = cam.ring_slots {
        use shm_ring::layout::{MAX_SLOTS, MIN_SLOTS};
        range(
            errs,
            (MIN_SLOTS..=MAX_SLOTS).contains(&n),
            format!("cameras.{}.ring_slots", cam.id),
            n,
            "2..=1024",
        );
    }
    range(
        errs,
        (0.05..=20.0).contains(&cam.speed) && (cam.speed == 1.0 || !cam.is_url()),
        format!("cameras.{}.speed", cam.id),
        cam.speed,
        "0.05..=20, and 1 for rtsp:// sources",
    );
    check_affinity(format!("camera {}", cam.id), &cam.cpu_affinity, errs);
    check_motion(cam, errs);
    check_decode(cam, errs);
}

/// Most polygons in `cameras.motion.masks`, and points per polygon.
pub const MAX_MOTION_MASKS: usize = 32;
/// Most points of one motion mask polygon.
pub const MAX_MASK_POINTS: usize = 64;

fn check_motion(cam: &CameraConfig, errs: &mut Vec<ConfigError>) {
    let m = &cam.motion;
    let field = |k: &str| format!("cameras.{}.motion.{k}", cam.id);
    range(
        errs,
        m.threshold.is_finite() && m.threshold > 0.0 && m.threshold <= 1.0,
        field("threshold"),
        m.threshold,
        "0 < threshold <= 1",
    );
    range(
        errs,
        m.pixel_delta >= 1,
        field("pixel_delta"),
        m.pixel_delta,
        "1..=255",
    );
    range(
        errs,
        (8..=640).contains(&m.thumbnail_width),
        field("thumbnail_width"),
        m.thumbnail_width,
        "8..=640",
    );
    range(
        errs,
        m.keepalive_fps.is_finite() && (0.0..=1000.0).contains(&m.keepalive_fps),
        field("keepalive_fps"),
        m.keepalive_fps,
        "0..=1000",
    );
    range(
        errs,
        m.masks.len() <= MAX_MOTION_MASKS,
        field("masks"),
        format!("{} polygons", m.masks.len()),
        "at most 32 polygons",
    );
    for (i, poly) in m.masks.iter().enumerate().take(MAX_MOTION_MASKS) {
        let ok = (3..=MAX_MASK_POINTS).contains(&poly.len())
            && poly
                .iter()
                .flatten()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v));
        range(
            errs,
            ok,
            field(&format!("masks[{i}]")),
            format!("{poly:?}"),
            "3 to 64 [x, y] points with 0 <= x, y <= 1",
        );
    }
}

/// `record_source` and `[cameras.decode]` (the config file and the API alike).
fn check_decode(cam: &CameraConfig, errs: &mut Vec<ConfigError>) {
    use crate::config::SkipFramesSetting;
    if let Some(rs) = &cam.record_source {
        let scheme_ok = rs.split_once("://").is_some_and(|(s, rest)| {
            API_SCHEMES.iter().any(|a| s.eq_ignore_ascii_case(a)) && !rest.is_empty()
        });
        let reason = if hidden_chars(rs).next().is_some() {
            Some("contains control or invisible format characters")
        } else if rs.trim().is_empty() {
            Some("is empty")
        } else if !scheme_ok {
            Some("must be an rtsp:// or rtsps:// URL")
        } else {
            None
        };
        if let Some(reason) = reason {
            errs.push(ConfigError::RecordSource {
                camera: cam.id.clone(),
                redacted: proto_schema::redact::redact_url(rs).into_owned(),
                reason,
            });
        }
    }
    let skip = cam.decode.skip_frames;
    if cam.decode.all_frames && matches!(skip, SkipFramesSetting::Bidir | SkipFramesSetting::Noref)
    {
        errs.push(ConfigError::DecodeConflict {
            camera: cam.id.clone(),
            skip: skip.as_str(),
        });
    }
}

/// URL schemes a camera added through the API may use.
pub const API_SCHEMES: [&str; 2] = ["rtsp", "rtsps"];

/// Checks the source of a camera added through the API, which is less trusted than the
/// config file: only [`API_SCHEMES`] URLs, or an absolute path without `..` under one
/// of `media_dirs` that still is under it once symlinks are resolved. A file source is
/// replaced by its canonical path, so the kernel opens what was checked. Control
/// characters and missing files are left to [`check_camera`]. Returns whether the
/// source passed (then [`check_camera`] may look at the file).
pub fn check_api_source(
    cam: &mut CameraConfig,
    media_dirs: &[PathBuf],
    errs: &mut Vec<ConfigError>,
) -> bool {
    use std::path::{Component, Path};
    let src = cam.source.clone();
    if src.trim().is_empty() {
        return false;
    }
    // Reported by check_camera; the string checks below still run, the file is not
    // looked at.
    let has_control = hidden_chars(&src).next().is_some();
    if let Some((scheme, _)) = src.split_once("://") {
        if API_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
            return !has_control;
        }
        errs.push(ConfigError::SourceScheme {
            camera: cam.id.clone(),
            scheme: scheme.chars().take(32).collect(),
        });
        return false;
    }
    let path = Path::new(&src);
    let bad = |reason| ConfigError::BadSourcePath {
        camera: cam.id.clone(),
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        errs.push(bad("must be an absolute path"));
        return false;
    }
    if path.components().any(|c| c == Component::ParentDir) {
        errs.push(bad("must not contain `..`"));
        return false;
    }
    let outside = |resolved| ConfigError::SourceOutsideMediaDirs {
        camera: cam.id.clone(),
        path: path.to_path_buf(),
        resolved,
        media_dirs: media_dirs.to_vec(),
    };
    if !media_dirs.iter().any(|d| path.starts_with(d)) {
        errs.push(outside(None));
        return false;
    }
    if has_control {
        return false;
    }
    // Symlinks inside a media directory may point out of it: compare resolved paths.
    // A file that does not exist is left to check_camera's "does not exist".
    let Ok(real) = std::fs::canonicalize(path) else {
        return true;
    };
    let inside = media_dirs.iter().any(|d| {
        std::fs::canonicalize(d)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    });
    if !inside {
        errs.push(outside(Some(real)));
        return false;
    }
    cam.source = real.to_string_lossy().into_owned();
    true
}

/// Returns the ids of the cameras, for the subscription checks.
fn check_cameras(
    c: &Config,
    check_files: bool,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, Option<f64>> {
    let mut ids = BTreeMap::new();
    let mut rings: BTreeMap<&str, &str> = BTreeMap::new();
    if c.cameras.len() > c.limits.max_cameras {
        errs.push(ConfigError::TooMany {
            kind: "cameras",
            count: c.cameras.len(),
            max: c.limits.max_cameras,
        });
    }
    for cam in &c.cameras {
        check_camera(cam, check_files, errs);
        if ids.contains_key(&cam.id) {
            errs.push(ConfigError::DuplicateId {
                kind: "camera",
                id: cam.id.clone(),
            });
            continue;
        }
        ids.insert(cam.id.clone(), cam.fps);
        if let Some(first) = rings.insert(cam.ring_name(), &cam.id) {
            errs.push(ConfigError::SharedRing {
                ring: cam.ring_name().to_owned(),
                first: first.to_owned(),
                second: cam.id.clone(),
            });
        }
    }
    ids
}

/// The deep file checks of `--check`: every model file that exists must look like an
/// ONNX model ([`proto_schema::onnx_sniff`]). Kept out of [`validate()`], which also
/// runs at start and on reload, where a model that cannot load is the supervisor's to
/// report and retry (it may be replaced while running).
pub fn check_model_formats(config: &Config) -> Vec<ConfigError> {
    config
        .models
        .iter()
        .filter(|m| m.path.is_file())
        .filter_map(|m| {
            proto_schema::onnx_sniff::check_onnx_file(&m.path)
                .err()
                .map(|e| ConfigError::NotOnnx {
                    model: m.id.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn check_models(c: &Config, check_files: bool, errs: &mut Vec<ConfigError>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut sockets: BTreeMap<PathBuf, &str> = BTreeMap::new();
    if c.models.len() > c.limits.max_models {
        errs.push(ConfigError::TooMany {
            kind: "models",
            count: c.models.len(),
            max: c.limits.max_models,
        });
    }
    for m in &c.models {
        check_id("model", &m.id, errs);
        if !ids.insert(m.id.clone()) {
            errs.push(ConfigError::DuplicateId {
                kind: "model",
                id: m.id.clone(),
            });
            continue;
        }
        if check_files && !m.path.is_file() {
            errs.push(ConfigError::MissingModelFile {
                model: m.id.clone(),
                path: m.path.clone(),
            });
        }
        let f = |name: &str| format!("models.{}.{name}", m.id);
        range(
            errs,
            m.threads.is_none_or(|t| (1..=256).contains(&t)),
            f("threads"),
            m.threads.unwrap_or_default(),
            "1..=256",
        );
        range(
            errs,
            m.instances.is_none_or(|i| (1..=64).contains(&i)),
            f("instances"),
            m.instances.unwrap_or_default(),
            "1..=64",
        );
        range(
            errs,
            (1..=64).contains(&m.max_batch),
            f("max_batch"),
            m.max_batch,
            "1..=64",
        );
        range(
            errs,
            m.batch_delay_us <= 1_000_000,
            f("batch_delay_us"),
            m.batch_delay_us,
            "0..=1000000",
        );
        range(
            errs,
            (0.0..=1.0).contains(&m.score_threshold),
            f("score_threshold"),
            m.score_threshold,
            "0..=1",
        );
        range(
            errs,
            (0.0..=1.0).contains(&m.iou_threshold),
            f("iou_threshold"),
            m.iou_threshold,
            "0..=1",
        );
        if let Some(mb) = m.rss_limit_mb {
            range(errs, mb >= 16, f("rss_limit_mb"), mb, ">= 16");
        }
        check_affinity(format!("model {}", m.id), &m.cpu_affinity, errs);
        let socket = m.socket_path(&c.agent.socket_dir);
        if let Some(first) = sockets.insert(socket.clone(), &m.id) {
            errs.push(ConfigError::SharedSocket {
                path: socket,
                first: first.to_owned(),
                second: m.id.clone(),
            });
        }
    }
    ids
}

fn check_subscriptions(
    c: &Config,
    cameras: &BTreeMap<String, Option<f64>>,
    models: &BTreeSet<String>,
    errs: &mut Vec<ConfigError>,
) {
    let mut pairs = BTreeSet::new();
    for (i, s) in c.subscriptions.iter().enumerate() {
        let camera_fps = match cameras.get(&s.camera) {
            Some(fps) => *fps,
            None => {
                errs.push(ConfigError::UnknownCamera {
                    index: i + 1,
                    camera: s.camera.clone(),
                });
                None
            }
        };
        if !models.contains(&s.model) {
            errs.push(ConfigError::UnknownModel {
                index: i + 1,
                camera: s.camera.clone(),
                model: s.model.clone(),
            });
        }
        if !pairs.insert((s.camera.as_str(), s.model.as_str())) {
            errs.push(ConfigError::DuplicateSubscription {
                camera: s.camera.clone(),
                model: s.model.clone(),
            });
        }
        if !(s.fps.is_finite() && s.fps > 0.0) {
            errs.push(ConfigError::InvalidFps {
                camera: s.camera.clone(),
                model: s.model.clone(),
                fps: s.fps,
            });
        } else if let Some(camera_fps) = camera_fps.filter(|&cf| s.fps > cf) {
            errs.push(ConfigError::FpsAboveCamera {
                camera: s.camera.clone(),
                model: s.model.clone(),
                fps: s.fps,
                camera_fps,
            });
        }
        if let Some(n) = s.max_in_flight {
            range(
                errs,
                (1..=64).contains(&n),
                format!("subscriptions.{}->{}.max_in_flight", s.camera, s.model),
                n,
                "1..=64",
            );
        }
    }
}

fn check_outputs(c: &Config, errs: &mut Vec<ConfigError>) {
    let mut paths = BTreeSet::new();
    for out in &c.outputs {
        if let OutputConfig::Jsonl { path } = out {
            if !paths.insert(path.clone()) {
                errs.push(ConfigError::SharedOutput { path: path.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text, Path::new("t.toml"), Path::new("/cfg")).unwrap()
    }

    const GOOD: &str = r#"
        [[cameras]]
        id = "cam1"
        source = "rtsp://127.0.0.1:8554/a"
        fps = 25
        [[cameras]]
        id = "cam2"
        source = "rtsp://127.0.0.1:8554/b"
        [[models]]
        id = "yolov8n"
        path = "/m/a.onnx"
        [[models]]
        id = "yolox"
        path = "/m/b.onnx"
        [[subscriptions]]
        camera = "cam1"
        model = "yolov8n"
        fps = 5
        [[subscriptions]]
        camera = "cam2"
        model = "yolox"
        fps = 30
        classes = ["person"]
    "#;

    #[test]
    fn a_good_config_passes() {
        validate(&parse(GOOD), false).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = r#"
            [agent]
            api_addr = "0.0.0.0:80"
            [[cameras]]
            id = "cam1"
            source = "rtsp://h/a"
            fps = 25
            [[cameras]]
            id = "cam1"
            source = "rtsp://h/b"
            [[cameras]]
            id = "bad id!"
            source = ""
            width = 641
            height = 480
            [[cameras]]
            id = "cam3"
            source = "rtsp://h/c"
            ring = "cam1"
            [[models]]
            id = "m1"
            path = "/m/a.onnx"
            socket = "/s/x.sock"
            threads = 0
            [[models]]
            id = "m2"
            path = "/m/b.onnx"
            socket = "/s/x.sock"
            score_threshold = 1.5
            [[subscriptions]]
            camera = "cam1"
            model = "nope"
            fps = 5
            [[subscriptions]]
            camera = "cam1"
            model = "m1"
            fps = 30
            [[subscriptions]]
            camera = "cam1"
            model = "m1"
            fps = 1
            [[subscriptions]]
            camera = "ghost"
            model = "m2"
            fps = 0
        "#;
        let errs = validate(&parse(bad), false).unwrap_err().0;
        let has = |f: &dyn Fn(&ConfigError) -> bool| errs.iter().any(f);
        assert!(has(&|e| matches!(e, ConfigError::NonLoopbackApi { .. })));
        assert!(has(
            &|e| matches!(e, ConfigError::DuplicateId { kind: "camera", id } if id == "cam1")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::InvalidId { id, .. } if id == "bad id!")
        ));
        assert!(has(&|e| matches!(e, ConfigError::EmptySource { .. })));
        assert!(has(&|e| matches!(e, ConfigError::InvalidGeometry { .. })));
        assert!(has(
            &|e| matches!(e, ConfigError::SharedRing { ring, first, second } if ring == "cam1" && first == "cam1" && second == "cam3")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::SharedSocket { first, second, .. } if first == "m1" && second == "m2")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::OutOfRange { field, .. } if field == "models.m1.threads")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::OutOfRange { field, .. } if field == "models.m2.score_threshold")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::UnknownModel { model, .. } if model == "nope")
        ));
        assert!(has(
            &|e| matches!(e, ConfigError::FpsAboveCamera { fps, camera_fps, .. } if *fps == 30.0 && *camera_fps == 25.0)
        ));
        assert!(has(&|e| matches!(
            e,
            ConfigError::DuplicateSubscription { .. }
        )));
        assert!(has(
            &|e| matches!(e, ConfigError::UnknownCamera { camera, .. } if camera == "ghost")
        ));
        assert!(has(&|e| matches!(e, ConfigError::InvalidFps { .. })));
        assert_eq!(errs.len(), 14, "{errs:#?}");
        let text = ValidationErrors(errs).to_string();
        assert!(text.starts_with("invalid config: 14 problems"), "{text}");
        assert_eq!(text.lines().count(), 15);
    }

    #[test]
    fn missing_files_are_checked_only_when_asked() {
        let c = parse(
            r#"
            [[cameras]]
            id = "c"
            source = "/definitely/not/here.mp4"
            [[models]]
            id = "m"
            path = "/definitely/not/here.onnx"
        "#,
        );
        validate(&c, false).unwrap();
        let errs = validate(&c, true).unwrap_err().0;
        assert!(matches!(errs[0], ConfigError::MissingSourceFile { .. }));
        assert!(matches!(errs[1], ConfigError::MissingModelFile { .. }));
    }

    proptest::proptest! {
        /// Whatever ids and rates a file holds, validation answers (never panics), and an
        /// id breaking the name rule is always among the problems.
        #[test]
        fn validation_is_total(
            cam_ids in proptest::collection::vec("[a-z0-9 ./_-]{0,70}", 0..4),
            fps in proptest::collection::vec(proptest::num::f64::ANY, 0..4),
            model_id in "[A-Za-z0-9_-]{1,8}",
        ) {
            let mut c = Config::default();
            for id in &cam_ids {
                c.cameras.push(crate::config::CameraConfig {
                    id: id.clone(),
                    source: "rtsp://127.0.0.1/x".into(),
                    transport: Default::default(),
                    format: proto_schema::pixel::PixelFormat::Nv12,
                    width: None,
                    height: None,
                    fps: fps.first().copied(),
                    enabled: true,
                    realtime: true,
                    speed: 1.0,
                    loop_file: true,
                    ring: None,
                    ring_slots: None,
                    rss_limit_mb: None,
                    cpu_affinity: None,
                    motion: Default::default(),
                    record_source: None,
                    decode: Default::default(),
                    analytics: None,
                });
            }
            for (i, f) in fps.iter().enumerate() {
                c.subscriptions.push(crate::config::SubscriptionConfig {
                    camera: cam_ids.get(i).cloned().unwrap_or_default(),
                    model: model_id.clone(),
                    fps: *f,
                    classes: vec![],
                    max_in_flight: None,
                });
            }
            let result = validate(&c, false);
            for id in &cam_ids {
                if !proto_schema::message::is_valid_name(id) {
                    let errs = result.as_ref().unwrap_err();
                    let reported = errs.0.iter().any(|e| matches!(e, ConfigError::InvalidId { id: x, .. } if x == id));
                    proptest::prop_assert!(reported, "invalid id {:?} not reported", id);
                }
            }
            if !fps.is_empty() {
                // No model is configured, so every subscription is reported.
                proptest::prop_assert!(result.is_err());
            }
        }

        /// A source is refused with `ControlCharacter` exactly when it holds a control
        /// or format character (wherever it is), and the first one is named.
        #[test]
        fn a_source_is_refused_exactly_when_it_holds_a_hidden_character(
            head in "(rtsp://[a-z0-9.:@]{1,12}/|/v/)\\PC{0,16}",
            hidden in proptest::option::of(proptest::sample::select(vec![
                '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200e}',
                '\u{feff}', '\u{61c}', '\u{ad}', '\u{2028}', '\u{e0041}', '\n', '\u{1b}',
            ])),
            tail in "\\PC{0,16}",
        ) {
            let src = match hidden {
                Some(h) => format!("{head}{h}{tail}"),
                None => format!("{head}{tail}"),
            };
            let mut errs = Vec::new();
            check_camera(&camera(&src), false, &mut errs);
            let refused = errs.iter().find_map(|e| match e {
                ConfigError::ControlCharacter { at, .. } => Some(*at),
                _ => None,
            });
            let first = src.char_indices().find(|&(_, c)| proto_schema::text::is_hidden(c));
            proptest::prop_assert_eq!(refused, first.map(|(at, _)| at));
            if hidden.is_some() {
                proptest::prop_assert!(refused.is_some_and(|at| at <= head.len()));
            }
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn parsing_is_total(text in "\\PC{0,200}") {
            let _ = Config::from_toml(&text, Path::new("t.toml"), Path::new("/"));
        }
    }

    fn camera(source: &str) -> CameraConfig {
        let mut c = parse(GOOD).cameras[0].clone();
        c.source = source.to_owned();
        c
    }

    #[test]
    fn motion_settings_are_checked_all_at_once() {
        let mut cam = camera("rtsp://h/x");
        let mut errs = Vec::new();
        check_camera(&cam, false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        *cam.motion = crate::config::MotionConfig {
            enabled: true,
            threshold: 0.0,
            pixel_delta: 0,
            thumbnail_width: 4,
            masks: vec![
                vec![[0.0, 0.0], [1.0, 0.0]],
                vec![[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]],
                vec![[0.0, 0.0], [1.0, 0.0], [1.0, f64::NAN]],
                vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
            ],
            keepalive_fps: -1.0,
        };
        check_camera(&cam, false, &mut errs);
        let fields: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::OutOfRange { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect();
        let want = [
            "threshold",
            "pixel_delta",
            "thumbnail_width",
            "keepalive_fps",
            "masks[0]",
            "masks[1]",
            "masks[2]",
        ]
        .map(|k| format!("cameras.{}.motion.{k}", cam.id));
        assert_eq!(fields, want);
    }

    #[test]
    fn control_characters_are_refused_in_every_source_and_redacted() {
        for bad in [
            "rtsp://u:hunter22@h/x\n",
            "/v/a\r.mp4",
            "/v/\0",
            "rtsp://h/\x7f",
        ] {
            let mut errs = Vec::new();
            check_camera(&camera(bad), false, &mut errs);
            assert!(
                matches!(&errs[..], [ConfigError::ControlCharacter { .. }]),
                "{bad:?}: {errs:?}"
            );
            assert!(!errs[0].to_string().contains("hunter22"), "{}", errs[0]);
        }
    }

    /// Issue 25, item 4: `rtsp://127.0.0.1:1/x\u{202e}` was accepted. Bidi controls and
    /// other invisible format characters are refused like control characters, in the
    /// source, the record source and an API source, and named without being echoed.
    #[test]
    fn format_and_bidi_characters_are_refused_in_sources_and_named() {
        for (bad, code) in [
            ("rtsp://127.0.0.1:1/x\u{202e}", "U+202E, a bidi control"),
            ("rtsp://u:hunter22@h/\u{2066}x", "U+2066, a bidi control"),
            (
                "rtsp://h/a\u{200b}b",
                "U+200B, an invisible format character",
            ),
            ("\u{feff}/v/a.mp4", "U+FEFF, an invisible format character"),
            ("/v/\u{61c}a.mp4", "U+061C, a bidi control"),
            (
                "/v/soft\u{ad}hyphen.mp4",
                "U+00AD, an invisible format character",
            ),
            (
                "rtsp://h/\u{2028}x",
                "U+2028, a line or paragraph separator",
            ),
        ] {
            let mut errs = Vec::new();
            check_camera(&camera(bad), false, &mut errs);
            assert!(
                matches!(&errs[..], [ConfigError::ControlCharacter { code: c, .. }] if c == code),
                "{bad:?}: {errs:?}"
            );
            let text = errs[0].to_string();
            assert!(text.contains(code), "{text}");
            assert!(!text.contains("hunter22"), "{text}");
            // Shown escaped, never the character itself.
            assert!(
                text.chars().all(|c| !proto_schema::text::is_hidden(c)),
                "{text:?}"
            );
            // The API's own source check does not let such an rtsp:// source pass to
            // the file checks either (check_camera above names it).
            if bad.starts_with("rtsp") {
                assert!(
                    !check_api_source(&mut camera(bad), &[], &mut Vec::new()),
                    "{bad:?}"
                );
            }
            let mut c = parse(GOOD);
            let hidden: String = bad
                .chars()
                .filter(|&c| proto_schema::text::is_hidden(c))
                .collect();
            c.cameras[1].record_source = Some(format!("rtsp://h/main{hidden}"));
            let rec = validate(&c, false).unwrap_err().0;
            assert!(
                rec.iter().any(|e| matches!(e, ConfigError::RecordSource { reason, .. } if reason.contains("format"))),
                "{bad:?}: {rec:?}"
            );
        }
        // Ordinary non-ASCII text stays allowed in a source.
        let mut errs = Vec::new();
        check_camera(&camera("/vidéos/über 中.mp4"), false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    /// Ids and rule names keep to the ASCII name rule, so no format character gets in.
    #[test]
    fn format_characters_in_ids_and_rule_names_are_refused() {
        for id in ["cam\u{202e}1", "\u{200b}cam", "cam\u{feff}"] {
            let mut c = parse(GOOD);
            c.cameras[0].id = id.to_owned();
            c.models[0].id = id.to_owned();
            let errs = validate(&c, false).unwrap_err().0;
            for kind in ["camera", "model"] {
                assert!(
                    errs.iter().any(|e| matches!(e, ConfigError::InvalidId { kind: k, id: i, .. } if *k == kind && i == id)),
                    "{kind} {id:?}: {errs:?}"
                );
            }
        }
        for name in ["in\u{202e}", "\u{2066}queue"] {
            let text = format!(
                r#"
                [[cameras]]
                id = "door"
                source = "rtsp://h/x"
                [cameras.analytics]
                [[cameras.analytics.lines]]
                name = "{name}"
                from = [0.1, 0.5]
                to = [0.9, 0.5]
                [[cameras.analytics.zones]]
                name = "{name}"
                polygon = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
                "#
            );
            let errs = validate(&parse(&text), false).unwrap_err().0;
            for key in ["lines[0].name", "zones[0].name"] {
                assert!(
                    errs.iter().any(
                        |e| matches!(e, ConfigError::InvalidRule { key: k, .. } if k.ends_with(key))
                    ),
                    "{key} {name:?}: {errs:?}"
                );
            }
        }
    }

    #[test]
    fn api_sources_are_rtsp_or_files_under_media_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("a.mp4"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), media.join("up")).unwrap();
        let dirs = vec![media.clone()];
        let run = |src: &str, dirs: &[PathBuf]| {
            let mut cam = camera(src);
            let mut errs = Vec::new();
            let ok = check_api_source(&mut cam, dirs, &mut errs);
            (ok, cam.source, errs)
        };
        for ok in ["rtsp://h/x", "RTSPS://u:p@h:322/x"] {
            let (pass, src, errs) = run(ok, &[]);
            assert!(pass && errs.is_empty() && src == ok, "{ok}: {errs:?}");
        }
        let file = media.join("a.mp4");
        let (pass, src, errs) = run(&file.display().to_string(), &dirs);
        assert!(pass && errs.is_empty(), "{errs:?}");
        assert_eq!(
            src,
            std::fs::canonicalize(&file).unwrap().display().to_string()
        );
        // Missing but inside: left to check_camera's "does not exist".
        let (pass, _, errs) = run(&media.join("b.mp4").display().to_string(), &dirs);
        assert!(pass && errs.is_empty());
        for (bad, dirs, want) in [
            ("file:///etc/shadow", &dirs[..], "scheme \"file\""),
            ("http://h/x", &dirs[..], "scheme \"http\""),
            ("HTTPS://h/x", &dirs[..], "scheme \"HTTPS\""),
            ("a.mp4", &dirs[..], "absolute"),
            ("file:/etc/shadow", &dirs[..], "absolute"),
            ("/etc/shadow", &dirs[..], "not under agent.media_dirs"),
            ("/etc/shadow", &[][..], "media_dirs, which is empty"),
        ] {
            let (pass, _, errs) = run(bad, dirs);
            assert!(!pass, "{bad}");
            assert!(
                errs.len() == 1 && errs[0].to_string().contains(want),
                "{bad}: {errs:?}"
            );
        }
        let dots = format!("{}/../x.mp4", media.display());
        assert!(run(&dots, &dirs).2[0].to_string().contains("`..`"));
        let escape = format!("{}/up/other.mp4", media.display());
        std::fs::write(dir.path().join("other.mp4"), b"x").unwrap();
        let (pass, _, errs) = run(&escape, &dirs);
        assert!(!pass);
        assert!(
            matches!(
                &errs[0],
                ConfigError::SourceOutsideMediaDirs {
                    resolved: Some(_),
                    ..
                }
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn an_empty_config_is_valid_with_a_warning() {
        let c = parse("");
        validate(&c, true).unwrap();
        assert_eq!(warnings(&c), [ConfigWarning::Empty]);
        assert!(warnings(&parse(GOOD)).is_empty());
        let mut c = parse("[agent]\nmedia_dirs = [\"no/such/dir\"]\n");
        assert_eq!(c.agent.media_dirs, [PathBuf::from("/cfg/no/such/dir")]);
        let errs = validate(&c, true).unwrap_err().0;
        assert!(matches!(&errs[..], [ConfigError::MissingMediaDir { .. }]));
        c.agent.media_dirs.clear();
        validate(&c, true).unwrap();
    }

    #[test]
    fn default_sockets_of_distinct_models_do_not_clash() {
        let mut c = parse(GOOD);
        c.models[1].socket = Some(c.agent.socket_dir.join("yolov8n.sock"));
        let errs = validate(&c, false).unwrap_err().0;
        assert!(
            matches!(&errs[0], ConfigError::SharedSocket { .. }),
            "{errs:?}"
        );
    }

    /// `--check`'s model-format check: a text file, an empty file and a truncated real
    /// model are refused with the model and path named; the real models pass.
    #[test]
    fn check_refuses_model_files_that_are_not_onnx() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.onnx");
        std::fs::write(&text, "this is not an ONNX model\n").unwrap();
        let empty = dir.path().join("empty.onnx");
        std::fs::write(&empty, b"").unwrap();
        use framebus_testkit::assets;
        // Missing real models fail the test in CI (`assets::asset`), skip it elsewhere.
        let real: Vec<_> = [assets::YOLOV8, assets::YOLOX]
            .iter()
            .filter_map(|f| assets::asset(f))
            .collect();
        let mut models = vec![("text", text.clone()), ("empty", empty.clone())];
        if let Some(first) = real.first() {
            let bytes = std::fs::read(first).unwrap();
            let cut = dir.path().join("cut.onnx");
            std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            models.push(("cut", cut));
        } else {
            println!(
                "SKIP (part): no real models in {}",
                assets::assets_dir().display()
            );
        }
        for (i, p) in real.iter().enumerate() {
            models.push((["real0", "real1"][i], p.clone()));
        }
        let mut c = Config::default();
        for (id, path) in &models {
            c.models.push(super::super::ModelConfig {
                id: (*id).into(),
                path: path.clone(),
                ..parse(GOOD).models[0].clone()
            });
        }
        let errs = check_model_formats(&c);
        let refused: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::NotOnnx { model, .. } => model.clone(),
                other => panic!("unexpected {other}"),
            })
            .collect();
        let expect_refused = if real.is_empty() { 2 } else { 3 };
        assert_eq!(refused.len(), expect_refused, "{errs:?}");
        assert!(refused.iter().all(|m| !m.starts_with("real")), "{errs:?}");
        for e in &errs {
            let msg = e.to_string();
            assert!(msg.contains("model \"") && msg.contains(".onnx"), "{msg}");
        }
        assert!(errs[0].to_string().contains(&text.display().to_string()));
        assert!(errs[1].to_string().contains("empty file"));
        if !real.is_empty() {
            assert!(errs[2].to_string().contains("truncated"), "{}", errs[2]);
        }
    }

    #[test]
    fn decode_options_parse_with_defaults_and_are_checked() {
        use crate::config::{DecodeConfig, HwAccelSetting, SkipFramesSetting};
        let c = parse(GOOD);
        assert_eq!(c.cameras[0].decode, DecodeConfig::default());
        assert_eq!(
            c.cameras[0].decode,
            DecodeConfig {
                skip_frames: SkipFramesSetting::Auto,
                skip_loop_filter: false,
                hwaccel: HwAccelSetting::None,
                all_frames: false,
            }
        );
        assert_eq!(c.cameras[0].record_source, None);
        // The highest subscribed rate of each camera goes to its kernel.
        assert_eq!(c.consumer_fps("cam1"), Some(5.0));
        assert_eq!(c.consumer_fps("nope"), None);
        assert_eq!(
            c.cameras[0].decode.kernel_args(Some(5.0)),
            ["--skip-frames", "auto", "--consumer-fps", "5"]
        );

        let text = GOOD.replacen(
            "fps = 25\n",
            "fps = 25\n        record_source = \"rtsp://u:pw@127.0.0.1:8554/main\"\n        [cameras.decode]\n        skip_frames = \"never\"\n        skip_loop_filter = true\n        hwaccel = \"vaapi\"\n        all_frames = true\n",
            1,
        );
        let c = parse(&text);
        validate(&c, false).unwrap();
        let cam = &c.cameras[0];
        assert_eq!(
            cam.record_source.as_deref(),
            Some("rtsp://u:pw@127.0.0.1:8554/main")
        );
        assert_eq!(
            cam.decode.kernel_args(Some(5.0)),
            [
                "--skip-frames",
                "none",
                "--consumer-fps",
                "5",
                "--all-frames",
                "--skip-loop-filter",
                "all",
                "--hwaccel",
                "vaapi"
            ]
        );
        assert_eq!(cam.decode.kernel_args(None)[..2], ["--skip-frames", "none"]);

        // Unknown keys and values are refused by the parser.
        for bad in [
            "[cameras.decode]\n        skip_frame = \"auto\"\n",
            "[cameras.decode]\n        skip_frames = \"nonkey\"\n",
            "[cameras.decode]\n        hwaccel = \"nvdec\"\n",
        ] {
            let text = GOOD.replacen("fps = 25\n", &format!("fps = 25\n        {bad}"), 1);
            assert!(
                Config::from_toml(&text, Path::new("t.toml"), Path::new("/cfg")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn record_sources_and_decode_conflicts_are_reported_redacted() {
        use crate::config::SkipFramesSetting;
        let mut c = parse(GOOD);
        c.cameras[0].record_source = Some("http://u:secret@h/main".into());
        c.cameras[0].decode.all_frames = true;
        c.cameras[0].decode.skip_frames = SkipFramesSetting::Bidir;
        c.cameras[1].record_source = Some("rtsp://u:secret@h/x\n".into());
        let errs = validate(&c, false).unwrap_err().0;
        assert_eq!(errs.len(), 3, "{errs:?}");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            matches!(&errs[0], ConfigError::RecordSource { reason, .. } if reason.contains("rtsp://")),
            "{text:?}"
        );
        assert!(
            matches!(&errs[1], ConfigError::DecodeConflict { skip: "bidir", .. }),
            "{text:?}"
        );
        assert!(
            matches!(&errs[2], ConfigError::RecordSource { reason, .. } if reason.contains("control")),
            "{text:?}"
        );
        assert!(text.iter().all(|t| !t.contains("secret")), "{text:?}");
        for empty in ["", "rtsp://", "rtsps://"] {
            let mut c = parse(GOOD);
            c.cameras[0].record_source = Some(empty.into());
            assert!(validate(&c, false).is_err(), "{empty:?}");
        }
        // auto and never go with all_frames.
        let mut c = parse(GOOD);
        c.cameras[0].decode.all_frames = true;
        validate(&c, false).unwrap();
    }
}
