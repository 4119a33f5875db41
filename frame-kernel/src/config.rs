//! Command line and its validation. Every problem is collected and reported at once,
//! before the kernel touches the network; the ring directory is checked, and created
//! (owned, 0750) only once everything else is valid.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::validate_ring_name;

use crate::hwaccel::HwAccel;
use crate::pacing::PaceMode;
use crate::reconnect::{StallPolicy, CAMERA_BACKOFF};
use crate::skip::{LoopFilter, SkipFrames};
use proto_schema::backoff::BackoffPolicy;

/// The command line: defined once, in the launch contract that `core-agent` builds it
/// with (see `framebus_launch`).
pub use framebus_launch::KernelLaunch as Args;
pub use framebus_launch::Transport;

/// Where frames come from.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// An RTSP camera.
    Rtsp {
        /// Full URL, possibly with credentials (never logged; see [`Source::redacted`]).
        url: String,
        /// Lower transport.
        transport: Transport,
    },
    /// A local file played as a camera.
    File {
        /// The file.
        path: PathBuf,
    },
}

impl Source {
    /// The source for logs: the URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Source::Rtsp { url, .. } => redact_url(url),
            Source::File { path } => path.display().to_string(),
        }
    }

    /// Whether this is a file.
    pub fn is_file(&self) -> bool {
        matches!(self, Source::File { .. })
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Log output format (`--log-format`).
pub use framebus_launch::LogFormat;

/// How the decoder is run: frame skipping, loop filter, hardware.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeOptions {
    /// `--skip-frames`.
    pub skip_frames: SkipFrames,
    /// `--consumer-fps`.
    pub consumer_fps: Option<f64>,
    /// `--all-frames`.
    pub all_frames: bool,
    /// `--skip-loop-filter`.
    pub loop_filter: LoopFilter,
    /// `--hwaccel`.
    pub hwaccel: HwAccel,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Camera id.
    pub camera_id: String,
    /// Ring name.
    pub ring_name: String,
    /// Ring directory.
    pub ring_dir: PathBuf,
    /// Ring slot count.
    pub slots: u32,
    /// The source.
    pub source: Source,
    /// Output pixel format.
    pub format: PixelFormat,
    /// Output size, if fixed by the command line.
    pub size: Option<(u32, u32)>,
    /// Pacing: `Realtime` or `Fast` for files; always `Fast` for cameras, which pace
    /// themselves.
    pub pace: PaceMode,
    /// Playback speed of realtime pacing (1 = the stream's rate).
    pub speed: f64,
    /// Loop a file source.
    pub loop_file: bool,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Decoder threads (0 = auto).
    pub decoder_threads: u32,
    /// Skipping, loop filter, hardware.
    pub decode: DecodeOptions,
    /// Stall detection.
    pub stall: StallPolicy,
    /// Open deadline.
    pub open_timeout: Duration,
    /// RTSP socket timeout.
    pub io_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
    /// Extra FFmpeg options.
    pub av_options: Vec<(String, String)>,
    /// The camera's main stream, kept for clips and never decoded (`--record-source`;
    /// always RTSP). With it, clips come from this stream, not from `source`.
    pub record_source: Option<Source>,
    /// Keep the ring file on exit.
    pub keep_ring: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Packet keeping for clips (`--clip-dir`).
    pub clips: Option<crate::packets::KeepSettings>,
}

impl Config {
    /// The ring geometry when the output size is fixed by the command line.
    pub fn fixed_geometry(&self) -> Option<FrameGeometry> {
        let (w, h) = self.size?;
        FrameGeometry::packed(w, h, self.format).ok()
    }
}

