//! Reconnect delays: exponential backoff with jitter.
//!
//! Attempt `n` (0-based, since the last good connection) waits
//! `d = min(max, initial * 2^n)`, jittered uniformly into `[d/2, d)` ("equal jitter"):
//! never less than half the nominal delay, so many agents restarted together do not
//! hit a broker in lock step, and never more than `max`. The random source is
//! injected ([`Jitter`]), so the schedule is unit-tested without sleeping.

use std::time::Duration;

/// A source of uniform numbers in `[0, 1)`.
pub trait Jitter: Send {
    /// The next number in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

/// xorshift64*: small and good enough for spreading reconnects (not cryptographic).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from the wall clock and the process id.
    pub fn from_time() -> Self {
        Self::new(crate::clock::UnixNanos::now().get() ^ (u64::from(std::process::id()) << 32))
    }
}

impl Jitter for XorShift {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The reconnect schedule of one broker connection.
#[derive(Debug)]
pub struct Backoff<J> {
    initial: Duration,
    max: Duration,
    attempt: u32,
    jitter: J,
}

impl<J: Jitter> Backoff<J> {
    /// Delays from `initial` doubling up to `max` (`max >= initial` is enforced).
    pub fn new(initial: Duration, max: Duration, jitter: J) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            jitter,
        }
    }

    /// The delay before the next attempt; each call counts one attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        let nominal = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let u = self.jitter.next_unit().clamp(0.0, 1.0);
        half + half.mul_f64(u)
    }

    /// Back to `initial` (after a good connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<f64>, usize);
    impl Jitter for Fixed {
        fn next_unit(&mut self) -> f64 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(100 * MS, 1000 * MS, Fixed(vec![0.0], 0));
        let got: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        // Lowest jitter: half of 100, 200, 400, 800, then the 1000 cap.
        assert_eq!(
            got,
            vec![50 * MS, 100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]
        );
        let mut b = Backoff::new(100 * MS, 1000 * MS, Fixed(vec![0.5], 0));
        let got: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(got, vec![75 * MS, 150 * MS, 300 * MS, 600 * MS, 750 * MS]);
        assert_eq!(b.attempts(), 5);
    }

    #[test]
    fn reset_starts_over_and_huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(100 * MS, 30_000 * MS, Fixed(vec![0.999], 0));
        for _ in 0..200 {
            assert!(b.next_delay() < 30_000 * MS);
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= 50 * MS && d < 100 * MS, "{d:?}");
    }

    #[test]
    fn xorshift_stays_in_the_unit_interval_and_varies() {
        let mut x = XorShift::new(42);
        let v: Vec<f64> = (0..1000).map(|_| x.next_unit()).collect();
        assert!(v.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
