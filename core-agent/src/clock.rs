//! Injected clocks: timing logic (restart backoff, restart windows) takes a [`Clock`] so
//! tests move time by hand instead of sleeping.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; cloned handles share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock starting at the real current instant.
    pub fn new() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch: the clock of `capture_ts_ns`.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the ring heartbeat and of the
/// requests' `sent_ts_ns` / `deadline_ts_ns`.
pub fn monotonic_now_ns() -> u64 {
    shm_ring::monotonic_ns()
}

/// Capture stamps above this are wall-clock (Unix) nanoseconds; below, monotonic ones
/// (a monotonic clock would need 31 years of uptime to get here).
const UNIX_NS_FLOOR: u64 = 1_000_000_000_000_000_000;

/// Age of a frame captured at `capture_ts_ns`. The ring and message specs say
/// CLOCK_REALTIME (Unix) ns, which every frame-kernel writes; a small stamp (a foreign
/// writer that stamps CLOCK_MONOTONIC) is aged against the monotonic clock instead of
/// reading as decades old.
pub fn capture_age_ns(capture_ts_ns: u64) -> u64 {
    if capture_ts_ns >= UNIX_NS_FLOOR {
        unix_now_ns().saturating_sub(capture_ts_ns)
    } else {
        monotonic_now_ns().saturating_sub(capture_ts_ns)
    }
}

/// The current time on the clock `capture_ts_ns` was stamped with (see
/// [`capture_age_ns`]).
pub fn capture_clock_now_ns(capture_ts_ns: u64) -> u64 {
    if capture_ts_ns >= UNIX_NS_FLOOR {
        unix_now_ns()
    } else {
        monotonic_now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        let shared = clock.clone();
        shared.advance(Duration::from_millis(250));
        assert_eq!(clock.now() - start, Duration::from_millis(250));
    }

    #[test]
    fn capture_age_understands_both_clocks() {
        let mono = monotonic_now_ns() - 5_000_000;
        let unix = unix_now_ns() - 7_000_000;
        let a = capture_age_ns(mono);
        let b = capture_age_ns(unix);
        assert!((5_000_000..1_000_000_000).contains(&a), "{a}");
        assert!((7_000_000..1_000_000_000).contains(&b), "{b}");
    }
}