/// One thing wrong with the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The camera id breaks the ring-name rule.
    #[error("--camera-id {id:?}: {reason}")]
    CameraId {
        /// The id given.
        id: String,
        /// Why it is refused.
        reason: String,
    },
    /// The ring name breaks the ring-name rule.
    #[error("--ring {name:?}: {reason}")]
    RingName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// `--source-fd` could not be read.
    #[error("--source-fd {fd}: {reason}")]
    SourceFd {
        /// The descriptor.
        fd: i32,
        /// Why.
        reason: String,
    },
    /// A URL with a scheme the kernel does not read.
    #[error("--source {given}: unsupported scheme {scheme:?} (use rtsp://, rtsps://, file:// or a path)")]
    UnsupportedScheme {
        /// The source (redacted).
        given: String,
        /// Its scheme.
        scheme: String,
    },
    /// An RTSP URL without a host.
    #[error("--source {given}: no host in URL")]
    NoHost {
        /// The source (redacted).
        given: String,
    },
    /// The source file cannot be opened for reading.
    #[error("--source {path}: cannot read file: {reason}")]
    UnreadableFile {
        /// The path.
        path: PathBuf,
        /// The OS error or why it is not a file.
        reason: String,
    },
    /// Unknown output pixel format.
    #[error("--format {given:?}: unknown pixel format (use NV12, I420, BGR24 or RGB24)")]
    UnknownFormat {
        /// What was given.
        given: String,
    },
    /// Only one of width and height.
    #[error("--width and --height must be given together")]
    HalfSize,
    /// The output size does not fit the format.
    #[error("--width/--height {width}x{height}: {reason}")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Why.
        reason: String,
    },
    /// `--speed` outside `0.05..=20`.
    #[error("--speed {given} is outside 0.05..=20")]
    BadSpeed {
        /// The value given.
        given: String,
    },
    /// A file-only option on an RTSP source.
    #[error("{option} applies to file sources only")]
    FileOnlyOption {
        /// The option.
        option: &'static str,
    },
    /// The ring directory is unusable.
    #[error("--ring-dir {path}: {reason}")]
    RingDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A number outside its range.
    #[error("{option} {value}: must be in {range}")]
    OutOfRange {
        /// The option.
        option: &'static str,
        /// The value.
        value: u64,
        /// Allowed range, for the message.
        range: &'static str,
    },
    /// `--backoff-initial-ms` above `--backoff-max-ms`.
    #[error("--backoff-initial-ms {initial} is larger than --backoff-max-ms {max}")]
    BackoffOrder {
        /// Initial delay, ms.
        initial: u64,
        /// Max delay, ms.
        max: u64,
    },
    /// An `--av-option` that is not `KEY=VALUE`.
    #[error("--av-option {given:?}: expected KEY=VALUE")]
    BadAvOption {
        /// What was given.
        given: String,
    },
    /// A decode option (`--skip-frames`, `--skip-loop-filter`, `--hwaccel`) with an
    /// unknown value.
    #[error("{option} {given:?}: use {expected}")]
    UnknownDecodeOption {
        /// The option.
        option: &'static str,
        /// What was given.
        given: String,
        /// The values allowed, for the message.
        expected: &'static str,
    },
    /// `--consumer-fps` that is not a positive finite rate up to 1000.
    #[error("--consumer-fps {given}: must be a number in (0, 1000]")]
    BadConsumerFps {
        /// What was given.
        given: String,
    },
    /// `--record-source-fd` could not be read, or (shared with `--source-fd`) held no
    /// second line.
    #[error("--record-source-fd {fd}: {reason}")]
    RecordSourceFd {
        /// The descriptor.
        fd: i32,
        /// Why.
        reason: String,
    },
    /// A source or record source holding a control character or an invisible Unicode
    /// format character (a bidi override, a zero-width space, ...): it could forge log
    /// lines or display as another source ([`proto_schema::text`]). Core-agent refuses
    /// them first; this is the kernel's own check when started alone.
    #[error("{option} {given:?}: contains {count} control or format character(s), the first ({code}) at byte {at}")]
    HiddenCharacter {
        /// `--source` or `--record-source` (also for the `-fd` forms).
        option: &'static str,
        /// The value (redacted; shown escaped).
        given: String,
        /// How many such characters it holds.
        count: usize,
        /// The first one, as `U+202E, a bidi control`.
        code: String,
        /// Byte offset of the first one.
        at: usize,
    },
    /// A record source that is not an `rtsp://` / `rtsps://` URL with a host.
    #[error("--record-source {given}: must be an rtsp:// or rtsps:// URL with a host")]
    RecordSourceNotRtsp {
        /// The record source (redacted).
        given: String,
    },
}

/// Everything wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Camera id as given (for the message, even when invalid).
    pub camera_id: String,
    /// Each problem found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration for camera {:?} ({} problem{}):",
            self.camera_id,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Parses an output pixel format name, case-insensitively.
pub fn parse_format(s: &str) -> Option<PixelFormat> {
    PixelFormat::ALL
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
}

impl Config {
    /// Validates `args`, reporting every problem at once.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();

        if let Err(e) = validate_ring_name(&args.camera_id) {
            problems.push(ConfigProblem::CameraId {
                id: args.camera_id.clone(),
                reason: e.to_string(),
            });
        }
        let ring_name = args.ring.clone().unwrap_or_else(|| args.camera_id.clone());
        if args.ring.is_some() {
            if let Err(e) = validate_ring_name(&ring_name) {
                problems.push(ConfigProblem::RingName {
                    name: ring_name.clone(),
                    reason: e.to_string(),
                });
            }
        }

