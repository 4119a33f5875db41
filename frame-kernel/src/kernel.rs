//! The kernel's main loop: open the source, decode, convert into the ring, and when the
//! camera fails, mark the ring `Reconnecting` and try again with backoff, forever.
//!
//! One decode thread (this loop, which owns all FFmpeg state) and one heartbeat thread
//! (see [`crate::publish`]), joined before the ring is closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto_schema::pixel::{FrameGeometry, GeometryError};
use proto_schema::time::UnixNanos;
use shm_ring::{RingCreateError, RingState};

use crate::codec::{CodecError, Received, VideoDecoder};
use crate::config::Config;
use crate::convert::Converter;
use crate::hwaccel::{HwDevice, HwError};
use crate::pacing::{Paced, Pacer, Timeline};
use crate::packets::{header_of, PacketKeeper};
use crate::publish::{heartbeat_loop, Output, RingSettings};
use crate::reconnect::{Link, LossReason, Phase};
use crate::record::{self, RecordSettings};
use crate::skip::{decide, GapGuard, SkipDecision, SkipFrames, SkipMode, SkipReason};
use crate::source::{options_for, Interrupt, OpenError, OpenSource, ReadError};
use proto_schema::backoff::SplitMix64;
use proto_schema::time::{duration_ns, Clock, MonoNanos, SystemClock};

/// Consecutive undecodable packets after which the connection is dropped.
pub const MAX_ERROR_STREAK: u32 = 100;
/// Deadline for closing a source (RTSP TEARDOWN to a camera that may be gone).
pub const CLOSE_DEADLINE: Duration = Duration::from_millis(500);
/// Lateness (realtime pacing) above which a warning is logged.
pub const LATE_WARNING: Duration = Duration::from_secs(1);

/// How the kernel ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT.
    Stopped,
    /// A non-looping file ended.
    EndOfFile,
    /// `--max-frames` were published.
    MaxFrames,
}

/// Why the kernel gave up (retrying cannot help).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The ring could not be created (directory, permissions, another live writer).
    #[error("ring: {0}")]
    Ring(#[from] RingCreateError),
    /// The source can never be opened as a video source: see
    /// [`OpenError::is_permanent`] (no video stream, a file that is missing, unreadable
    /// or not a video, an option FFmpeg does not use).
    #[error("source unusable (permanent, not retried): {0}")]
    Source(OpenError),
    /// The source's video codec cannot be decoded: see [`CodecError::is_permanent`].
    #[error("source unusable (permanent, not retried): {source_name}: {error}")]
    Codec {
        /// The source (redacted).
        source_name: String,
        /// The decoder error.
        error: CodecError,
    },
    /// A file source ended without one decodable video frame.
    #[error(
        "source unusable (permanent, not retried): {source_name}: no decodable video frame \
         in the file"
    )]
    NoFrames {
        /// The source (redacted).
        source_name: String,
    },
    /// The source's frame size cannot be stored in the configured format.
    #[error("output geometry: {0}")]
    Geometry(#[from] GeometryError),
    /// The heartbeat thread could not be started.
    #[error("cannot start heartbeat thread: {0}")]
    Thread(std::io::Error),
}

impl RunError {
    /// Whether the source itself is unusable (a permanent error, distinct from a camera
    /// that is down): `frame-kernel` exits with
    /// [`proto_schema::exit::KERNEL_SOURCE_UNUSABLE`] so that its supervisor marks the
    /// camera failed instead of restarting it.
    pub fn is_source_unusable(&self) -> bool {
        matches!(
            self,
            RunError::Source(_) | RunError::Codec { .. } | RunError::NoFrames { .. }
        )
    }
}

/// What ended one connection.
#[derive(Debug)]
enum SessionEnd {
    Stop,
    MaxFrames,
    EndOfStream,
    Lost(LossReason),
}

/// Runs the kernel until stopped, the file ends (no loop), `--max-frames`, or a fatal
/// error. The ring is closed (and removed unless kept) before returning.
pub fn run(config: &Config, stop: &'static AtomicBool) -> Result<Exit, RunError> {
    run_with_clock(config, stop, Arc::new(SystemClock))
}

