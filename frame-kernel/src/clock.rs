//! Monotonic time as an injectable dependency, so reconnect, stall and pacing logic is
//! tested by moving a manual clock instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of monotonic time, in nanoseconds since an arbitrary origin.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the clock's origin; never goes backwards.
    fn now_ns(&self) -> u64;

    /// Waits until `now_ns() >= until_ns` or `stop()` says to give up, whichever is
    /// first. Returns `false` if it stopped early. The real clock sleeps in short steps so
    /// a signal is noticed quickly; a manual clock jumps forward.
    fn sleep_until(&self, until_ns: u64, stop: &dyn Fn() -> bool) -> bool;
}

/// CLOCK_MONOTONIC, the clock of the ring header's `heartbeat_ns` and `last_frame_ns`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

/// Longest single sleep of [`MonotonicClock::sleep_until`]: bounds how late a shutdown
/// request is noticed while pacing or backing off.
const SLEEP_STEP: Duration = Duration::from_millis(20);

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        shm_ring::monotonic_ns()
    }

    fn sleep_until(&self, until_ns: u64, stop: &dyn Fn() -> bool) -> bool {
        loop {
            if stop() {
                return false;
            }
            let now = self.now_ns();
            if now >= until_ns {
                return true;
            }
            let left = Duration::from_nanos(until_ns - now);
            std::thread::sleep(left.min(SLEEP_STEP));
        }
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now
            .fetch_add(duration_ns(by), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, until_ns: u64, stop: &dyn Fn() -> bool) -> bool {
        if stop() {
            return false;
        }
        self.now.fetch_max(until_ns, Ordering::SeqCst);
        true
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_jumps_on_sleep() {
        let c = ManualClock::new(100);
        assert!(c.sleep_until(500, &|| false));
        assert_eq!(c.now_ns(), 500);
        // Sleeping into the past does not move it back.
        assert!(c.sleep_until(200, &|| false));
        assert_eq!(c.now_ns(), 500);
        assert!(!c.sleep_until(900, &|| true));
        assert_eq!(c.now_ns(), 500);
        c.advance(Duration::from_nanos(5));
        assert_eq!(c.now_ns(), 505);
    }

    #[test]
    fn monotonic_clock_stops_early() {
        let c = MonotonicClock;
        let far = c.now_ns() + duration_ns(Duration::from_secs(60));
        assert!(!c.sleep_until(far, &|| true));
        let near = c.now_ns() + 1_000_000;
        assert!(c.sleep_until(near, &|| false));
        assert!(c.now_ns() >= near);
    }
}