        let (given, record_given) = read_sources(&args, &mut problems);
        let given = given.filter(|g| no_hidden_chars("--source", g, &mut problems));
        let record_given =
            record_given.filter(|g| no_hidden_chars("--record-source", g, &mut problems));
        let source = given.and_then(|given| parse_source(&given, args.transport, &mut problems));
        let record_source = record_given.and_then(|given| {
            let mut scratch = Vec::new();
            match parse_source(&given, args.transport, &mut scratch) {
                Some(rtsp @ Source::Rtsp { .. }) => Some(rtsp),
                _ => {
                    problems.push(ConfigProblem::RecordSourceNotRtsp {
                        given: redact_url(&given),
                    });
                    None
                }
            }
        });
        if let Some(Source::Rtsp { .. }) = source {
            for (set, option) in [
                (args.realtime, "--realtime"),
                (args.fast, "--fast"),
                (args.loop_file, "--loop"),
                (args.speed != 1.0, "--speed"),
            ] {
                if set {
                    problems.push(ConfigProblem::FileOnlyOption { option });
                }
            }
        }

        if !(0.05..=20.0).contains(&args.speed) {
            problems.push(ConfigProblem::BadSpeed {
                given: args.speed.to_string(),
            });
        }

        let format = parse_format(&args.format);
        if format.is_none() {
            problems.push(ConfigProblem::UnknownFormat {
                given: args.format.clone(),
            });
        }
        let size = match (args.width, args.height) {
            (Some(w), Some(h)) => {
                if let Err(e) = FrameGeometry::packed(w, h, format.unwrap_or(PixelFormat::Bgr24)) {
                    problems.push(ConfigProblem::BadSize {
                        width: w,
                        height: h,
                        reason: e.to_string(),
                    });
                }
                Some((w, h))
            }
            (None, None) => None,
            _ => {
                problems.push(ConfigProblem::HalfSize);
                None
            }
        };

        check_ring_dir(&args.ring_dir, &mut problems);

        let mut range = |option, value: u64, lo: u64, hi: u64, text| {
            if !(lo..=hi).contains(&value) {
                problems.push(ConfigProblem::OutOfRange {
                    option,
                    value,
                    range: text,
                });
            }
        };
        range("--slots", args.slots.into(), 2, 1024, "2..=1024");
        range(
            "--decoder-threads",
            args.decoder_threads.into(),
            0,
            64,
            "0..=64",
        );
        range(
            "--stall-timeout-ms",
            args.stall_timeout_ms,
            100,
            600_000,
            "100..=600000",
        );
        range(
            "--first-frame-timeout-ms",
            args.first_frame_timeout_ms,
            100,
            600_000,
            "100..=600000",
        );
        range(
            "--open-timeout-ms",
            args.open_timeout_ms,
            100,
            600_000,
            "100..=600000",
        );
        if let Some(io) = args.io_timeout_ms {
            range("--io-timeout-ms", io, 100, 600_000, "100..=600000");
        }
        range(
            "--backoff-initial-ms",
            args.backoff_initial_ms,
            1,
            600_000,
            "1..=600000",
        );
        range(
            "--backoff-max-ms",
            args.backoff_max_ms,
            1,
            600_000,
            "1..=600000",
        );
        if let Some(n) = args.max_frames {
            range("--max-frames", n, 1, u64::MAX, "1..");
        }
        if args.clip_dir.is_some() {
            range(
                "--clip-keep-ms",
                args.clip_keep_ms,
                1_000,
                3_600_000,
                "1000..=3600000",
            );
            range(
                "--clip-max-bytes",
                args.clip_max_bytes,
                1 << 20,
                1 << 40,
                "1048576..=1099511627776",
            );
        }
        if args.backoff_initial_ms > args.backoff_max_ms {
            problems.push(ConfigProblem::BackoffOrder {
                initial: args.backoff_initial_ms,
                max: args.backoff_max_ms,
            });
        }

