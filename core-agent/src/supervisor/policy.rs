//! Restart policy: exponential backoff, and a limit of restarts within a sliding window
//! after which the process is marked failed; a failed process is tried again after a
//! cool-down (`failed_retry_s`, 0: never), with its failure history forgotten, so a
//! transient fault does not become a permanent outage. Time comes from an injected
//! [`Clock`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, MonoNanos};
use crate::config::SupervisorSettings;

/// What to do after a process failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Too many failures within the window: mark it failed.
    GiveUp {
        /// Failures counted within the window (including this one).
        failures: u32,
        /// The window.
        window: Duration,
        /// When it will be tried again (the cool-down); `None`: never.
        retry_after: Option<Duration>,
    },
}

/// Backoff and restart-window bookkeeping of one supervised process.
#[derive(Debug)]
pub struct RestartPolicy {
    initial: Duration,
    max: Duration,
    limit: u32,
    window: Duration,
    failures: VecDeque<MonoNanos>,
    failed_retry: Option<Duration>,
    given_up_at: Option<MonoNanos>,
    failed_retries: u32,
    clock: Arc<dyn Clock>,
}

impl RestartPolicy {
    /// A policy with the supervisor settings' numbers.
    pub fn new(settings: &SupervisorSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            initial: Duration::from_millis(settings.backoff_initial_ms),
            max: Duration::from_millis(settings.backoff_max_ms.max(settings.backoff_initial_ms)),
            limit: settings.restart_limit,
            window: Duration::from_secs(settings.restart_window_s),
            failures: VecDeque::new(),
            failed_retry: (settings.failed_retry_s > 0)
                .then(|| Duration::from_secs(settings.failed_retry_s)),
            given_up_at: None,
            failed_retries: 0,
            clock,
        }
    }

    /// Records a failure now and decides: the n-th failure within the window waits
    /// `initial * 2^(n-1)` (capped at `max`); failure number `limit + 1` gives up.
    pub fn on_failure(&mut self) -> Decision {
        let now = self.clock.now();
        while let Some(&first) = self.failures.front() {
            if now.saturating_duration_since(first) >= self.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let n = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if n > self.limit {
            self.given_up_at = Some(now);
            return Decision::GiveUp {
                failures: n,
                window: self.window,
                retry_after: self.failed_retry,
            };
        }
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        Decision::RestartAfter(self.initial.saturating_mul(factor).min(self.max))
    }

    /// Forgets past failures (an operator asked for a restart, or the config changed).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.given_up_at = None;
    }

    /// Time left of the cool-down of a process given up on: `Some(ZERO)` when the retry
    /// is due, `None` when it is not failed or failed processes are never retried.
    pub fn retry_in(&self) -> Option<Duration> {
        let (at, wait) = (self.given_up_at?, self.failed_retry?);
        Some(wait.saturating_sub(self.clock.now().saturating_duration_since(at)))
    }

    /// Starts the retry of a failed process: its failure history is forgotten (a new
    /// run of backoffs up to the limit) and the retry is counted.
    pub fn begin_failed_retry(&mut self) {
        self.reset();
        self.failed_retries = self.failed_retries.saturating_add(1);
    }

    /// Retries of failed processes so far.
    pub fn failed_retries(&self) -> u32 {
        self.failed_retries
    }

    /// Failures currently within the window.
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn policy(clock: &ManualClock) -> RestartPolicy {
        let settings = SupervisorSettings {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            restart_limit: 5,
            restart_window_s: 60,
            ..SupervisorSettings::default()
        };
        RestartPolicy::new(&settings, Arc::new(clock.clone()))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let clock = ManualClock::new();
        let mut p = policy(&clock);
        let ms = |m| Decision::RestartAfter(Duration::from_millis(m));
        assert_eq!(p.on_failure(), ms(100));
        clock.advance(Duration::from_secs(1));
        assert_eq!(p.on_failure(), ms(200));
        assert_eq!(p.on_failure(), ms(400));
        assert_eq!(p.on_failure(), ms(800));
        assert_eq!(p.on_failure(), ms(1_000));
        assert_eq!(
            p.on_failure(),
            Decision::GiveUp {
                failures: 6,
                window: Duration::from_secs(60),
                retry_after: Some(Duration::from_secs(60)),
            }
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let clock = ManualClock::new();
        let mut p = policy(&clock);
        for _ in 0..5 {
            assert!(matches!(p.on_failure(), Decision::RestartAfter(_)));
            clock.advance(Duration::from_secs(10));
        }
        // The first failure is now 50 s old; 20 s later two have left the window.
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            p.on_failure(),
            Decision::RestartAfter(Duration::from_millis(800))
        );
        assert_eq!(p.recent_failures(), 4);
        // A long healthy run: back to the first step.
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            p.on_failure(),
            Decision::RestartAfter(Duration::from_millis(100))
        );
    }

    #[test]
    fn reset_forgets_everything() {
        let clock = ManualClock::new();
        let mut p = policy(&clock);
        for _ in 0..5 {
            p.on_failure();
        }
        p.reset();
        assert_eq!(
            p.on_failure(),
            Decision::RestartAfter(Duration::from_millis(100))
        );
    }

    #[test]
    fn a_failed_process_is_retried_after_the_cool_down() {
        let clock = ManualClock::new();
        let mut p = policy(&clock);
        assert_eq!(p.retry_in(), None, "not failed");
        for _ in 0..5 {
            assert!(matches!(p.on_failure(), Decision::RestartAfter(_)));
        }
        assert!(matches!(p.on_failure(), Decision::GiveUp { .. }));
        assert_eq!(p.retry_in(), Some(Duration::from_secs(60)));
        clock.advance(Duration::from_secs(45));
        assert_eq!(p.retry_in(), Some(Duration::from_secs(15)));
        clock.advance(Duration::from_secs(20));
        assert_eq!(p.retry_in(), Some(Duration::ZERO), "due");
        p.begin_failed_retry();
        assert_eq!(p.failed_retries(), 1);
        assert_eq!(p.retry_in(), None, "retrying, not failed");
        // The retry starts a fresh run of backoffs; failing all again gives up again,
        // with a new cool-down.
        assert_eq!(
            p.on_failure(),
            Decision::RestartAfter(Duration::from_millis(100))
        );
        for _ in 0..4 {
            p.on_failure();
        }
        assert!(matches!(
            p.on_failure(),
            Decision::GiveUp {
                retry_after: Some(_),
                ..
            }
        ));
        assert_eq!(p.retry_in(), Some(Duration::from_secs(60)));
        clock.advance(Duration::from_secs(60));
        p.begin_failed_retry();
        assert_eq!(p.failed_retries(), 2);
    }

    #[test]
    fn zero_never_retries_a_failed_process() {
        let clock = ManualClock::new();
        let settings = SupervisorSettings {
            restart_limit: 1,
            failed_retry_s: 0,
            ..SupervisorSettings::default()
        };
        let mut p = RestartPolicy::new(&settings, Arc::new(clock.clone()));
        p.on_failure();
        assert!(matches!(
            p.on_failure(),
            Decision::GiveUp {
                retry_after: None,
                ..
            }
        ));
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(p.retry_in(), None);
    }
}
