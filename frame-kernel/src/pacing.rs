//! Timestamps and pacing: a file played as a live camera.
//!
//! [`Timeline`] turns each connection's (or each file loop's) stream timestamps into one
//! strictly increasing nanosecond timeline, so readers never see time jump back when a
//! file loops or a camera reconnects. [`Pacer`] releases frames at the stream's rate
//! (realtime) or as fast as they decode (fast, for benchmarks).

use proto_schema::time::{Clock, MonoNanos};

/// Frame duration assumed when the stream declares no rate and gives no timestamps.
pub const DEFAULT_FRAME_NS: i64 = 40_000_000;

/// Maps per-session stream timestamps onto one increasing timeline.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Nominal frame duration of the current session.
    frame_ns: i64,
    /// First stream timestamp of the current session (ns), once seen.
    session_base: Option<i64>,
    /// Output time of the first frame of the current session.
    session_offset: i64,
    /// Last output time handed out.
    last_out: Option<i64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    /// An empty timeline; the first frame maps to 0.
    pub fn new() -> Self {
        Timeline {
            frame_ns: DEFAULT_FRAME_NS,
            session_base: None,
            session_offset: 0,
            last_out: None,
        }
    }

    /// A new session (connection or file loop) starts. Its first frame is placed one
    /// frame after the last frame of the previous session. `frame_ns` is the stream's
    /// nominal frame duration, if it declares one.
    pub fn start_session(&mut self, frame_ns: Option<i64>) {
        if let Some(d) = frame_ns.filter(|d| *d > 0) {
            self.frame_ns = d;
        }
        self.session_base = None;
        self.session_offset = self.last_out.map_or(0, |l| l + self.frame_ns);
    }

    /// Output time of a frame whose stream timestamp is `pts_ns` (`None` when the
    /// stream has none). Strictly greater than every earlier output.
    pub fn map(&mut self, pts_ns: Option<i64>) -> i64 {
        let out = match (pts_ns, self.session_base) {
            (Some(p), Some(base)) => self.session_offset.saturating_add(p.saturating_sub(base)),
            (Some(p), None) => {
                self.session_base = Some(p);
                self.session_offset
            }
            (None, _) => self
                .last_out
                .map_or(self.session_offset, |l| l + self.frame_ns),
        };
        let out = match self.last_out {
            Some(last) if out <= last => last + 1,
            _ => out,
        };
        self.last_out = Some(out);
        out
    }

    /// Nominal frame duration in use.
    pub fn frame_ns(&self) -> i64 {
        self.frame_ns
    }
}

/// How frames are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceMode {
    /// At the stream's frame rate, like a live camera.
    Realtime,
    /// As fast as they decode.
    Fast,
}

/// What [`Pacer::wait`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paced {
    /// The frame is due now. `late_ns` is how far behind schedule it is (0 if on time).
    Due {
        /// Nanoseconds behind schedule.
        late_ns: u64,
    },
    /// The stop flag was raised while waiting.
    Stopped,
}

/// Releases frames on schedule.
#[derive(Debug, Clone)]
pub struct Pacer {
    mode: PaceMode,
    /// Playback speed of realtime pacing: 2.0 releases frames twice as fast.
    speed: f64,
    /// (clock ns, timeline ns) of the frame the schedule is anchored on.
    anchor: Option<(u64, i64)>,
}

impl Pacer {
    /// A pacer with no schedule yet: the first frame is due at once.
    pub fn new(mode: PaceMode) -> Self {
        Pacer::with_speed(mode, 1.0)
    }

    /// A pacer that plays `speed` times the stream's rate (a file replayed slower for
    /// frame-exact analytics, or faster to try rules on a recording). A speed that is
    /// not finite and positive counts as 1.
    pub fn with_speed(mode: PaceMode, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Pacer {
            mode,
            speed,
            anchor: None,
        }
    }

    /// Mode in use.
    pub fn mode(&self) -> PaceMode {
        self.mode
    }

    /// Drops the schedule: the next frame is due at once and anchors a new one (after
    /// the source was lost, so an outage is not "caught up" in a burst).
    pub fn reanchor(&mut self) {
        self.anchor = None;
    }