        let mut av_options = Vec::new();
        for o in &args.av_options {
            match o.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    av_options.push((k.trim().to_owned(), v.to_owned()));
                }
                _ => problems.push(ConfigProblem::BadAvOption { given: o.clone() }),
            }
        }

        let decode = decode_options(&args, &mut problems);

        let log_format = args.log_format;

        if problems.is_empty() {
            // Only now, so a bad configuration creates nothing.
            if let Err(e) = shm_ring::owned_dir::ensure_owned_dir(&args.ring_dir) {
                problems.push(ConfigProblem::RingDir {
                    path: args.ring_dir.clone(),
                    reason: e.to_string(),
                });
            }
        }

        let args_is_file = source.as_ref().is_some_and(Source::is_file);
        match (problems.is_empty(), source, format) {
            (true, Some(source), Some(format)) => Ok(Config {
                camera_id: args.camera_id,
                ring_name,
                ring_dir: args.ring_dir,
                slots: args.slots,
                source,
                format,
                size,
                // A camera paces itself: frames are published as they arrive.
                pace: if args.fast || !args_is_file {
                    PaceMode::Fast
                } else {
                    PaceMode::Realtime
                },
                speed: args.speed,
                loop_file: args.loop_file,
                max_frames: args.max_frames,
                decoder_threads: args.decoder_threads,
                decode,
                stall: StallPolicy {
                    stall_timeout: Duration::from_millis(args.stall_timeout_ms),
                    first_frame_timeout: Duration::from_millis(args.first_frame_timeout_ms),
                },
                open_timeout: Duration::from_millis(args.open_timeout_ms),
                io_timeout: Duration::from_millis(
                    args.io_timeout_ms.unwrap_or(args.stall_timeout_ms),
                ),
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(args.backoff_initial_ms),
                    max: Duration::from_millis(args.backoff_max_ms),
                    ..CAMERA_BACKOFF
                },
                av_options,
                keep_ring: args.keep_ring,
                log_format,
                record_source,
                clips: args.clip_dir.map(|dir| crate::packets::KeepSettings {
                    dir,
                    keep: Duration::from_millis(args.clip_keep_ms),
                    max_bytes: args.clip_max_bytes,
                }),
            }),
            _ => Err(ConfigError {
                camera_id: args.camera_id,
                problems,
            }),
        }
    }
}

fn decode_options(args: &Args, problems: &mut Vec<ConfigProblem>) -> DecodeOptions {
    let mut unknown = |option, given: &str, expected| {
        problems.push(ConfigProblem::UnknownDecodeOption {
            option,
            given: given.to_owned(),
            expected,
        })
    };
    let skip_frames = SkipFrames::parse(&args.skip_frames).unwrap_or_else(|| {
        unknown(
            "--skip-frames",
            &args.skip_frames,
            "none, bidir, noref or auto",
        );
        SkipFrames::None
    });
    let loop_filter = LoopFilter::parse(&args.skip_loop_filter).unwrap_or_else(|| {
        unknown(
            "--skip-loop-filter",
            &args.skip_loop_filter,
            "none, noref or all",
        );
        LoopFilter::Keep
    });
    let hwaccel = HwAccel::parse(&args.hwaccel).unwrap_or_else(|| {
        unknown("--hwaccel", &args.hwaccel, "none, auto, vaapi or cuda");
        HwAccel::None
    });
    if let Some(f) = args.consumer_fps {
        if !(f.is_finite() && f > 0.0 && f <= 1000.0) {
            problems.push(ConfigProblem::BadConsumerFps {
                given: f.to_string(),
            });
        }
    }
    DecodeOptions {
        skip_frames,
        consumer_fps: args.consumer_fps,
        all_frames: args.all_frames,
        loop_filter,
        hwaccel,
    }
}

fn parse_source(
    given: &str,
    transport: Transport,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Source> {
    let Some((scheme, rest)) = given.split_once("://") else {
        return check_file(PathBuf::from(given), problems);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtsps" => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            if host.is_empty() || host.starts_with(':') {
                problems.push(ConfigProblem::NoHost {
                    given: redact_url(given),
                });
                return None;
            }
            Some(Source::Rtsp {
                url: given.to_owned(),
                transport,
            })
        }
        "file" => check_file(PathBuf::from(rest), problems),
        other => {
            problems.push(ConfigProblem::UnsupportedScheme {
                given: redact_url(given),
                scheme: other.to_owned(),
            });
            None
        }
    }
}

/// Whether `given` is free of control and format characters; reports it otherwise.
fn no_hidden_chars(option: &'static str, given: &str, problems: &mut Vec<ConfigProblem>) -> bool {
    let hidden: Vec<(usize, char)> = proto_schema::text::hidden_chars(given).collect();
    let Some(&(at, c)) = hidden.first() else {
        return true;
    };
    problems.push(ConfigProblem::HiddenCharacter {
        option,
        given: redact_url(given),
        count: hidden.len(),
        code: proto_schema::text::describe(c),
        at,
    });
    false
}

fn check_file(path: PathBuf, problems: &mut Vec<ConfigProblem>) -> Option<Source> {
    let problem = |reason: String| ConfigProblem::UnreadableFile {
        path: path.clone(),
        reason,
    };
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Some(Source::File { path }),
        Ok(_) => {
            problems.push(problem("not a regular file".into()));
            None
        }
        Err(e) => {
            problems.push(problem(e.to_string()));
            None
        }
    }
}