/// [`run`] on a given clock.
pub fn run_with_clock(
    config: &Config,
    stop: &'static AtomicBool,
    clock: Arc<dyn Clock>,
) -> Result<Exit, RunError> {
    crate::init_ffmpeg();
    let interrupt = Arc::new(Interrupt::new(clock.clone(), stop));
    let output = Output::new(RingSettings::from_config(config), clock.now().get());
    let result = (|| {
        if let Some(g) = config.fixed_geometry() {
            output.ensure(g)?;
        }
        let heartbeat_stop = AtomicBool::new(false);
        let longest = config
            .open_timeout
            .max(config.stall.stall_timeout)
            .max(config.stall.first_frame_timeout);
        let span = tracing::Span::current();
        let record = RecordSettings::from_config(config);
        std::thread::scope(|s| {
            let heartbeat = std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn_scoped(s, || {
                    let _span = span.enter();
                    heartbeat_loop(
                        &output,
                        &*clock,
                        &|| interrupt.last_polled_ns(),
                        longest,
                        &heartbeat_stop,
                    );
                })
                .map_err(RunError::Thread)?;
            // With a record stream, it alone feeds the clips; the decoded source does not.
            let mut recorder = None;
            if let Some(settings) = record.as_ref() {
                if let Some(keeper) = open_keeper(config) {
                    let span = tracing::Span::current();
                    let own = Arc::new(Interrupt::new(clock.clone(), stop));
                    let (thread_own, clock) = (own.clone(), clock.clone());
                    let thread = std::thread::Builder::new()
                        .name("record".into())
                        .spawn_scoped(s, move || {
                            let _span = span.enter();
                            record::run(settings, keeper, &thread_own, &*clock)
                        })
                        .map_err(RunError::Thread)?;
                    recorder = Some((thread, own));
                }
            }
            let mut driver = Driver::new(config, clock.clone(), interrupt.clone(), &output);
            let result = driver.drive();
            heartbeat_stop.store(true, Ordering::Relaxed);
            if heartbeat.join().is_err() {
                tracing::error!("heartbeat thread panicked");
            }
            // The recorder stops on the same flag (a signal) or below.
            if let Some((thread, own)) = recorder {
                own.stop_here();
                if thread.join().is_err() {
                    tracing::error!("record thread panicked");
                }
            }
            result
        })
    })();
    output.close();
    result
}

/// Packet keeping for clips, if configured; a directory that cannot be used is logged
/// and the camera runs without it (clips never stop decoding).
fn open_keeper(config: &Config) -> Option<PacketKeeper> {
    let settings = config.clips.clone()?;
    match PacketKeeper::open(settings, Box::new(|| UnixNanos::now().get())) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::error!(error = %e, "packets for clips are not kept");
            None
        }
    }
}

struct Driver<'a> {
    config: &'a Config,
    clock: Arc<dyn Clock>,
    interrupt: Arc<Interrupt>,
    output: &'a Output,
    options: Vec<(String, String)>,
    link: Link,
    timeline: Timeline,
    pacer: Pacer,
    converter: Converter,
    published: u64,
    error_streak: u32,
    session_frames: u64,
    /// Video packets read, all sessions (frames decoded + skipped + undecodable).
    packets: u64,
    last_late_warning_ns: u64,
    /// The hardware device, opened at the first connection (`None` inside: CPU).
    hw: Option<Result<Option<HwDevice>, HwError>>,
    /// The last skip decision logged.
    logged_skip: Option<SkipDecision>,
    /// `auto` skipping turned off for good, and why.
    auto_revoked: Option<SkipReason>,
    /// Checks the gaps between published frames while `auto` skips.
    guard: Option<GapGuard>,
    /// Packets kept for event clips (`--clip-dir`).
    keeper: Option<PacketKeeper>,
}

impl<'a> Driver<'a> {
    fn new(
        config: &'a Config,
        clock: Arc<dyn Clock>,
        interrupt: Arc<Interrupt>,
        output: &'a Output,
    ) -> Self {
        Driver {
            config,
            link: Link::new(
                clock.clone(),
                config.backoff,
                config.stall,
                SplitMix64::from_entropy(),
            ),
            clock,
            interrupt,
            output,
            options: options_for(config),
            timeline: Timeline::new(),
            pacer: Pacer::with_speed(config.pace, config.speed),
            converter: Converter::new(),
            published: 0,
            error_streak: 0,
            session_frames: 0,
            packets: 0,
            last_late_warning_ns: 0,
            hw: None,
            logged_skip: None,
            auto_revoked: None,
            guard: None,
            // With a record stream, its thread keeps the clips' packets, not this loop.
            keeper: match config.record_source {
                Some(_) => None,
                None => open_keeper(config),
            },
        }
    }