    /// Waits until the frame with timeline time `out_ns` is due. A frame that is late is
    /// released at once and the schedule kept, so a source that cannot keep up shows
    /// growing lateness instead of silently slowing down.
    pub fn wait(&mut self, out_ns: i64, clock: &dyn Clock, stop: &dyn Fn() -> bool) -> Paced {
        if self.mode == PaceMode::Fast {
            return Paced::Due { late_ns: 0 };
        }
        let now = clock.now().get();
        let (anchor_clock, anchor_out) = *self.anchor.get_or_insert((now, out_ns));
        let ahead = out_ns.saturating_sub(anchor_out).max(0) as u64;
        let ahead = if self.speed == 1.0 {
            ahead
        } else {
            (ahead as f64 / self.speed) as u64
        };
        let due = anchor_clock.saturating_add(ahead);
        if due > now {
            if !clock.sleep_until(MonoNanos(due), stop) {
                return Paced::Stopped;
            }
            return Paced::Due { late_ns: 0 };
        }
        Paced::Due { late_ns: now - due }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::time::{ManualClock, MonoNanos, UnixNanos};

    const MS: i64 = 1_000_000;

    #[test]
    fn file_loops_keep_time_increasing() {
        let mut t = Timeline::new();
        t.start_session(Some(40 * MS));
        // A file whose first pts is 80 ms (edit list), three frames.
        let first: Vec<i64> = [80, 120, 160].iter().map(|p| t.map(Some(p * MS))).collect();
        assert_eq!(first, [0, 40 * MS, 80 * MS]);
        t.start_session(Some(40 * MS));
        let second: Vec<i64> = [80, 120].iter().map(|p| t.map(Some(p * MS))).collect();
        assert_eq!(second, [120 * MS, 160 * MS]);
    }

    #[test]
    fn reconnect_with_restarted_camera_clock_keeps_increasing() {
        let mut t = Timeline::new();
        t.start_session(None);
        assert_eq!(t.map(Some(9_000 * MS)), 0);
        assert_eq!(t.map(Some(9_040 * MS)), 40 * MS);
        // The camera restarted: its timestamps start near zero again.
        t.start_session(None);
        assert_eq!(t.map(Some(5 * MS)), 80 * MS);
        assert_eq!(t.map(Some(45 * MS)), 120 * MS);
    }

    #[test]
    fn missing_or_repeated_timestamps_still_increase() {
        let mut t = Timeline::new();
        t.start_session(Some(33 * MS));
        assert_eq!(t.map(None), 0);
        assert_eq!(t.map(None), 33 * MS);
        let a = t.map(Some(7 * MS)); // base for the session
        let b = t.map(Some(7 * MS)); // repeated pts
        let c = t.map(Some(2 * MS)); // backwards pts
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn speed_scales_the_schedule() {
        let stop = || false;
        for (speed, expect) in [(0.5, 80 * MS), (2.0, 20 * MS), (f64::NAN, 40 * MS)] {
            let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
            let mut p = Pacer::with_speed(PaceMode::Realtime, speed);
            p.wait(0, &clock, &stop);
            assert_eq!(p.wait(40 * MS, &clock, &stop), Paced::Due { late_ns: 0 });
            assert_eq!(clock.now().get(), expect as u64, "speed {speed}");
        }
    }

    #[test]
    fn realtime_pacing_follows_the_stream_clock() {
        let clock = ManualClock::starting_at(MonoNanos(1_000_000), UnixNanos(0));
        let mut p = Pacer::new(PaceMode::Realtime);
        let stop = || false;
        assert_eq!(p.wait(0, &clock, &stop), Paced::Due { late_ns: 0 });
        assert_eq!(clock.now().get(), 1_000_000, "first frame is due at once");
        assert_eq!(p.wait(40 * MS, &clock, &stop), Paced::Due { late_ns: 0 });
        assert_eq!(clock.now().get(), 1_000_000 + 40 * MS as u64);
        // Decoding took 100 ms: the next frame (due at +80 ms) is 60 ms late and not held.
        clock.advance(std::time::Duration::from_millis(100));
        assert_eq!(
            p.wait(80 * MS, &clock, &stop),
            Paced::Due {
                late_ns: 60 * MS as u64
            }
        );
        // The schedule is kept: frame at +200 ms waits until anchor + 200 ms.
        assert_eq!(p.wait(200 * MS, &clock, &stop), Paced::Due { late_ns: 0 });
        assert_eq!(clock.now().get(), 1_000_000 + 200 * MS as u64);
    }

    #[test]
    fn reanchor_forgets_the_schedule() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut p = Pacer::new(PaceMode::Realtime);
        p.wait(0, &clock, &|| false);
        clock.advance(std::time::Duration::from_secs(10));
        p.reanchor();
        assert_eq!(
            p.wait(40 * MS, &clock, &|| false),
            Paced::Due { late_ns: 0 }
        );
        assert_eq!(clock.now().get(), 10_000_000_000);
    }

    #[test]
    fn fast_mode_never_waits_and_stop_interrupts() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut fast = Pacer::new(PaceMode::Fast);
        fast.wait(0, &clock, &|| false);
        fast.wait(1_000 * MS, &clock, &|| false);
        assert_eq!(clock.now().get(), 0);
        let mut rt = Pacer::new(PaceMode::Realtime);
        rt.wait(0, &clock, &|| false);
        assert_eq!(rt.wait(40 * MS, &clock, &|| true), Paced::Stopped);
    }
}
