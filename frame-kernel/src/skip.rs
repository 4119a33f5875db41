//! Decoding less when less is needed: which frames the decoder may skip.
//!
//! A camera decoded at 25 fps for consumers that ask 5 fps spends most of its decode CPU
//! on frames nobody reads. The decoder can leave out frames no other frame refers to
//! (libavcodec's `skip_frame`: `AVDISCARD_BIDIR` drops B-frames, `AVDISCARD_NONREF` every
//! non-reference frame); the frames that remain are decoded exactly as before, so the
//! pictures consumers see are unchanged, only fewer. Skipped frames are never published.
//!
//! [`decide`] is the pure decision (`--skip-frames auto` turns skipping on exactly when
//! the highest consumer rate is at most half the source rate). [`GapGuard`] checks it
//! while running: the FPS gate of `core-agent` serves one frame per `1 / fps` slot of
//! capture time, so skipping is only harmless while no two published frames are further
//! apart than the consumer interval. How far apart they are depends on the stream's GOP
//! (B-frame runs), which the kernel cannot know before decoding; the guard turns `auto`
//! skipping off for good (this process) the first time a gap is too wide.

use std::fmt;

/// `--skip-frames`: what the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SkipFrames {
    /// Never skip.
    None,
    /// Always skip B-frames (`AVDISCARD_BIDIR`).
    Bidir,
    /// Always skip non-reference frames (`AVDISCARD_NONREF`).
    NoRef,
    /// Skip non-reference frames when the consumers need at most half the source rate
    /// (see [`decide`]). The default.
    #[default]
    Auto,
}

impl SkipFrames {
    /// Parses `none|bidir|noref|auto` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "never" => Some(SkipFrames::None),
            "bidir" => Some(SkipFrames::Bidir),
            "noref" => Some(SkipFrames::NoRef),
            "auto" => Some(SkipFrames::Auto),
            _ => None,
        }
    }
}

/// What the decoder discards (libavcodec's `skip_frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipMode {
    /// Every frame is decoded.
    None,
    /// B-frames are not decoded (`AVDISCARD_BIDIR`).
    Bidir,
    /// Non-reference frames are not decoded (`AVDISCARD_NONREF`).
    NoRef,
}

impl SkipMode {
    /// Name in logs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipMode::None => "none",
            SkipMode::Bidir => "bidir",
            SkipMode::NoRef => "noref",
        }
    }

    /// libavcodec's discard level for this mode.
    pub fn discard(self) -> ffmpeg_next::Discard {
        match self {
            SkipMode::None => ffmpeg_next::Discard::Default,
            SkipMode::Bidir => ffmpeg_next::Discard::Bidirectional,
            SkipMode::NoRef => ffmpeg_next::Discard::NonReference,
        }
    }
}

