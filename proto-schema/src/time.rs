//! The two clocks of the contract, as types, and the one injectable [`Clock`].
//!
//! - [`UnixNanos`]: `CLOCK_REALTIME`, ns since the Unix epoch. The clock of a frame's
//!   `capture_ts_ns` (ring slot header, `FrameRef`, results): comparable across hosts,
//!   but it can jump.
//! - [`MonoNanos`]: `CLOCK_MONOTONIC`, ns since boot. The clock of the ring header's
//!   `heartbeat_ns` / `last_frame_ns` and of a request's `sent_ts_ns` / `deadline_ts_ns`.
//!   It is system-wide, so a value read in one process is meaningful in another on the
//!   same host, and it never goes backwards.
//!
//! Timing logic (backoff, restart windows, pacing, session expiry) takes an
//! `Arc<dyn Clock>`, so tests move a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn clock_ns(id: rustix::time::ClockId) -> u64 {
    let ts = rustix::time::clock_gettime(id);
    let sec = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

macro_rules! nanos_type {
    ($name:ident, $clock:expr, $what:literal) => {
        #[doc = $what]
        #[derive(
            Debug,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Reads the real clock now.
            pub fn now() -> Self {
                $name(clock_ns($clock))
            }

            /// The raw nanosecond count, as it travels on the wire and in the ring.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// Time from `earlier` to `self`; zero if `earlier` is later.
            pub fn saturating_duration_since(self, earlier: $name) -> Duration {
                Duration::from_nanos(self.0.saturating_sub(earlier.0))
            }

            /// Time from `earlier` to `self`, or `None` if `earlier` is later.
            pub fn checked_duration_since(self, earlier: $name) -> Option<Duration> {
                self.0.checked_sub(earlier.0).map(Duration::from_nanos)
            }

            /// `self` moved back by `d`, stopping at zero.
            pub fn saturating_sub(self, d: Duration) -> $name {
                $name(self.0.saturating_sub(duration_ns(d)))
            }
        }

        impl Add<Duration> for $name {
            type Output = $name;
            /// Saturates at `u64::MAX` ns (year 2554) instead of wrapping.
            fn add(self, d: Duration) -> $name {
                $name(self.0.saturating_add(duration_ns(d)))
            }
        }

        impl Sub for $name {
            type Output = Duration;
            /// Saturating, like [`Self::saturating_duration_since`].
            fn sub(self, earlier: $name) -> Duration {
                self.saturating_duration_since(earlier)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}ns", self.0)
            }
        }
    };
}

nanos_type!(
    UnixNanos,
    rustix::time::ClockId::Realtime,
    "`CLOCK_REALTIME` in ns since the Unix epoch: a frame's capture time."
);
nanos_type!(
    MonoNanos,
    rustix::time::ClockId::Monotonic,
    "`CLOCK_MONOTONIC` in ns (system-wide): heartbeats, request send times and deadlines."
);

impl UnixNanos {
    /// How old a frame captured at `self` is on the real wall clock; zero for a stamp in
    /// the future (a writer whose clock runs ahead).
    pub fn age(self) -> Duration {
        UnixNanos::now().saturating_duration_since(self)
    }
}

/// A source of both clocks; the one injection point for timing logic.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic now.
    fn now(&self) -> MonoNanos;

    /// Wall-clock now.
    fn unix_now(&self) -> UnixNanos;

    /// Waits until `now() >= until` or `stop()` says to give up, whichever is first.
    /// Returns `false` if it stopped early. The real clock sleeps in short steps so a
    /// shutdown is noticed quickly; a manual clock jumps forward.
    fn sleep_until(&self, until: MonoNanos, stop: &dyn Fn() -> bool) -> bool;
}

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Longest single sleep of [`SystemClock::sleep_until`]: bounds how late a stop request
/// is noticed while pacing or backing off.
const SLEEP_STEP: Duration = Duration::from_millis(20);

impl Clock for SystemClock {
    fn now(&self) -> MonoNanos {
        MonoNanos::now()
    }

