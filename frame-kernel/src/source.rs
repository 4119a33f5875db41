//! Opening a camera (RTSP) or file with FFmpeg, with options that are checked, and an
//! interrupt callback that is a hard deadline on every blocking call.
//!
//! FFmpeg silently ignores dictionary keys nobody consumed (a misspelt or removed
//! option, such as the pre-5.0 `stimeout`), which would leave a socket without a
//! timeout. So the dictionary left over after `avformat_open_input` is inspected and any
//! key in it is an error. The socket timeout alone does not bound everything (DNS, a
//! server that accepts and never answers, stream probing), so every blocking call also
//! runs under [`Interrupt`], which aborts it at a deadline or on shutdown.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ffmpeg::ffi;
use ffmpeg::format::context::Input;
use ffmpeg::{Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::config::{Config, Source};
use proto_schema::time::{duration_ns, Clock};

/// Shared between the kernel loop and FFmpeg's interrupt callback: the deadline of the
/// blocking call in progress and the process's stop flag.
pub struct Interrupt {
    clock: Arc<dyn Clock>,
    stop: &'static AtomicBool,
    /// Stops only the users of this interrupt (a thread the kernel ends on its own).
    local_stop: AtomicBool,
    /// Clock ns after which blocking calls abort; 0 = no deadline.
    deadline_ns: AtomicU64,
    /// Last time FFmpeg polled the callback (shows the decode thread is not hung).
    polled_ns: AtomicU64,
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("deadline_ns", &self.deadline_ns.load(Ordering::Relaxed))
            .field("stop", &self.stop.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Interrupt {
    /// No deadline yet.
    pub fn new(clock: Arc<dyn Clock>, stop: &'static AtomicBool) -> Self {
        let now = clock.now().get();
        Interrupt {
            clock,
            stop,
            local_stop: AtomicBool::new(false),
            deadline_ns: AtomicU64::new(0),
            polled_ns: AtomicU64::new(now),
        }
    }

    /// Blocking calls from now on abort at clock time `deadline_ns`.
    pub fn arm_at(&self, deadline_ns: u64) {
        self.deadline_ns
            .store(deadline_ns.max(1), Ordering::Release);
    }

    /// Blocking calls from now on abort after `d`.
    pub fn arm_for(&self, d: Duration) {
        self.arm_at(self.clock.now().get().saturating_add(duration_ns(d)));
    }

    /// Whether the stop flag (or this interrupt's own, [`Interrupt::stop_here`]) is
    /// raised.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.local_stop.load(Ordering::Relaxed)
    }

    /// Stops the users of this interrupt only (not the process).
    pub fn stop_here(&self) {
        self.local_stop.store(true, Ordering::Relaxed);
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        let d = self.deadline_ns.load(Ordering::Acquire);
        d != 0 && self.clock.now().get() >= d
    }

    /// The callback's answer: abort now?
    pub fn should_abort(&self) -> bool {
        self.polled_ns
            .store(self.clock.now().get(), Ordering::Relaxed);
        self.stopping() || self.expired()
    }

    /// Clock ns of the last callback poll.
    pub fn last_polled_ns(&self) -> u64 {
        self.polled_ns.load(Ordering::Relaxed)
    }
}

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `avformat_open_input` failed (refused, unreachable, not found, bad data).
    #[error("open {source_name}: {error}")]
    Open {
        /// The source (redacted).
        source_name: String,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// The open or probe ran past its deadline (or the kernel is stopping).
    #[error("open {source_name}: no answer within {} ms", timeout.as_millis())]
    TimedOut {
        /// The source (redacted).
        source_name: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Probing the streams failed.
    #[error("probe {source_name}: {error}")]
    StreamInfo {
        /// The source (redacted).
        source_name: String,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// The source has no video stream.
    #[error("{source_name}: no video stream")]
    NoVideo {
        /// The source (redacted).
        source_name: String,
    },
    /// A file that FFmpeg cannot read as a video at all (a text file, a truncated or
    /// foreign file): no container it knows, invalid data, or text that FFmpeg would
    /// render as pictures (its `tty` demuxer).
    #[error("{source_name}: not a video file, no video stream found ({detail})")]
    NotAVideo {
        /// The source (redacted).
        source_name: String,
        /// What FFmpeg said, or why the kernel refused it.
        detail: String,
    },
    /// FFmpeg did not consume these options: they are misspelt or not supported by the
    /// demuxer/protocol, and would have been silently ignored.
    #[error("{source_name}: FFmpeg did not use option(s) {}", keys.join(", "))]
    UnusedOptions {
        /// The source (redacted).
        source_name: String,
        /// The keys left over.
        keys: Vec<String>,
    },
    /// A path or option contains a NUL byte.
    #[error("{source_name}: contains a NUL byte")]
    Nul {
        /// The source (redacted).
        source_name: String,
    },
}

impl OpenError {
    /// Whether retrying cannot help, so the kernel must give up instead of reporting
    /// the camera as unreachable forever (issue 10, defect 10).
    ///
    /// Permanent, for any source: options FFmpeg did not use, a NUL byte, no video
    /// stream. Permanent for a **file** only: the file is missing, not readable, or not
    /// something FFmpeg can demux or probe (invalid data, no demuxer) — a file does not
    /// get better by waiting. Everything else is transient: for a camera, refused,
    /// unreachable, timed out, invalid data (an RTSP server that answers garbage or
    /// is restarting), HTTP-style 4xx/5xx answers (a stream path that is not published
    /// yet); for any source, a deadline or an I/O error.
    pub fn is_permanent(&self, source: &Source) -> bool {
        match self {
            OpenError::UnusedOptions { .. }
            | OpenError::Nul { .. }
            | OpenError::NoVideo { .. }
            | OpenError::NotAVideo { .. } => true,
            OpenError::Open { error, .. } | OpenError::StreamInfo { error, .. } => {
                source.is_file() && is_permanent_file_error(*error)
            }
            OpenError::TimedOut { .. } => false,
        }
    }
}

/// Demuxers that turn text into pictures; refused for file sources.
const TEXT_DEMUXERS: [&str; 1] = ["tty"];

/// FFmpeg errors saying that the data is not something it can demux as video.
fn is_not_a_video(error: ffmpeg::Error) -> bool {
    matches!(
        error,
        ffmpeg::Error::InvalidData | ffmpeg::Error::DemuxerNotFound | ffmpeg::Error::StreamNotFound
    )
}

/// FFmpeg errors that, on a local file, will come back on every attempt.
fn is_permanent_file_error(error: ffmpeg::Error) -> bool {
    use ffmpeg::Error as E;
    match error {
        E::InvalidData
        | E::DemuxerNotFound
        | E::DecoderNotFound
        | E::StreamNotFound
        | E::ProtocolNotFound
        | E::PatchWelcome => true,
        E::Other { errno } => matches!(
            errno,
            libc::ENOENT | libc::EACCES | libc::EPERM | libc::EISDIR | libc::ENOTDIR | libc::ELOOP
        ),
        _ => false,
    }
}

/// Why reading the next packet failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream ended (file end, or the camera closed the connection).
    #[error("end of stream")]
    EndOfStream,
    /// The deadline passed while waiting for data.
    #[error("read deadline passed")]
    Deadline,
    /// The kernel is stopping.
    #[error("stopping")]
    Stopping,
    /// Any other I/O or demuxer error.
    #[error("{0}")]
    Failed(ffmpeg::Error),
}

/// An open source and its video stream.
pub struct OpenSource {
    input: Input,
    stream_index: usize,
    time_base: Rational,
    frame_ns: Option<i64>,
}

impl std::fmt::Debug for OpenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSource")
            .field("stream_index", &self.stream_index)
            .field("time_base", &self.time_base)
            .field("frame_ns", &self.frame_ns)
            .finish_non_exhaustive()
    }
}

/// The option dictionary for the camera's `source`: RTSP transport and socket timeout,
/// then the user's extra options (which may override them).
pub fn options_for(config: &Config) -> Vec<(String, String)> {
    options_for_source(&config.source, config)
}

/// The option dictionary for `source` (the camera's or its record stream), with
/// `config`'s timeouts and extra options.
pub fn options_for_source(source: &Source, config: &Config) -> Vec<(String, String)> {
    let mut opts = Vec::new();
    if let Source::Rtsp { transport, .. } = source {
        opts.push(("rtsp_transport".to_owned(), transport.as_str().to_owned()));
        // FFmpeg 5.1's RTSP socket timeout, in microseconds.
        opts.push((
            "timeout".to_owned(),
            config.io_timeout.as_micros().to_string(),
        ));
        // Do not hold the stream back for 20 frames (0.8 s at 25 fps) to measure the
        // frame rate: timestamps come from RTP anyway, and a reconnect should show
        // frames as soon as the camera answers.
        opts.push(("fpsprobesize".to_owned(), "0".to_owned()));
    }
    for (k, v) in &config.av_options {
        opts.retain(|(key, _)| key != k);
        opts.push((k.clone(), v.clone()));
    }
    opts
}

impl OpenSource {
    /// Opens `source` with `options`; every blocking step runs under `interrupt`, armed
    /// here with `timeout`.
    pub fn open(
        source: &Source,
        options: &[(String, String)],
        interrupt: &Arc<Interrupt>,
        timeout: Duration,
    ) -> Result<OpenSource, OpenError> {
        let name = source.redacted();
        let url = match source {
            Source::Rtsp { url, .. } => url.clone(),
            Source::File { path } => path.to_string_lossy().into_owned(),
        };
        let c_url = CString::new(url).map_err(|_| OpenError::Nul {
            source_name: name.clone(),
        })?;
        let mut dict = Dictionary::new();
        for (k, v) in options {
            if k.contains('\0') || v.contains('\0') {
                return Err(OpenError::Nul { source_name: name });
            }
            dict.set(k, v);
        }
        interrupt.arm_for(timeout);
        let timed_out = || OpenError::TimedOut {
            source_name: name.clone(),
            timeout,
        };

        let cb_state = interrupt.clone();
        let callback = ffmpeg::util::interrupt::new(Box::new(move || cb_state.should_abort()));
        // SAFETY: FFmpeg's documented open protocol. `ps` is freshly allocated and only
        // given to avformat_open_input, which frees it on failure and otherwise hands it
        // to `Input::wrap_with_interrupt`, which owns it from then on (closing it on
        // drop). The interrupt closure's box is owned by `callback.guard`, which either
        // moves into the `Input` (dropped after avformat_close_input) or is dropped here
        // after a failed open, when FFmpeg no longer references it. `dict` is disowned
        // into FFmpeg and the leftover dictionary re-owned exactly once.
        let (mut input, leftover) = unsafe {
            let mut ps = ffi::avformat_alloc_context();
            if ps.is_null() {
                return Err(OpenError::Open {
                    source_name: name,
                    error: ffmpeg::Error::Other {
                        errno: libc::ENOMEM,
                    },
                });
            }
            (*ps).interrupt_callback = callback.interrupt;
            let mut opts = dict.disown();
            let ret = ffi::avformat_open_input(&mut ps, c_url.as_ptr(), ptr::null(), &mut opts);
            let leftover = Dictionary::own(opts);
            if ret < 0 {
                drop(callback.guard);
                let error = ffmpeg::Error::from(ret);
                // Protocols report an aborted call in their own words (RTSP: "invalid
                // data"), so the deadline decides.
                return Err(
                    if error == ffmpeg::Error::Exit || interrupt.should_abort() {
                        timed_out()
                    } else if source.is_file() && is_not_a_video(error) {
                        OpenError::NotAVideo {
                            source_name: name,
                            detail: error.to_string(),
                        }
                    } else {
                        OpenError::Open {
                            source_name: name,
                            error,
                        }
                    },
                );
            }
            (Input::wrap_with_interrupt(ps, callback.guard), leftover)
        };
        let keys: Vec<String> = leftover.iter().map(|(k, _)| k.to_owned()).collect();
        if !keys.is_empty() {
            return Err(OpenError::UnusedOptions {
                source_name: name,
                keys,
            });
        }
        // FFmpeg's fallback for text files (`.txt`, `.ans`, ...) renders the text as a
        // "video" (codec `ansi`): a text file is not a camera.
        if source.is_file() && TEXT_DEMUXERS.contains(&input.format().name()) {
            return Err(OpenError::NotAVideo {
                source_name: name,
                detail: format!("text (FFmpeg's {} demuxer)", input.format().name()),
            });
        }

        // SAFETY: `input` owns a valid, opened format context.
        let ret = unsafe { ffi::avformat_find_stream_info(input.as_mut_ptr(), ptr::null_mut()) };
        if ret < 0 {
            let error = ffmpeg::Error::from(ret);
            return Err(
                if error == ffmpeg::Error::Exit || interrupt.should_abort() {
                    timed_out()
                } else if source.is_file() && is_not_a_video(error) {
                    OpenError::NotAVideo {
                        source_name: name,
                        detail: error.to_string(),
                    }
                } else {
                    OpenError::StreamInfo {
                        source_name: name,
                        error,
                    }
                },
            );
        }

        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| OpenError::NoVideo {
                source_name: name.clone(),
            })?;
        let stream_index = stream.index();
        let time_base = stream.time_base();
        let rate = stream.avg_frame_rate();
        let rate = if rate.numerator() > 0 && rate.denominator() > 0 {
            rate
        } else {
            stream.rate()
        };
        let frame_ns = (rate.numerator() > 0 && rate.denominator() > 0).then(|| {
            (1_000_000_000i64 * i64::from(rate.denominator())) / i64::from(rate.numerator())
        });
        Ok(OpenSource {
            input,
            stream_index,
            time_base,
            frame_ns,
        })
    }

    /// The video stream.
    pub fn stream(&self) -> ffmpeg::Stream<'_> {
        self.input
            .stream(self.stream_index)
            .expect("stream index was taken from this input")
    }

    /// Index of the video stream.
    pub fn stream_index(&self) -> usize {
        self.stream_index
    }

    /// Nominal frame duration from the declared frame rate.
    pub fn frame_ns(&self) -> Option<i64> {
        self.frame_ns
    }

    /// `ts` (in the stream's time base) in nanoseconds.
    pub fn ts_to_ns(&self, ts: i64) -> i64 {
        let tb = self.time_base;
        if tb.denominator() == 0 {
            return ts;
        }
        // i128 so large timestamps cannot overflow the product.
        let ns = i128::from(ts) * 1_000_000_000 * i128::from(tb.numerator())
            / i128::from(tb.denominator());
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Reads the next packet of any stream (the caller arms the interrupt deadline
    /// first).
    ///
    /// Every call returns a fresh packet that owns its buffer: `av_read_frame` stores a
    /// new reference into the packet it is given without releasing the one already
    /// there, and ffmpeg-next's `Packet::read` does not unref first, so reusing one
    /// packet across reads leaked every packet's data (issue 10, defect 3). The packet
    /// is released (`av_packet_unref` in its `Drop`) when the caller drops it, after the
    /// decoder took its own reference. `Packet::empty` only zeroes a struct: no
    /// allocation per read.
    pub fn read(&mut self, interrupt: &Interrupt) -> Result<Packet, ReadError> {
        let mut packet = Packet::empty();
        match packet.read(&mut self.input) {
            Ok(()) => Ok(packet),
            Err(ffmpeg::Error::Eof) => Err(ReadError::EndOfStream),
            Err(_) if interrupt.stopping() => Err(ReadError::Stopping),
            Err(_) if interrupt.expired() => Err(ReadError::Deadline),
            Err(e) => Err(ReadError::Failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;
    use proto_schema::time::{ManualClock, MonoNanos, UnixNanos};

    fn stop_flag() -> &'static AtomicBool {
        Box::leak(Box::new(AtomicBool::new(false)))
    }

    #[test]
    fn interrupt_fires_at_deadline_and_on_stop() {
        let clock = ManualClock::starting_at(MonoNanos(1_000), UnixNanos(0));
        let stop = stop_flag();
        let i = Interrupt::new(Arc::new(clock.clone()), stop);
        assert!(!i.should_abort(), "no deadline armed");
        i.arm_for(Duration::from_millis(5));
        assert!(!i.should_abort());
        clock.advance(Duration::from_millis(5));
        assert!(i.should_abort());
        assert_eq!(i.last_polled_ns(), clock.now().get());
        i.arm_for(Duration::from_secs(10));
        assert!(!i.should_abort());
        stop.store(true, Ordering::Relaxed);
        assert!(i.should_abort() && i.stopping());
    }

    fn config(source: Source, av: &[(&str, &str)]) -> Config {
        Config {
            camera_id: "c".into(),
            ring_name: "c".into(),
            ring_dir: "/tmp".into(),
            slots: 4,
            source,
            format: proto_schema::pixel::PixelFormat::Nv12,
            size: None,
            pace: crate::pacing::PaceMode::Fast,
            speed: 1.0,
            loop_file: false,
            max_frames: None,
            decoder_threads: 1,
            decode: Default::default(),
            stall: Default::default(),
            open_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_millis(2500),
            backoff: crate::reconnect::CAMERA_BACKOFF,
            av_options: av
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            keep_ring: false,
            log_format: crate::config::LogFormat::Text,
            record_source: None,
            clips: None,
        }
    }

    #[test]
    fn rtsp_options_carry_transport_and_microsecond_timeout() {
        let c = config(
            Source::Rtsp {
                url: "rtsp://h/x".into(),
                transport: Transport::Udp,
            },
            &[("timeout", "1000"), ("buffer_size", "1048576")],
        );
        assert_eq!(
            options_for(&c),
            [
                ("rtsp_transport".to_owned(), "udp".to_owned()),
                ("fpsprobesize".to_owned(), "0".to_owned()),
                ("timeout".to_owned(), "1000".to_owned()),
                ("buffer_size".to_owned(), "1048576".to_owned()),
            ]
        );
        let c = config(
            Source::Rtsp {
                url: "rtsp://h/x".into(),
                transport: Transport::Tcp,
            },
            &[],
        );
        assert_eq!(
            options_for(&c)[1],
            ("timeout".to_owned(), "2500000".to_owned())
        );
        let f = config(
            Source::File {
                path: "/x.mp4".into(),
            },
            &[],
        );
        assert!(options_for(&f).is_empty());
    }

    #[test]
    fn unused_options_are_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.h264");
        // A tiny H.264 stream made by the ffmpeg CLI, if present; otherwise skip the
        // FFmpeg half of this test (the option logic is covered above).
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=64x48:rate=5:duration=1",
            ])
            .args(["-c:v", "libx264", "-f", "h264"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            assert!(std::env::var_os("CI").is_none(), "ffmpeg CLI needed in CI");
            println!("SKIP: no ffmpeg CLI");
            return;
        }
        crate::init_ffmpeg();
        let source = Source::File { path };
        let interrupt = Arc::new(Interrupt::new(
            Arc::new(proto_schema::time::SystemClock),
            stop_flag(),
        ));
        let opts = [
            ("stimeout".to_owned(), "1".to_owned()),
            ("probesize".to_owned(), "100000".to_owned()),
        ];
        let err = OpenSource::open(&source, &opts, &interrupt, Duration::from_secs(5)).unwrap_err();
        match &err {
            OpenError::UnusedOptions { keys, .. } => assert_eq!(keys, &["stimeout"]),
            other => panic!("{other}"),
        }
        assert!(err.is_permanent(&source));
        assert!(
            err.to_string().contains("did not use option(s) stimeout"),
            "{err}"
        );
        let ok = OpenSource::open(&source, &opts[1..], &interrupt, Duration::from_secs(5)).unwrap();
        assert_eq!(ok.stream().parameters().id(), ffmpeg::codec::Id::H264);
        assert_eq!(ok.ts_to_ns(1), ok.ts_to_ns(1));
    }

    #[test]
    fn refused_connection_is_a_retryable_error() {
        crate::init_ffmpeg();
        // Port 9 on loopback: nothing listens (discard service is never enabled here).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = config(
            Source::Rtsp {
                url: format!("rtsp://127.0.0.1:{port}/x"),
                transport: Transport::Tcp,
            },
            &[],
        );
        let interrupt = Arc::new(Interrupt::new(
            Arc::new(proto_schema::time::SystemClock),
            stop_flag(),
        ));
        let err = OpenSource::open(
            &c.source,
            &options_for(&c),
            &interrupt,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(err, OpenError::Open { .. }), "{err}");
        assert!(!err.is_permanent(&c.source));
    }

    fn open_file(path: &std::path::Path) -> Result<OpenSource, OpenError> {
        crate::init_ffmpeg();
        let interrupt = Arc::new(Interrupt::new(
            Arc::new(proto_schema::time::SystemClock),
            stop_flag(),
        ));
        let source = Source::File {
            path: path.to_path_buf(),
        };
        OpenSource::open(&source, &[], &interrupt, Duration::from_secs(5))
    }

    #[test]
    fn text_files_are_permanently_not_a_video() {
        let dir = tempfile::tempdir().unwrap();
        let file = Source::File { path: "/x".into() };
        for (name, text) in [
            ("hostname", "build-host-01\n".to_owned()),
            ("notes.mp4", "some text\n".repeat(300)),
            // FFmpeg would render this one as an ANSI-art "video".
            ("notes.txt", "some text\n".repeat(300)),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = open_file(&path).unwrap_err();
            assert!(matches!(err, OpenError::NotAVideo { .. }), "{name}: {err}");
            assert!(err.is_permanent(&file), "{name}");
            assert!(err.to_string().contains("no video stream"), "{err}");
        }
    }

    #[test]
    fn permanence_depends_on_the_error_and_the_source_kind() {
        let file = Source::File {
            path: "/x.mp4".into(),
        };
        let cam = Source::Rtsp {
            url: "rtsp://h/x".into(),
            transport: Transport::Tcp,
        };
        let open = |error| OpenError::Open {
            source_name: "x".into(),
            error,
        };
        let enoent = ffmpeg::Error::Other {
            errno: libc::ENOENT,
        };
        let eacces = ffmpeg::Error::Other {
            errno: libc::EACCES,
        };
        let refused = ffmpeg::Error::Other {
            errno: libc::ECONNREFUSED,
        };
        for e in [ffmpeg::Error::InvalidData, enoent, eacces] {
            assert!(open(e).is_permanent(&file), "{e}");
            assert!(!open(e).is_permanent(&cam), "{e} on a camera");
        }
        for e in [refused, ffmpeg::Error::Other { errno: libc::EIO }] {
            assert!(!open(e).is_permanent(&file), "{e}");
            assert!(!open(e).is_permanent(&cam), "{e}");
        }
        let no_video = OpenError::NoVideo {
            source_name: "x".into(),
        };
        assert!(no_video.is_permanent(&cam) && no_video.is_permanent(&file));
        let timed_out = OpenError::TimedOut {
            source_name: "x".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!timed_out.is_permanent(&cam) && !timed_out.is_permanent(&file));
    }

    #[test]
    fn silent_server_hits_the_open_deadline() {
        crate::init_ffmpeg();
        // Accepts the TCP connection and never answers the RTSP request.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = config(
            Source::Rtsp {
                url: format!("rtsp://127.0.0.1:{port}/x"),
                transport: Transport::Tcp,
            },
            &[("timeout", "60000000")],
        );
        let interrupt = Arc::new(Interrupt::new(
            Arc::new(proto_schema::time::SystemClock),
            stop_flag(),
        ));
        let t = std::time::Instant::now();
        let err = OpenSource::open(
            &c.source,
            &options_for(&c),
            &interrupt,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, OpenError::TimedOut { .. }), "{err}");
        // Bounded by the deadline, not by the 60 s socket timeout.
        assert!(t.elapsed() < Duration::from_secs(30));
        drop(listener);
    }
}