impl fmt::Display for SkipMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--skip-loop-filter`: whether the in-loop deblocking filter is skipped. It lowers
/// image quality (blocking artefacts, drifting until the next keyframe when reference
/// frames are affected), so it is only ever on when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopFilter {
    /// The filter runs on every frame (the default).
    #[default]
    Keep,
    /// Skipped on non-reference frames only (no drift).
    SkipNoRef,
    /// Skipped on every frame.
    SkipAll,
}

impl LoopFilter {
    /// Parses `none|noref|all` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(LoopFilter::Keep),
            "noref" => Some(LoopFilter::SkipNoRef),
            "all" => Some(LoopFilter::SkipAll),
            _ => None,
        }
    }

    /// Name in logs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopFilter::Keep => "none",
            LoopFilter::SkipNoRef => "noref",
            LoopFilter::SkipAll => "all",
        }
    }

    /// libavcodec's discard level for `skip_loop_filter`.
    pub fn discard(self) -> ffmpeg_next::Discard {
        match self {
            LoopFilter::Keep => ffmpeg_next::Discard::Default,
            LoopFilter::SkipNoRef => ffmpeg_next::Discard::NonReference,
            LoopFilter::SkipAll => ffmpeg_next::Discard::All,
        }
    }
}

/// Why [`decide`] chose its mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SkipReason {
    /// `--skip-frames none|bidir|noref` was given.
    Configured,
    /// `--all-frames`: a consumer needs every frame (live view, recording).
    AllFrames,
    /// `auto` without `--consumer-fps`: nobody said how few frames suffice.
    ConsumerRateUnknown,
    /// `auto` on a stream that declares no frame rate.
    SourceRateUnknown,
    /// `auto`: the consumers need at most half the source rate.
    ConsumersNeedHalfOrLess {
        /// Highest consumer rate.
        consumer_fps: f64,
        /// Source rate.
        source_fps: f64,
    },
    /// `auto`: the consumers need more than half the source rate.
    ConsumersNeedMore {
        /// Highest consumer rate.
        consumer_fps: f64,
        /// Source rate.
        source_fps: f64,
    },
    /// `auto` was on, but two published frames came further apart than the consumer
    /// interval: skipping is off for the rest of this process (see [`GapGuard`]).
    GapTooWide {
        /// The gap, in stream time.
        gap_ms: f64,
        /// The consumer interval.
        interval_ms: f64,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Configured => f.write_str("set by --skip-frames"),
            SkipReason::AllFrames => f.write_str("a consumer needs every frame (--all-frames)"),
            SkipReason::ConsumerRateUnknown => f.write_str("auto: no --consumer-fps given"),
            SkipReason::SourceRateUnknown => f.write_str("auto: the stream declares no frame rate"),
            SkipReason::ConsumersNeedHalfOrLess {
                consumer_fps,
                source_fps,
            } => write!(
                f,
                "auto: consumers need {consumer_fps} fps <= half of the source's {source_fps} fps"
            ),
            SkipReason::ConsumersNeedMore {
                consumer_fps,
                source_fps,
            } => write!(
                f,
                "auto: consumers need {consumer_fps} fps > half of the source's {source_fps} fps"
            ),
            SkipReason::GapTooWide {
                gap_ms,
                interval_ms,
            } => write!(
                f,
                "auto: published frames {gap_ms:.1} ms apart, more than the consumer interval \
                 of {interval_ms:.1} ms (the stream's GOP leaves too few reference frames); \
                 skipping is off until the kernel restarts"
            ),
        }
    }
}

/// The skipping decision and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkipDecision {
    /// What the decoder discards.
    pub mode: SkipMode,
    /// Why.
    pub reason: SkipReason,
}

/// Decides what the decoder skips. `source_fps` is the stream's declared rate,
/// `consumer_fps` the highest rate any consumer asks of this camera, `all_frames` whether
/// a consumer needs every frame. `auto` skips non-reference frames exactly when
/// `consumer_fps <= source_fps / 2`; an unknown (or non-positive, non-finite) rate never
/// skips. `all_frames` wins over everything.
pub fn decide(
    setting: SkipFrames,
    source_fps: Option<f64>,
    consumer_fps: Option<f64>,
    all_frames: bool,
) -> SkipDecision {
    let known = |r: Option<f64>| r.filter(|r| r.is_finite() && *r > 0.0);
    let (mode, reason) = match setting {
        _ if all_frames => (SkipMode::None, SkipReason::AllFrames),
        SkipFrames::None => (SkipMode::None, SkipReason::Configured),
        SkipFrames::Bidir => (SkipMode::Bidir, SkipReason::Configured),
        SkipFrames::NoRef => (SkipMode::NoRef, SkipReason::Configured),
        SkipFrames::Auto => match (known(source_fps), known(consumer_fps)) {
            (_, None) => (SkipMode::None, SkipReason::ConsumerRateUnknown),
            (None, Some(_)) => (SkipMode::None, SkipReason::SourceRateUnknown),
            (Some(source_fps), Some(consumer_fps)) if consumer_fps <= source_fps / 2.0 => (
                SkipMode::NoRef,
                SkipReason::ConsumersNeedHalfOrLess {
                    consumer_fps,
                    source_fps,
                },
            ),
            (Some(source_fps), Some(consumer_fps)) => (
                SkipMode::None,
                SkipReason::ConsumersNeedMore {
                    consumer_fps,
                    source_fps,
                },
            ),
        },
    };
    SkipDecision { mode, reason }
}

/// Slack on the gap check for timestamp rounding (a 1/90000 time base rounds a 40 ms
/// frame to 39.99 or 40.01 ms).
pub const GAP_SLACK_NS: i64 = 1_000_000;

/// Watches the stream-time gaps between published frames while `auto` skipping is on
/// and says when one is wider than the consumer interval (then a consumer slot could
/// go without a frame). Reset at every session (connection or file loop): the gap across
/// a reconnect is the camera's, not the skipping's.
#[derive(Debug, Clone)]
pub struct GapGuard {
    interval_ns: i64,
    last_ns: Option<i64>,
    widest_ns: i64,
}

impl GapGuard {
    /// A guard for consumers at `consumer_fps` (> 0).
    pub fn new(consumer_fps: f64) -> Self {
        GapGuard {
            interval_ns: (1e9 / consumer_fps.max(1e-3)).round() as i64,
            last_ns: None,
            widest_ns: 0,
        }
    }

    /// A new session starts: the next frame has no predecessor.
    pub fn reset(&mut self) {
        self.last_ns = None;
    }

    /// A frame at stream time `pts_ns` was published. Returns the
    /// [`SkipReason::GapTooWide`] when the gap since the previous one exceeds the
    /// consumer interval. Frames without a timestamp are not judged.
    pub fn observe(&mut self, pts_ns: Option<i64>) -> Option<SkipReason> {
        let pts = pts_ns?;
        let gap = self.last_ns.map(|last| pts.saturating_sub(last));
        self.last_ns = Some(pts);
        let gap = gap?;
        self.widest_ns = self.widest_ns.max(gap);
        (gap > self.interval_ns.saturating_add(GAP_SLACK_NS)).then(|| SkipReason::GapTooWide {
            gap_ms: gap as f64 / 1e6,
            interval_ms: self.interval_ns as f64 / 1e6,
        })
    }

    /// The widest gap seen so far (ns).
    pub fn widest_ns(&self) -> i64 {
        self.widest_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_skips_exactly_at_half_the_source_rate_or_less() {
        let d = |c: f64| decide(SkipFrames::Auto, Some(25.0), Some(c), false).mode;
        assert_eq!(d(5.0), SkipMode::NoRef);
        assert_eq!(d(12.5), SkipMode::NoRef, "exactly half skips");
        assert_eq!(d(12.6), SkipMode::None);
        assert_eq!(d(25.0), SkipMode::None);
        assert_eq!(
            decide(SkipFrames::Auto, Some(25.0), Some(5.0), false).reason,
            SkipReason::ConsumersNeedHalfOrLess {
                consumer_fps: 5.0,
                source_fps: 25.0
            }
        );
    }

    #[test]
    fn unknown_rates_never_skip() {
        for (src, cons, why) in [
            (None, Some(5.0), SkipReason::SourceRateUnknown),
            (Some(0.0), Some(5.0), SkipReason::SourceRateUnknown),
            (Some(f64::NAN), Some(5.0), SkipReason::SourceRateUnknown),
            (Some(25.0), None, SkipReason::ConsumerRateUnknown),
            (Some(25.0), Some(-1.0), SkipReason::ConsumerRateUnknown),
            (None, None, SkipReason::ConsumerRateUnknown),
        ] {
            let d = decide(SkipFrames::Auto, src, cons, false);
            assert_eq!(d.mode, SkipMode::None, "{src:?} {cons:?}");
            assert_eq!(d.reason, why, "{src:?} {cons:?}");
        }
    }

    #[test]
    fn all_frames_wins_and_explicit_settings_are_kept() {
        for s in [
            SkipFrames::Auto,
            SkipFrames::Bidir,
            SkipFrames::NoRef,
            SkipFrames::None,
        ] {
            let d = decide(s, Some(25.0), Some(1.0), true);
            assert_eq!((d.mode, d.reason), (SkipMode::None, SkipReason::AllFrames));
        }
        let explicit = |s| decide(s, Some(25.0), Some(25.0), false);
        assert_eq!(explicit(SkipFrames::Bidir).mode, SkipMode::Bidir);
        assert_eq!(explicit(SkipFrames::NoRef).mode, SkipMode::NoRef);
        assert_eq!(explicit(SkipFrames::None).mode, SkipMode::None);
        assert_eq!(explicit(SkipFrames::Bidir).reason, SkipReason::Configured);
        assert_eq!(
            decide(SkipFrames::Bidir, None, None, false).mode,
            SkipMode::Bidir
        );
    }

    #[test]
    fn settings_parse() {
        assert_eq!(SkipFrames::parse("AUTO"), Some(SkipFrames::Auto));
        assert_eq!(SkipFrames::parse("never"), Some(SkipFrames::None));
        assert_eq!(SkipFrames::parse("nonkey"), None);
        assert_eq!(LoopFilter::parse("all"), Some(LoopFilter::SkipAll));
        assert_eq!(LoopFilter::parse("noref"), Some(LoopFilter::SkipNoRef));
        assert_eq!(LoopFilter::parse("some"), None);
    }

    #[test]
    fn the_guard_trips_on_the_first_gap_wider_than_the_interval() {
        const MS: i64 = 1_000_000;
        // 5 fps consumer: 200 ms interval. I/P frames of a 25 fps IBBP stream are
        // 120 ms apart: fine.
        let mut g = GapGuard::new(5.0);
        for i in 0..10 {
            assert_eq!(g.observe(Some(i * 120 * MS)), None);
        }
        assert_eq!(g.widest_ns(), 120 * MS);
        assert_eq!(g.observe(None), None, "no timestamp, no verdict");
        // Exactly the interval (plus rounding) is fine, wider is not.
        assert_eq!(g.observe(Some(1080 * MS + 200 * MS)), None);
        assert_eq!(
            g.observe(Some(1280 * MS + 240 * MS)),
            Some(SkipReason::GapTooWide {
                gap_ms: 240.0,
                interval_ms: 200.0
            })
        );
        // A new session has no predecessor: a reconnect's gap is not judged.
        g.reset();
        assert_eq!(g.observe(Some(99_000 * MS)), None);
    }
}