    fn unix_now(&self) -> UnixNanos {
        UnixNanos::now()
    }

    fn sleep_until(&self, until: MonoNanos, stop: &dyn Fn() -> bool) -> bool {
        loop {
            if stop() {
                return false;
            }
            let now = MonoNanos::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(SLEEP_STEP));
        }
    }
}

/// A clock that only moves when told to; clones share the same time. The wall clock
/// moves with the monotonic one from a fixed offset.
#[derive(Debug, Clone)]
pub struct ManualClock {
    mono: Arc<AtomicU64>,
    unix_minus_mono: u64,
}

impl ManualClock {
    /// A clock starting at the real clocks' current readings.
    pub fn new() -> Self {
        let mono = MonoNanos::now().get();
        Self::starting_at(MonoNanos(mono), UnixNanos::now())
    }

    /// A clock reading `mono` and `unix` now.
    pub fn starting_at(mono: MonoNanos, unix: UnixNanos) -> Self {
        ManualClock {
            mono: Arc::new(AtomicU64::new(mono.get())),
            unix_minus_mono: unix.get().wrapping_sub(mono.get()),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.mono.fetch_add(duration_ns(by), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonoNanos {
        MonoNanos(self.mono.load(Ordering::SeqCst))
    }

    fn unix_now(&self) -> UnixNanos {
        UnixNanos(self.now().get().wrapping_add(self.unix_minus_mono))
    }

    fn sleep_until(&self, until: MonoNanos, stop: &dyn Fn() -> bool) -> bool {
        if stop() {
            return false;
        }
        self.mono.fetch_max(until.get(), Ordering::SeqCst);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::starting_at(MonoNanos(1_000), UnixNanos(1_700_000_000_000));
        let shared = clock.clone();
        assert_eq!(clock.now(), MonoNanos(1_000));
        shared.advance(Duration::from_nanos(250));
        assert_eq!(clock.now(), MonoNanos(1_250));
        assert_eq!(clock.unix_now(), UnixNanos(1_700_000_000_250));
        assert!(clock.sleep_until(MonoNanos(5_000), &|| false));
        assert_eq!(clock.now(), MonoNanos(5_000));
        assert!(!clock.sleep_until(MonoNanos(9_000), &|| true));
        assert_eq!(clock.now(), MonoNanos(5_000));
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(MonoNanos(5) - MonoNanos(9), Duration::ZERO);
        assert_eq!(
            MonoNanos(9).checked_duration_since(MonoNanos(5)),
            Some(Duration::from_nanos(4))
        );
        assert_eq!(MonoNanos(5).checked_duration_since(MonoNanos(9)), None);
        assert_eq!(
            MonoNanos(u64::MAX - 1) + Duration::from_secs(1),
            MonoNanos(u64::MAX)
        );
        assert_eq!(
            UnixNanos(3).saturating_sub(Duration::from_nanos(9)),
            UnixNanos(0)
        );
    }

    #[test]
    fn real_clocks_are_the_kernel_clocks() {
        let unix = UnixNanos::now();
        // After 2020 and before 2100: really the wall clock, in ns.
        assert!((1_577_836_800_000_000_000..4_102_444_800_000_000_000).contains(&unix.get()));
        let a = MonoNanos::now();
        let b = SystemClock.now();
        assert!(b >= a);
        assert!(UnixNanos(unix.get() + 10_000_000_000).age().is_zero());
    }

    #[test]
    fn system_clock_sleep_stops_early_and_reaches_its_target() {
        let far = SystemClock.now() + Duration::from_secs(60);
        assert!(!SystemClock.sleep_until(far, &|| true));
        let near = SystemClock.now() + Duration::from_millis(1);
        assert!(SystemClock.sleep_until(near, &|| false));
        assert!(SystemClock.now() >= near);
    }

    #[test]
    fn serde_is_the_bare_integer() {
        assert_eq!(serde_json::to_string(&UnixNanos(42)).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<MonoNanos>("7").unwrap(),
            MonoNanos(7)
        );
    }
}
