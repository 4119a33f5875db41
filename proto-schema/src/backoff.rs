//! Retry delays: doubling backoff with jitter from an injected random source, so the
//! schedule is tested without sleeping. One home for frame-kernel's camera reconnects
//! and core-agent's broker reconnects.
//!
//! Attempt `n` (from 0, since the last reset) has the nominal delay
//! `d = min(max, initial * 2^n)`, then spread by [`Spread`]: either `d (1 ± j)` (cameras
//! that failed together do not reconnect in lock step) or uniformly into `[d/2, d)`
//! ("equal jitter": never more than the nominal delay, never less than half).

use std::time::Duration;

/// A source of uniform numbers in `[0, 1)`.
pub trait Jitter: Send {
    /// The next number in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

/// SplitMix64: a tiny deterministic generator for jitter (not cryptographic).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed` (tests fix it).
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Seeded from the wall clock and the process id.
    pub fn from_entropy() -> Self {
        let t = crate::time::UnixNanos::now().get();
        SplitMix64(t ^ (u64::from(std::process::id()) << 32))
    }
}

impl Jitter for SplitMix64 {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a nominal delay `d` is spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spread {
    /// Uniform in `d (1 - j) .. d (1 + j)`; `j` is clamped to `0.0..=0.99` (0: exact).
    Relative(f64),
    /// Uniform in `[d/2, d)`.
    Equal,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// First nominal delay.
    pub initial: Duration,
    /// Largest nominal delay (at least `initial`).
    pub max: Duration,
    /// How each nominal delay is spread.
    pub spread: Spread,
}

/// The delays of one connection's attempts.
#[derive(Debug, Clone)]
pub struct Backoff<J = SplitMix64> {
    policy: BackoffPolicy,
    failures: u32,
    jitter: J,
}

impl<J: Jitter> Backoff<J> {
    /// Starts at the policy's initial delay.
    pub fn new(policy: BackoffPolicy, jitter: J) -> Self {
        let policy = BackoffPolicy {
            max: policy.max.max(policy.initial),
            ..policy
        };
        Backoff {
            policy,
            failures: 0,
            jitter,
        }
    }

    /// The nominal delay of the next attempt (before the spread).
    pub fn nominal(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.policy
            .initial
            .saturating_mul(factor)
            .min(self.policy.max)
    }

    /// The delay before the next attempt; each call counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.nominal();
        self.failures = self.failures.saturating_add(1);
        match self.policy.spread {
            Spread::Relative(j) => {
                let j = j.clamp(0.0, 0.99);
                if j == 0.0 {
                    return d;
                }
                d.mul_f64(1.0 - j + 2.0 * j * self.unit())
            }
            Spread::Equal => {
                let half = d / 2;
                half + half.mul_f64(self.unit())
            }
        }
    }

    fn unit(&mut self) -> f64 {
        let u = self.jitter.next_unit();
        if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Back to the initial delay (after a good connection).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Delays handed out since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    struct Fixed(Vec<f64>, usize);
    impl Jitter for Fixed {
        fn next_unit(&mut self) -> f64 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
    }

    fn policy(initial: u32, max: u32, spread: Spread) -> BackoffPolicy {
        BackoffPolicy {
            initial: initial * MS,
            max: max * MS,
            spread,
        }
    }

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(policy(100, 1000, Spread::Relative(0.0)), SplitMix64::new(1));
        let got: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        let want: Vec<Duration> = [100, 200, 400, 800, 1000, 1000, 1000]
            .iter()
            .map(|&m| m * MS)
            .collect();
        assert_eq!(got, want);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let mut b = Backoff::new(policy(100, 1000, Spread::Equal), Fixed(vec![0.0], 0));
        let got: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(got, [50, 100, 200, 400, 500, 500].map(|m| m * MS));
        let mut b = Backoff::new(policy(100, 1000, Spread::Equal), Fixed(vec![0.5], 0));
        let got: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(got, [75, 150, 300, 600, 750].map(|m| m * MS));
    }

    #[test]
    fn relative_jitter_stays_in_band_varies_and_repeats_for_a_seed() {
        let p = policy(500, 500, Spread::Relative(0.2));
        let mut b = Backoff::new(p, SplitMix64::new(42));
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= 400 * MS && *d <= 600 * MS));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread the delays");
        assert_eq!(Backoff::new(p, SplitMix64::new(42)).next_delay(), delays[0]);
    }

    #[test]
    fn huge_failure_counts_and_odd_jitter_values_stay_bounded() {
        for spread in [Spread::Relative(5.0), Spread::Relative(-1.0), Spread::Equal] {
            let mut b = Backoff::new(policy(100, 30_000, spread), Fixed(vec![f64::NAN, 2.0], 0));
            for _ in 0..10_000 {
                assert!(b.next_delay() <= 60_000 * MS);
            }
        }
        // `max` below `initial` is `initial`.
        let mut b = Backoff::new(policy(300, 100, Spread::Relative(0.0)), SplitMix64::new(0));
        assert_eq!(b.next_delay(), 300 * MS);
    }

    #[test]
    fn splitmix_stays_in_the_unit_interval_and_varies() {
        let mut x = SplitMix64::new(42);
        let v: Vec<f64> = (0..1000).map(|_| x.next_unit()).collect();
        assert!(v.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