/// The ring directory must be one the service owns (see `shm_ring::owned_dir`): an
/// existing one with another owner, a looser mode, or a replaceable parent is refused,
/// never repaired. A missing one is created by `from_args` (mode 0750) once the rest of
/// the configuration is valid, so a kernel started alone with the default
/// `/dev/shm/framebus` works; its parent must exist (a missing parent is a typo more
/// often than a wish).
fn check_ring_dir(dir: &Path, problems: &mut Vec<ConfigProblem>) {
    let problem = |reason: &str| ConfigProblem::RingDir {
        path: dir.to_path_buf(),
        reason: reason.to_owned(),
    };
    if std::fs::symlink_metadata(dir).is_err() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            problems.push(problem("no such directory, and its parent does not exist"));
        }
        return;
    }
    if let Err(e) = shm_ring::owned_dir::check_owned_dir(dir) {
        problems.push(problem(&e.to_string()));
        return;
    }
    if !access_ok(dir, libc::W_OK | libc::X_OK) {
        let e = std::io::Error::last_os_error();
        problems.push(problem(&format!("not writable: {e}")));
    }
}

fn access_ok(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2)
    // only reads it.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// `url` with any `user:password@` part replaced by `***@` (the system-wide rule,
/// [`proto_schema::redact::redact_url`]).
pub fn redact_url(url: &str) -> String {
    proto_schema::redact::redact_url(url).into_owned()
}

/// Longest source accepted on `--source-fd`.
pub const MAX_SOURCE_FD_BYTES: usize = 8 * 1024;

/// The source and the record source as given: from the command line or read from
/// their descriptors (one descriptor holding two lines when both flags name it).
fn read_sources(
    args: &Args,
    problems: &mut Vec<ConfigProblem>,
) -> (Option<String>, Option<String>) {
    let shared = args.source_fd.is_some() && args.record_source_fd == args.source_fd;
    let source = match (&args.source, args.source_fd) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(fd)) => match read_source_fd(fd) {
            Ok(s) => Some(s),
            Err(reason) => {
                problems.push(ConfigProblem::SourceFd { fd, reason });
                None
            }
        },
        // clap requires one of the two.
        (None, None) => None,
    };
    if shared {
        let fd = args.source_fd.unwrap_or(-1);
        let Some(text) = source else {
            return (None, None); // already reported as --source-fd
        };
        return match text.split_once('\n') {
            Some((s, r)) if !r.is_empty() && !r.contains('\n') => {
                (Some(s.to_owned()), Some(r.to_owned()))
            }
            _ => {
                problems.push(ConfigProblem::RecordSourceFd {
                    fd,
                    reason: "shared with --source-fd, so it must hold two lines: the \
                             source, then the record source"
                        .into(),
                });
                (text.lines().next().map(str::to_owned), None)
            }
        };
    }
    let record = match (&args.record_source, args.record_source_fd) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(fd)) => match read_source_fd(fd) {
            Ok(r) => Some(r),
            Err(reason) => {
                problems.push(ConfigProblem::RecordSourceFd { fd, reason });
                None
            }
        },
        (None, None) => None,
    };
    (source, record)
}

