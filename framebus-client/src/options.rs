//! Client settings and the reconnect back-off.

use std::time::{Duration, Instant};

use proto_schema::backoff;
use proto_schema::framing::DEFAULT_MAX_FRAME;

/// Settings shared by [`crate::Client`] and [`crate::BlockingClient`], builder style:
/// `ClientOptions::default().request_timeout(Duration::from_secs(2))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on `connect(2)` (only a full accept backlog makes a Unix connect wait).
    /// Default 1 s.
    pub connect_timeout: Duration,
    /// Limit on writing one request (a server that does not read makes the send block:
    /// [`crate::SendError::Blocked`]). Default 1 s.
    pub send_timeout: Duration,
    /// Limit on waiting for one answer. Default 30 s (a first inference on a cold model
    /// can take seconds).
    pub request_timeout: Duration,
    /// Frame payload limit in both directions. Default [`DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
    /// Requests in flight on one connection at most; one more is refused with
    /// [`crate::SendError::TooManyInFlight`] without being sent. Default 256.
    pub max_in_flight: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: 256,
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`ClientOptions::send_timeout`].
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }

    /// Sets [`ClientOptions::request_timeout`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets [`ClientOptions::max_frame`].
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Sets [`ClientOptions::max_in_flight`] (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

/// When the next connection attempt may start: the shared doubling schedule
/// ([`proto_schema::backoff`], no jitter) from `initial` to `max`, reset by a success.
/// Time is passed in (`now`), so the policy is tested without sleeping.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: backoff::Backoff,
    not_before: Option<Instant>,
}

impl Backoff {
    /// Doubling delays from `initial` up to `max` (`max` below `initial` is `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let policy = backoff::BackoffPolicy {
            initial,
            max,
            spread: backoff::Spread::Relative(0.0),
        };
        Backoff {
            // No spread: the generator is never consulted.
            schedule: backoff::Backoff::new(policy, backoff::SplitMix64::new(0)),
            not_before: None,
        }
    }

    /// The same delay after every attempt: at most one attempt per `every`.
    pub fn constant(every: Duration) -> Self {
        Backoff::new(every, every)
    }

    /// Starts an attempt at `now` if one is due, and schedules the next one after the
    /// current delay (which then grows); `Err(wait)` if the next attempt is `wait` away.
    pub fn attempt(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(t) = self.not_before {
            if now < t {
                return Err(t - now);
            }
        }
        self.not_before = Some(now + self.schedule.next_delay());
        Ok(())
    }

    /// How long from `now` until an attempt is due (zero if it is).
    pub fn wait(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// The attempt succeeded: the next failure starts again from the initial delay (the
    /// next attempt still waits for the delay already scheduled).
    pub fn succeeded(&mut self) {
        self.schedule.reset();
    }

    /// Allows an attempt at once, from the initial delay (e.g. the server just became
    /// ready).
    pub fn reset(&mut self) {
        self.schedule.reset();
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut b = Backoff::new(ms(10), ms(35));
        assert_eq!(b.attempt(t0), Ok(()));
        assert_eq!(b.attempt(t0 + ms(4)), Err(ms(6)));
        assert_eq!(b.wait(t0 + ms(4)), ms(6));
        assert_eq!(b.attempt(t0 + ms(10)), Ok(())); // next after 20
        assert_eq!(b.attempt(t0 + ms(29)), Err(ms(1)));
        assert_eq!(b.attempt(t0 + ms(30)), Ok(())); // next after 35 (capped, not 40)
        assert_eq!(b.attempt(t0 + ms(64)), Err(ms(1)));
        assert_eq!(b.attempt(t0 + ms(65)), Ok(()));
        assert_eq!(b.attempt(t0 + ms(99)), Err(ms(1)));
        b.succeeded();
        assert_eq!(b.attempt(t0 + ms(100)), Ok(())); // back to 10
        assert_eq!(b.attempt(t0 + ms(109)), Err(ms(1)));
        b.reset();
        assert_eq!(b.wait(t0 + ms(109)), Duration::ZERO);
        assert_eq!(b.attempt(t0 + ms(109)), Ok(()));
    }

    #[test]
    fn constant_backoff_is_one_attempt_per_interval() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut b = Backoff::constant(ms(50));
        for i in 0..5 {
            assert_eq!(b.attempt(t0 + ms(50 * i)), Ok(()));
            assert_eq!(b.attempt(t0 + ms(50 * i + 49)), Err(ms(1)));
        }
    }
}