    /// The hardware device to decode on, opened once (a failure is logged once, with
    /// the reason, and the kernel decodes on the CPU from then on).
    fn hw_device(&mut self, codec: ffmpeg_next::codec::Id) -> Option<&HwDevice> {
        let accel = self.config.decode.hwaccel;
        let hw = self.hw.get_or_insert_with(|| {
            let opened = HwDevice::open(accel, codec);
            match &opened {
                Ok(Some(d)) => tracing::info!(hwaccel = d.kind().as_str(), "hardware decoding"),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    hwaccel = accel.as_str(),
                    reason = %e,
                    "hardware decoding unavailable; decoding on the CPU"
                ),
            }
            opened
        });
        hw.as_ref().ok().and_then(Option::as_ref)
    }

    /// Opens the decoder, on the hardware device if there is one; a decoder that will
    /// not open on the device is opened on the CPU (and the device is dropped).
    fn open_decoder(&mut self, source: &OpenSource) -> Result<VideoDecoder, CodecError> {
        let stream = source.stream();
        let threads = self.config.decoder_threads;
        let Some(device) = self.hw_device(stream.parameters().id()) else {
            return VideoDecoder::new(&stream, threads, None);
        };
        match VideoDecoder::new(&stream, threads, Some(device)) {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::warn!(
                    hwaccel = device.kind().as_str(),
                    reason = %e,
                    "hardware decoder did not open; decoding on the CPU"
                );
                self.hw = Some(Ok(None));
                VideoDecoder::new(&stream, threads, None)
            }
        }
    }

    /// Sets the decoder's skipping and loop filter for a new session and logs the
    /// decision when it differs from the last one logged.
    fn plan_decode(&mut self, source: &OpenSource, decoder: &mut VideoDecoder) {
        let d = &self.config.decode;
        let source_fps = source
            .frame_ns()
            .filter(|ns| *ns > 0)
            .map(|ns| 1e9 / ns as f64);
        let decision = match self.auto_revoked {
            Some(reason) if d.skip_frames == SkipFrames::Auto && !d.all_frames => SkipDecision {
                mode: SkipMode::None,
                reason,
            },
            _ => decide(d.skip_frames, source_fps, d.consumer_fps, d.all_frames),
        };
        decoder.set_skip(decision.mode);
        decoder.set_loop_filter(d.loop_filter);
        self.guard = match (d.skip_frames, decision.mode, d.consumer_fps) {
            (SkipFrames::Auto, SkipMode::Bidir | SkipMode::NoRef, Some(fps)) => {
                let mut g = self.guard.take().unwrap_or_else(|| GapGuard::new(fps));
                g.reset();
                Some(g)
            }
            _ => None,
        };
        if self.logged_skip != Some(decision) {
            self.logged_skip = Some(decision);
            tracing::info!(
                skip_frames = decision.mode.as_str(),
                reason = %decision.reason,
                skip_loop_filter = d.loop_filter.as_str(),
                hwaccel = decoder.hw().map_or("cpu", |k| k.as_str()),
                consumer_fps = d.consumer_fps,
                source_fps,
                "decode options"
            );
        }
    }

    /// `auto` skipping: checks the gap before the frame just decoded (stream time
    /// `pts_ns`) and turns skipping off for good when it is wider than the consumers'
    /// interval.
    fn check_gap(&mut self, pts_ns: Option<i64>, decoder: &mut VideoDecoder) {
        let Some(guard) = self.guard.as_mut() else {
            return;
        };
        if let Some(reason) = guard.observe(pts_ns) {
            tracing::warn!(%reason, "frame skipping turned off");
            decoder.set_skip(SkipMode::None);
            self.auto_revoked = Some(reason);
            self.logged_skip = Some(SkipDecision {
                mode: SkipMode::None,
                reason,
            });
            self.guard = None;
        }
    }

    fn stopping(&self) -> bool {
        self.interrupt.stopping()
    }

    fn drive(&mut self) -> Result<Exit, RunError> {
        loop {
            if self.stopping() {
                return Ok(Exit::Stopped);
            }
            let reconnect = self.link.on_attempt();
            if reconnect {
                self.output.add_reconnect();
            }
            let opened = OpenSource::open(
                &self.config.source,
                &self.options,
                &self.interrupt,
                self.config.open_timeout,
            );
            let mut source = match opened {
                Ok(s) => s,
                Err(_) if self.stopping() => return Ok(Exit::Stopped),
                Err(e) if e.is_permanent(&self.config.source) => return Err(RunError::Source(e)),
                Err(e) => {
                    self.lost(LossReason::ConnectFailed(e.to_string()));
                    continue;
                }
            };
            let mut decoder = match self.open_decoder(&source) {
                Ok(d) => d,
                Err(e) if e.is_permanent(self.config.source.is_file()) => {
                    return Err(RunError::Codec {
                        source_name: self.config.source.redacted(),
                        error: e,
                    });
                }
                Err(e) => {
                    self.lost(LossReason::ConnectFailed(e.to_string()));
                    continue;
                }
            };
            let geometry = match self.geometry_for(&decoder) {
                Ok(g) => g,
                Err(reason) => {
                    self.lost(reason);
                    continue;
                }
            };
            let geometry = self.output.ensure(geometry)?;
            let (w, h) = decoder.size();
            tracing::info!(
                source = %self.config.source.redacted(),
                codec = ?decoder.codec(),
                size = format_args!("{w}x{h}"),
                fps = source.frame_ns().map(|ns| 1e9 / ns as f64),
                out = format_args!("{}x{} {}", geometry.width, geometry.height, geometry.format),
                reconnect,
                "source open"
            );
            self.link.on_connected();
            self.timeline.start_session(source.frame_ns());
            if reconnect {
                self.pacer.reanchor();
            }
            self.session_frames = 0;
            self.error_streak = 0;
            self.plan_decode(&source, &mut decoder);
            if let Some(k) = self.keeper.as_mut() {
                k.start_session(header_of(&source.stream()));
            }

            let end = self.session(&mut source, &mut decoder);
            let decoder_skip = decoder.skip();
            // Closing may talk to the camera (TEARDOWN): bound it.
            self.interrupt.arm_for(CLOSE_DEADLINE);
            drop(decoder);
            drop(source);

            match end {
                SessionEnd::Stop => return Ok(Exit::Stopped),
                SessionEnd::MaxFrames => return Ok(Exit::MaxFrames),
                SessionEnd::EndOfStream
                    if self.config.source.is_file() && self.session_frames > 0 =>
                {
                    if !self.config.loop_file {
                        tracing::info!(
                            frames = self.published,
                            packets = self.packets,
                            skip_frames = decoder_skip.as_str(),
                            "end of file"
                        );
                        return Ok(Exit::EndOfFile);
                    }
                    tracing::debug!(frames = self.session_frames, "file loop");
                    self.link.on_file_loop();
                }
                // A file that opens but never yields a frame (a text file probed as
                // some format, a video stream of garbage) will do the same on every
                // attempt.
                SessionEnd::EndOfStream if self.config.source.is_file() && self.published == 0 => {
                    return Err(RunError::NoFrames {
                        source_name: self.config.source.redacted(),
                    });
                }
                SessionEnd::EndOfStream => self.lost(LossReason::EndOfStream),
                SessionEnd::Lost(reason) => self.lost(reason),
            }
        }
    }

    /// The ring geometry for this source: the configured size, or the source's (made
    /// even where the format subsamples chroma).
    fn geometry_for(&self, decoder: &VideoDecoder) -> Result<FrameGeometry, LossReason> {
        if let Some(g) = self.output.geometry().or(self.config.fixed_geometry()) {
            return Ok(g);
        }
        let (mut w, mut h) = decoder.size();
        if self.config.format.needs_even_dimensions() {
            w &= !1;
            h &= !1;
        }
        FrameGeometry::packed(w, h, self.config.format)
            .map_err(|e| LossReason::ConnectFailed(format!("source frame size {w}x{h}: {e}")))
    }

    /// The source is gone: mark the ring, wait out the backoff (heartbeat continues).
    fn lost(&mut self, reason: LossReason) {
        self.output.set_state(RingState::Reconnecting);
        crate::ffmpeg_log::set_quiet(true);
        let was_live = self.link.phase() == Phase::Live;
        let delay = self.link.on_lost();
        let n = self.link.reconnects() + 1;
        let retry_in_ms = delay.as_millis() as u64;
        if was_live {
            tracing::warn!(%reason, retry_in_ms, "camera lost; reconnecting");
        } else if n.is_power_of_two() {
            tracing::warn!(%reason, retry_in_ms, attempt = n, "camera unreachable; retrying");
        } else {
            tracing::debug!(%reason, retry_in_ms, attempt = n, "camera unreachable; retrying");
        }
        self.pacer.reanchor();
        let until = self.clock.now().get().saturating_add(duration_ns(delay));
        let output = self.output;
        let clock = self.clock.clone();
        let interrupt = self.interrupt.clone();
        clock.sleep_until(MonoNanos(until), &|| {
            output.mark_progress(clock.now().get());
            interrupt.stopping()
        });
    }

    fn session(&mut self, source: &mut OpenSource, decoder: &mut VideoDecoder) -> SessionEnd {
        let stream_index = source.stream_index();
        loop {
            self.output.mark_progress(self.clock.now().get());
            if self.stopping() {
                return SessionEnd::Stop;
            }
            if self.link.is_stalled() {
                return SessionEnd::Lost(LossReason::Stalled(self.link.since_progress()));
            }
            // The stall deadline is also the hard deadline of the blocking read.
            self.interrupt.arm_at(self.link.stall_deadline_ns());
            match source.read(&self.interrupt) {
                // `packet` is dropped (unreferenced) at the end of this arm.
                Ok(packet) => {
                    if packet.stream() != stream_index {
                        continue;
                    }
                    self.link.on_packet();
                    self.packets += 1;
                    if let Some(k) = self.keeper.as_mut() {
                        k.on_av_packet(&packet);
                    }
                    if let Err(e) = decoder.send(&packet) {
                        if let Some(end) = self.decode_error(&e) {
                            return end;
                        }
                        continue;
                    }
                    if let Some(end) = self.drain(source, decoder) {
                        return end;
                    }
                }
                Err(ReadError::EndOfStream) => {
                    if decoder.send_eof().is_ok() {
                        if let Some(end) = self.drain(source, decoder) {
                            return end;
                        }
                    }
                    return SessionEnd::EndOfStream;
                }
                Err(ReadError::Stopping) => return SessionEnd::Stop,
                Err(ReadError::Deadline) => {
                    return SessionEnd::Lost(LossReason::Stalled(self.link.since_progress()));
                }
                Err(ReadError::Failed(e)) => {
                    return SessionEnd::Lost(LossReason::ReadError(e.to_string()))
                }
            }
        }
    }

    fn decode_error(&mut self, e: &ffmpeg_next::Error) -> Option<SessionEnd> {
        self.output.add_decode_error();
        self.error_streak += 1;
        if self.error_streak.is_power_of_two() {
            tracing::warn!(error = %e, streak = self.error_streak, "packet failed to decode");
        }
        (self.error_streak >= MAX_ERROR_STREAK).then_some(SessionEnd::Lost(
            LossReason::DecodeErrors(self.error_streak),
        ))
    }

    fn drain(&mut self, source: &OpenSource, decoder: &mut VideoDecoder) -> Option<SessionEnd> {
        loop {
            match decoder.receive() {
                Ok(Received::Frame) => {
                    if let Some(end) = self.on_frame(source, decoder) {
                        return Some(end);
                    }
                }
                Ok(Received::NeedInput | Received::Drained) => return None,
                Err(e) => return self.decode_error(&e),
            }
        }
    }

    fn on_frame(&mut self, source: &OpenSource, decoder: &mut VideoDecoder) -> Option<SessionEnd> {
        self.output.add_decoded();
        self.error_streak = 0;
        self.session_frames += 1;
        if decoder.frame_is_corrupt() {
            self.output.add_decode_error();
        }
        if self.link.on_frame() {
            self.output.set_state(RingState::Live);
            crate::ffmpeg_log::set_quiet(false);
            tracing::info!(reconnects = self.link.reconnects(), "live");
        }
        let pts = decoder.frame().timestamp().map(|t| source.ts_to_ns(t));
        self.check_gap(pts, decoder);
        let out_ns = self.timeline.map(pts);
        let (interrupt, output, clock) = (self.interrupt.clone(), self.output, self.clock.clone());
        // Waiting for a frame's time is progress, not a hang (watchdog).
        let stop = || {
            output.mark_progress(clock.now().get());
            interrupt.stopping()
        };
        match self.pacer.wait(out_ns, &*self.clock, &stop) {
            Paced::Stopped => return Some(SessionEnd::Stop),
            Paced::Due { late_ns } => self.note_lateness(late_ns),
        }
        let converter = &mut self.converter;
        let frame = decoder.frame();
        match self.output.publish(
            out_ns,
            || UnixNanos::now().get(),
            |slot, geometry| converter.convert(frame, slot, geometry),
        ) {
            Ok(Some(info)) => {
                self.published += 1;
                if let Some(k) = self.keeper.as_mut() {
                    k.on_published(pts, info.capture_ts_ns);
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.output.add_decode_error();
                tracing::error!(error = %e, "frame not published");
            }
        }
        match self.config.max_frames {
            Some(max) if self.published >= max => Some(SessionEnd::MaxFrames),
            _ => None,
        }
    }

    fn note_lateness(&mut self, late_ns: u64) {
        let now = self.clock.now().get();
        if late_ns >= duration_ns(LATE_WARNING)
            && now.saturating_sub(self.last_late_warning_ns) >= 10_000_000_000
        {
            self.last_late_warning_ns = now;
            tracing::warn!(
                late_ms = late_ns / 1_000_000,
                "decoding slower than the stream's frame rate"
            );
        }
    }
}
