//! When to give up on a camera connection and when to try again.
//!
//! [`Link`] is the connection's state machine, driven by the kernel's main loop and read
//! by the ring glue: `Starting` → `Live` on the first frame; any loss (end of stream,
//! refused connection, read error, stall) → `Reconnecting` with an exponentially growing,
//! jittered delay before the next attempt, forever. The delay only resets once a new
//! connection has produced a frame, so a camera that accepts connections and then drops
//! them keeps backing off. All timing comes from an injected [`Clock`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shm_ring::RingState;

use proto_schema::backoff::{Backoff, BackoffPolicy, SplitMix64, Spread};
use proto_schema::time::{duration_ns, Clock};

/// The camera reconnect schedule (see [`proto_schema::backoff`]): nominal delays from
/// 100 ms doubling to 500 ms, so a camera that comes back is picked up within about
/// 0.6 s and a refused loopback/LAN connection costs microseconds; spread by ±20 % so
/// cameras that failed together (a switch reboot) do not reconnect in lock step.
/// `--backoff-initial-ms` and `--backoff-max-ms` set the first two.
pub const CAMERA_BACKOFF: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(100),
    max: Duration::from_millis(500),
    spread: Spread::Relative(0.2),
};

/// Why a connection ended (or never started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// Opening the source failed (refused, timed out, bad stream).
    ConnectFailed(String),
    /// The live source ended its stream.
    EndOfStream,
    /// No frame for longer than the stall timeout.
    Stalled(Duration),
    /// Reading packets failed.
    ReadError(String),
    /// Too many consecutive packets failed to decode.
    DecodeErrors(u32),
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            LossReason::EndOfStream => f.write_str("end of stream"),
            LossReason::Stalled(d) => write!(f, "no frame for {} ms", d.as_millis()),
            LossReason::ReadError(e) => write!(f, "read error: {e}"),
            LossReason::DecodeErrors(n) => write!(f, "{n} consecutive decode errors"),
        }
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No frame yet since the kernel started.
    Starting,
    /// A connection is open and has produced a frame.
    Live,
    /// The last connection was lost or an attempt failed; waiting or retrying.
    Reconnecting,
}

impl Phase {
    /// The matching ring header state.
    pub fn ring_state(self) -> RingState {
        match self {
            Phase::Starting => RingState::Starting,
            Phase::Live => RingState::Live,
            Phase::Reconnecting => RingState::Reconnecting,
        }
    }
}

/// When a connection counts as stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPolicy {
    /// Longest gap between decoded frames. Default 3 s.
    pub stall_timeout: Duration,
    /// Longest wait for the first frame of a connection while packets do arrive: a
    /// camera joined mid-GOP sends undecodable frames until its next keyframe, and some
    /// cameras have GOPs of several seconds. Default 10 s.
    pub first_frame_timeout: Duration,
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy {
            stall_timeout: Duration::from_secs(3),
            first_frame_timeout: Duration::from_secs(10),
        }
    }
}