/// Reads `--source-fd`: the whole content of inherited descriptor `fd`, without one
/// trailing newline. The descriptor is closed afterwards unless it is 0..=2 (so that a
/// later `open` cannot land on a standard stream).
fn read_source_fd(fd: i32) -> Result<String, String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;

    if fd < 0 {
        return Err("not a file descriptor".into());
    }
    // SAFETY: fcntl(F_GETFD) takes no pointers; it only tells whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("not open: {}", std::io::Error::last_os_error()));
    }
    let mut bytes = Vec::new();
    let read = {
        // SAFETY: `fd` is open (checked above) and inherited for this purpose; nothing
        // else in the process uses it. For 0..=2 the `File` is forgotten below instead
        // of closing the standard stream.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let r = (&mut file)
            .take(MAX_SOURCE_FD_BYTES as u64 + 1)
            .read_to_end(&mut bytes);
        if fd <= 2 {
            std::mem::forget(file);
        }
        r
    };
    read.map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_SOURCE_FD_BYTES {
        return Err(format!("longer than {MAX_SOURCE_FD_BYTES} bytes"));
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    if text.is_empty() {
        return Err("empty".into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["frame-kernel"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    /// A ring dir the kernel accepts: owned by us, 0700 (tempfile's default mode
    /// follows the umask).
    fn tmpdir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// Issue 25, item 4: the kernel's own check refuses control and invisible format
    /// characters in the source and the record source, redacted and escaped.
    #[test]
    fn control_and_format_characters_in_sources_are_refused() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        for (flag, bad, code) in [
            (
                "--source",
                "rtsp://u:secret@127.0.0.1:1/x\u{202e}",
                "U+202E, a bidi control",
            ),
            (
                "--source",
                "rtsp://127.0.0.1:1/\u{200b}x",
                "U+200B, an invisible format character",
            ),
            ("--source", "rtsp://127.0.0.1:1/x\nINFO forged", "U+000A"),
            (
                "--record-source",
                "rtsp://u:secret@127.0.0.1:1/\u{2066}main",
                "U+2066, a bidi control",
            ),
        ] {
            let mut a = vec!["--camera-id", "cam1", "--ring-dir", dir];
            if flag == "--source" {
                a.extend(["--source", bad]);
            } else {
                a.extend([
                    "--source",
                    "rtsp://127.0.0.1:1/sub",
                    "--record-source",
                    bad,
                    "--clip-dir",
                    dir,
                ]);
            }
            let e = Config::from_args(args(&a)).unwrap_err();
            assert!(
                matches!(&e.problems[..], [ConfigProblem::HiddenCharacter { option, code: c, .. }] if *option == flag && c == code),
                "{bad:?}: {e}"
            );
            let text = e.to_string();
            assert!(!text.contains("secret"), "{text}");
            assert!(
                text.chars()
                    .all(|c| !proto_schema::text::is_hidden(c) || c == '\n'),
                "{text:?}"
            );
        }
    }

    #[test]
    fn good_rtsp_config_with_defaults() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let c = Config::from_args(args(&[
            "--camera-id",
            "cam1",
            "--source",
            "rtsp://user:secret@127.0.0.1:8554/cam",
            "--ring-dir",
            dir,
        ]))
        .unwrap();
        assert_eq!(c.ring_name, "cam1");
        assert_eq!(c.format, PixelFormat::Nv12);
        assert_eq!(c.stall, StallPolicy::default());
        assert_eq!(c.io_timeout, Duration::from_secs(3));
        assert!(matches!(
            c.source,
            Source::Rtsp {
                transport: Transport::Tcp,
                ..
            }
        ));
        assert_eq!(c.source.redacted(), "rtsp://***@127.0.0.1:8554/cam");
        assert!(
            !format!("{c:?}").contains("secret"),
            "Debug must not leak credentials"
        );
        assert_eq!(c.fixed_geometry(), None);
        assert_eq!(c.pace, PaceMode::Fast, "a camera is never paced again");
    }

    #[test]
    fn good_file_config() {
        let d = tmpdir();
        let file = d.path().join("clip.mp4");
        std::fs::write(&file, b"x").unwrap();
        let c = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--ring",
            "ring-1",
            "--source",
            file.to_str().unwrap(),
            "--ring-dir",
            d.path().to_str().unwrap(),
            "--format",
            "bgr24",
            "--width",
            "640",
            "--height",
            "360",
            "--fast",
            "--loop",
            "--av-option",
            "probesize=32768",
        ]))
        .unwrap();
        assert_eq!(c.ring_name, "ring-1");
        assert_eq!(c.pace, PaceMode::Fast);
        assert!(c.loop_file && c.source.is_file());
        assert_eq!(c.fixed_geometry().unwrap().frame_size, 640 * 360 * 3);
        assert_eq!(c.av_options, [("probesize".to_owned(), "32768".to_owned())]);
        let url = format!("file://{}", file.display());
        let c2 = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source",
            &url,
            "--ring-dir",
            d.path().to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(c2.source, Source::File { path: file });
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let d = tmpdir();
        let not_a_dir = d.path().join("f");
        std::fs::write(&not_a_dir, b"").unwrap();
        let err = Config::from_args(args(&[
            "--camera-id",
            "bad id!",
            "--source",
            "http://127.0.0.1/x",
            "--format",
            "YUV9",
            "--ring-dir",
            not_a_dir.to_str().unwrap(),
            "--width",
            "641",
            "--height",
            "360",
            "--slots",
            "1",
            "--backoff-initial-ms",
            "900",
            "--backoff-max-ms",
            "10",
            "--av-option",
            "novalue",
        ]))
        .unwrap_err();
        let kinds: Vec<String> = err
            .problems
            .iter()
            .map(|p| {
                format!("{p:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        for want in [
            "CameraId",
            "UnsupportedScheme",
            "UnknownFormat",
            "RingDir",
            "OutOfRange",
            "BackoffOrder",
            "BadAvOption",
        ] {
            assert!(
                kinds.iter().any(|k| k == want),
                "missing {want} in {kinds:?}"
            );
        }
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration for camera \"bad id!\""),
            "{text}"
        );
        assert!(text.contains("not a directory"), "{text}");
        assert!(text.contains("unsupported scheme \"http\""), "{text}");
    }

    #[test]
    fn odd_size_for_nv12_and_half_size() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let base = [
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/x",
            "--ring-dir",
            dir,
        ];
        let mut a = base.to_vec();
        a.extend(["--width", "641", "--height", "360"]);
        let e = Config::from_args(args(&a)).unwrap_err();
        assert!(
            matches!(e.problems[..], [ConfigProblem::BadSize { .. }]),
            "{e}"
        );
        let mut a = base.to_vec();
        a.extend(["--width", "640"]);
        let e = Config::from_args(args(&a)).unwrap_err();
        assert_eq!(e.problems, [ConfigProblem::HalfSize]);
    }

    #[test]
    fn missing_file_missing_dir_and_file_options_on_rtsp() {
        let d = tmpdir();
        let e = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source",
            "/nonexistent/clip.mp4",
            "--ring-dir",
            "/nonexistent/dir",
        ]))
        .unwrap_err();
        assert!(
            matches!(e.problems[0], ConfigProblem::UnreadableFile { .. }),
            "{e}"
        );
        assert!(
            matches!(e.problems[1], ConfigProblem::RingDir { .. }),
            "{e}"
        );
        let e = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source",
            "rtsp:///nohost",
            "--ring-dir",
            d.path().to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(matches!(e.problems[0], ConfigProblem::NoHost { .. }), "{e}");
        let e = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/x",
            "--loop",
            "--fast",
            "--ring-dir",
            d.path().to_str().unwrap(),
        ]))
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::FileOnlyOption { option: "--fast" },
                ConfigProblem::FileOnlyOption { option: "--loop" }
            ]
        );
        let e = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/x",
            "--speed",
            "30",
            "--ring-dir",
            d.path().to_str().unwrap(),
        ]))
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::FileOnlyOption { option: "--speed" },
                ConfigProblem::BadSpeed { given: "30".into() }
            ]
        );
    }

    #[test]
    fn decode_options_default_parse_and_report_every_problem() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let base = [
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/x",
            "--ring-dir",
            dir,
        ];
        let c = Config::from_args(args(&base)).unwrap();
        assert_eq!(
            c.decode,
            DecodeOptions {
                skip_frames: SkipFrames::Auto,
                consumer_fps: None,
                all_frames: false,
                loop_filter: LoopFilter::Keep,
                hwaccel: HwAccel::None,
            }
        );
        let mut a = base.to_vec();
        a.extend([
            "--skip-frames",
            "bidir",
            "--consumer-fps",
            "5",
            "--all-frames",
            "--hwaccel",
            "vaapi",
            "--skip-loop-filter",
        ]);
        let c = Config::from_args(args(&a)).unwrap();
        assert_eq!(
            c.decode,
            DecodeOptions {
                skip_frames: SkipFrames::Bidir,
                consumer_fps: Some(5.0),
                all_frames: true,
                loop_filter: LoopFilter::SkipAll,
                hwaccel: HwAccel::Vaapi,
            }
        );
        let mut a = base.to_vec();
        a.extend([
            "--skip-frames",
            "nonkey",
            "--consumer-fps",
            "0",
            "--hwaccel",
            "nvdec",
            "--skip-loop-filter",
            "some",
        ]);
        let e = Config::from_args(args(&a)).unwrap_err();
        let options: Vec<&str> = e
            .problems
            .iter()
            .filter_map(|p| match p {
                ConfigProblem::UnknownDecodeOption { option, .. } => Some(*option),
                ConfigProblem::BadConsumerFps { .. } => Some("--consumer-fps"),
                _ => None,
            })
            .collect();
        assert_eq!(
            options,
            [
                "--skip-frames",
                "--skip-loop-filter",
                "--hwaccel",
                "--consumer-fps"
            ],
            "{e}"
        );
    }

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!(parse_format("nv12"), Some(PixelFormat::Nv12));
        assert_eq!(parse_format("I420"), Some(PixelFormat::I420));
        assert_eq!(parse_format("Rgb24"), Some(PixelFormat::Rgb24));
        assert_eq!(parse_format("yuv420p"), None);
    }

    /// A pipe whose write end already held `content` and is closed: the read end.
    fn pipe_with(content: &[u8]) -> i32 {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[1] is the write end just created and owned by nobody else.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        w.write_all(content).unwrap();
        fds[0]
    }

    #[test]
    fn source_comes_from_an_inherited_fd_and_the_fd_is_closed() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let fd = pipe_with(b"rtsp://user:secret@127.0.0.1:8554/cam\n");
        let pipe = fd_identity(fd).expect("the pipe is open");
        let c = Config::from_args(args(&[
            "--camera-id",
            "cam1",
            "--source-fd",
            &fd.to_string(),
            "--ring-dir",
            dir,
        ]))
        .unwrap();
        assert_eq!(
            c.source,
            Source::Rtsp {
                url: "rtsp://user:secret@127.0.0.1:8554/cam".into(),
                transport: Transport::Tcp
            }
        );
        // Other tests run on other threads and may be handed the same fd
        // number once it is closed, so "closed" means "no longer this pipe".
        assert_ne!(fd_identity(fd), Some(pipe), "fd left open");
    }

    /// core-agent's way: one pipe holds the source and, on a second line, the record
    /// stream; both are parsed and the record stream is RTSP.
    #[test]
    fn record_source_shares_the_source_fd_as_a_second_line() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let fd = pipe_with(b"rtsp://127.0.0.1:8554/sub\nrtsp://u:pw@127.0.0.1:8554/main\n");
        let fd_s = fd.to_string();
        let c = Config::from_args(args(&[
            "--camera-id",
            "cam1",
            "--source-fd",
            &fd_s,
            "--record-source-fd",
            &fd_s,
            "--clip-dir",
            dir,
            "--ring-dir",
            dir,
        ]))
        .unwrap();
        let rtsp = |url: &str| Source::Rtsp {
            url: url.into(),
            transport: Transport::Tcp,
        };
        assert_eq!(c.source, rtsp("rtsp://127.0.0.1:8554/sub"));
        assert_eq!(
            c.record_source,
            Some(rtsp("rtsp://u:pw@127.0.0.1:8554/main"))
        );
    }

    /// A shared fd with one line, a record stream that is a file or has no host, and
    /// `--record-source` without `--clip-dir` are all refused (the password redacted).
    #[test]
    fn bad_record_sources_are_config_problems() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let fd = pipe_with(b"rtsp://127.0.0.1:8554/sub\n");
        let fd_s = fd.to_string();
        let e = Config::from_args(args(&[
            "--camera-id",
            "c",
            "--source-fd",
            &fd_s,
            "--record-source-fd",
            &fd_s,
            "--clip-dir",
            dir,
            "--ring-dir",
            dir,
        ]))
        .unwrap_err();
        assert!(
            matches!(&e.problems[..], [ConfigProblem::RecordSourceFd { reason, .. }] if reason.contains("two lines")),
            "{e}"
        );
        let file = d.path().join("main.mp4");
        std::fs::write(&file, b"x").unwrap();
        for bad in [
            file.to_str().unwrap(),
            "rtsp://u:secret@/main",
            "http://h/x",
        ] {
            let e = Config::from_args(args(&[
                "--camera-id",
                "c",
                "--source",
                "rtsp://127.0.0.1/sub",
                "--record-source",
                bad,
                "--clip-dir",
                dir,
                "--ring-dir",
                dir,
            ]))
            .unwrap_err();
            assert!(
                matches!(&e.problems[..], [ConfigProblem::RecordSourceNotRtsp { .. }]),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let e = Args::try_parse_from([
            "frame-kernel",
            "--camera-id",
            "c",
            "--source",
            "rtsp://h/sub",
            "--record-source",
            "rtsp://h/main",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--clip-dir"), "{e}");
    }

    /// The (device, inode) of what `fd` refers to, or None when it is closed.
    fn fd_identity(fd: i32) -> Option<(u64, u64)> {
        // SAFETY: an all-zero `stat` is a valid value for fstat(2) to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable stat for the duration of the call.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return None;
        }
        Some((st.st_dev as u64, st.st_ino as u64))
    }

    #[test]
    fn bad_source_fds_are_config_problems() {
        let d = tmpdir();
        let dir = d.path().to_str().unwrap();
        let too_long = vec![b'a'; MAX_SOURCE_FD_BYTES + 1];
        for (fd, want) in [
            (pipe_with(b""), "empty"),
            (pipe_with(&too_long), "longer than"),
            (pipe_with(b"\xff\xfe"), "not UTF-8"),
            (987_654, "not open"),
        ] {
            let e = Config::from_args(args(&[
                "--camera-id",
                "c",
                "--source-fd",
                &fd.to_string(),
                "--ring-dir",
                dir,
            ]))
            .unwrap_err();
            assert!(
                matches!(&e.problems[..], [ConfigProblem::SourceFd { reason, .. }] if reason.contains(want)),
                "{want}: {e}"
            );
        }
        // Exactly one of --source and --source-fd.
        assert!(Args::try_parse_from(["frame-kernel", "--camera-id", "c"]).is_err());
        assert!(Args::try_parse_from([
            "frame-kernel",
            "--camera-id",
            "c",
            "--source",
            "/x",
            "--source-fd",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("rtsp://a:b@h:1/p?x=@"), "rtsp://***@h:1/p?x=@");
        assert_eq!(redact_url("rtsp://a@h/p"), "rtsp://***@h/p");
        assert_eq!(redact_url("rtsp://h/p"), "rtsp://h/p");
        assert_eq!(redact_url("/a/b@c"), "/a/b@c");
    }
}