/// The connection state machine: phase, stall timer, backoff and reconnect count.
pub struct Link {
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    stall: StallPolicy,
    phase: Phase,
    /// Last sign of life of the current connection: connected, a frame decoded, or
    /// (before the first frame) a packet received.
    progress_ns: u64,
    /// When the current connection opened.
    connected_ns: u64,
    /// Whether the current connection has produced a frame yet.
    session_has_frame: bool,
    /// Whether the next attempt is a reconnect (counted) rather than the first open
    /// or a file loop.
    lost: bool,
    reconnects: u64,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("phase", &self.phase)
            .field("stall", &self.stall)
            .field("reconnects", &self.reconnects)
            .field("failures", &self.backoff.failures())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link that has not connected yet.
    pub fn new(
        clock: Arc<dyn Clock>,
        policy: BackoffPolicy,
        stall: StallPolicy,
        jitter: SplitMix64,
    ) -> Self {
        let now = clock.now().get();
        Link {
            clock,
            backoff: Backoff::new(policy, jitter),
            stall,
            phase: Phase::Starting,
            progress_ns: now,
            connected_ns: now,
            session_has_frame: false,
            lost: false,
            reconnects: 0,
        }
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Reconnect attempts so far (attempts after a loss or a failed attempt).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Called before every open. Returns `true` if this attempt is a reconnect (and
    /// counts it); the first open and the re-open of a looping file are not.
    pub fn on_attempt(&mut self) -> bool {
        if self.lost {
            self.reconnects += 1;
            true
        } else {
            false
        }
    }

    /// The source opened: the stall timer starts now.
    pub fn on_connected(&mut self) {
        let now = self.clock.now().get();
        self.progress_ns = now;
        self.connected_ns = now;
        self.session_has_frame = false;
    }

    /// A packet of the video stream arrived. Before the first frame of a connection this
    /// counts as progress (the camera is sending, the decoder waits for a keyframe), up
    /// to the first-frame timeout; afterwards only decoded frames do.
    pub fn on_packet(&mut self) {
        if !self.session_has_frame {
            self.progress_ns = self.clock.now().get();
        }
    }

    /// A frame was decoded. The first one of a connection ends the backoff and makes
    /// the link `Live`; returns `true` when the phase changed.
    pub fn on_frame(&mut self) -> bool {
        self.progress_ns = self.clock.now().get();
        if !self.session_has_frame {
            self.session_has_frame = true;
            self.backoff.reset();
            self.lost = false;
        }
        let changed = self.phase != Phase::Live;
        self.phase = Phase::Live;
        changed
    }

    /// When the current connection counts as stalled if nothing else arrives (CLOCK
    /// domain of the injected clock). Used as the hard deadline of blocking reads.
    pub fn stall_deadline_ns(&self) -> u64 {
        let gap = self
            .progress_ns
            .saturating_add(duration_ns(self.stall.stall_timeout));
        if self.session_has_frame {
            gap
        } else {
            let first = self.connected_ns.saturating_add(duration_ns(
                self.stall.first_frame_timeout.max(self.stall.stall_timeout),
            ));
            gap.min(first)
        }
    }

    /// Whether the connection has gone without a frame for longer than the stall
    /// timeout (or without a first frame for longer than the first-frame timeout).
    pub fn is_stalled(&self) -> bool {
        self.clock.now().get() >= self.stall_deadline_ns()
    }

    /// How long since the last sign of life.
    pub fn since_progress(&self) -> Duration {
        Duration::from_nanos(self.clock.now().get().saturating_sub(self.progress_ns))
    }

    /// The connection was lost or an attempt failed: the link is `Reconnecting` and the
    /// returned delay is how long to wait before the next attempt.
    pub fn on_lost(&mut self) -> Duration {
        self.phase = Phase::Reconnecting;
        self.lost = true;
        self.session_has_frame = false;
        self.backoff.next_delay()
    }

    /// A looping file reached its end: re-open at once, without a reconnect.
    pub fn on_file_loop(&mut self) {
        self.session_has_frame = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::time::{ManualClock, MonoNanos, UnixNanos};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(clock: &ManualClock) -> Link {
        let policy = BackoffPolicy {
            initial: ms(100),
            max: ms(800),
            spread: Spread::Relative(0.0),
        };
        let stall = StallPolicy {
            stall_timeout: ms(3000),
            first_frame_timeout: ms(10_000),
        };
        Link::new(Arc::new(clock.clone()), policy, stall, SplitMix64::new(3))
    }

    #[test]
    fn first_open_is_not_a_reconnect_and_first_frame_goes_live() {
        let clock = ManualClock::starting_at(MonoNanos(1_000), UnixNanos(0));
        let mut l = link(&clock);
        assert_eq!(l.phase(), Phase::Starting);
        assert!(!l.on_attempt());
        l.on_connected();
        assert!(l.on_frame());
        assert!(!l.on_frame());
        assert_eq!(l.phase(), Phase::Live);
        assert_eq!(l.phase().ring_state(), RingState::Live);
        assert_eq!(l.reconnects(), 0);
    }

    #[test]
    fn refused_connections_back_off_forever_and_count() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        let mut delays = Vec::new();
        for _ in 0..8 {
            l.on_attempt();
            let d = l.on_lost();
            assert_eq!(l.phase(), Phase::Reconnecting);
            clock.advance(d);
            delays.push(d.as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800, 800, 800, 800, 800]);
        // Seven of the eight attempts followed a failure.
        assert_eq!(l.reconnects(), 7);
    }

    #[test]
    fn stall_is_noticed_exactly_at_the_timeout() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        l.on_frame();
        clock.advance(ms(2999));
        assert!(!l.is_stalled());
        clock.advance(ms(1));
        assert!(l.is_stalled());
        assert_eq!(l.since_progress(), ms(3000));
        // A frame pushes the deadline out again.
        l.on_frame();
        assert_eq!(l.stall_deadline_ns(), clock.now().get() + 3_000_000_000);
    }

    #[test]
    fn connected_without_frames_or_packets_stalls() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        clock.advance(ms(3000));
        assert!(l.is_stalled());
        assert_eq!(l.phase(), Phase::Starting);
    }

    #[test]
    fn waiting_for_a_keyframe_is_bounded_by_the_first_frame_timeout() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        // Packets keep coming (a 6 s GOP joined mid-way): not a stall...
        for _ in 0..99 {
            clock.advance(ms(100));
            l.on_packet();
            assert!(!l.is_stalled());
        }
        // ...until the first-frame timeout.
        clock.advance(ms(100));
        l.on_packet();
        assert!(l.is_stalled());
        assert_eq!(l.stall_deadline_ns(), 10_000_000_000);
    }

    #[test]
    fn packets_do_not_hide_a_stall_once_frames_flowed() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        l.on_frame();
        for _ in 0..30 {
            clock.advance(ms(100));
            l.on_packet(); // undecodable packets only
        }
        assert!(l.is_stalled());
    }

    #[test]
    fn backoff_resets_only_after_a_frame() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        l.on_frame();
        // Camera dies; then it accepts connections but drops them before any frame.
        assert_eq!(l.on_lost(), ms(100));
        for want in [200, 400] {
            assert!(l.on_attempt());
            l.on_connected();
            assert_eq!(l.on_lost(), ms(want));
        }
        // This time frames flow: back to Live, next loss starts over at 100 ms.
        assert!(l.on_attempt());
        l.on_connected();
        assert!(l.on_frame());
        assert_eq!(l.phase(), Phase::Live);
        assert_eq!(l.on_lost(), ms(100));
        assert_eq!(l.reconnects(), 3);
    }

    #[test]
    fn file_loop_is_not_a_reconnect() {
        let clock = ManualClock::starting_at(MonoNanos(0), UnixNanos(0));
        let mut l = link(&clock);
        l.on_attempt();
        l.on_connected();
        l.on_frame();
        l.on_file_loop();
        assert!(!l.on_attempt());
        l.on_connected();
        assert!(!l.on_frame(), "still live across a loop");
        assert_eq!(l.reconnects(), 0);
    }

    #[test]
    fn loss_reasons_read_well() {
        assert_eq!(
            LossReason::Stalled(ms(3000)).to_string(),
            "no frame for 3000 ms"
        );
        assert_eq!(
            LossReason::ConnectFailed("Connection refused".into()).to_string(),
            "connect failed: Connection refused"
        );
    }
}
