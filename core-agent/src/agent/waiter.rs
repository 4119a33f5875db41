//! Wake-ups from the ring: a small thread blocks in the ring's futex wait
//! ([`RingReader::wait_for_publish`]) on the agent's own reader (one mapping per camera)
//! and forwards the frame it saw to the agent's task through a watch channel. The
//! channel keeps only the latest value, so a slow agent sees the freshest frame, never
//! a backlog.
//!
//! Wake only for work: the agent tells the thread, through [`Due`], the capture time from
//! which a frame is worth looking at (the next slot start of any subscription). Before
//! that time the thread sleeps (no futex wait, so the kernel's publishes do not wake it);
//! from then on it waits for the next publish and forwards the first frame captured at
//! or after that time. A frame published right after the slot start is therefore taken
//! as promptly as before, and a 25 fps camera gated to 5 fps wakes the agent about 5
//! times a second instead of 25.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shm_ring::{FrameInfo, RingReader, RingState, WaitOutcome};
use tokio::sync::watch;

use crate::clock::UnixNanos;

/// The latest news from a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wake {
    /// The newest frame when the waiter looked (`None`: it could not be read, e.g. a
    /// truncated ring; the agent checks the ring).
    pub frame: Option<FrameInfo>,
    /// The writer closed the ring (or it was replaced, or its file was truncated).
    pub closed: bool,
}

/// When the agent next has work: written by the agent, read by its waiting thread.
#[derive(Debug, Default)]
pub struct Due {
    at_ns: AtomicU64,
    horizon_ns: AtomicU64,
}

impl Due {
    /// Frames captured before `at_ns` (capture clock) need not wake the agent; `0`: every
    /// frame does. A time more than `horizon_ns` ahead of now is not trusted (the capture
    /// clock went backwards) and every frame wakes the agent again.
    pub fn set(&self, at_ns: u64, horizon_ns: u64) {
        self.horizon_ns.store(horizon_ns, Ordering::Relaxed);
        self.at_ns.store(at_ns, Ordering::Release);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.at_ns.load(Ordering::Acquire),
            self.horizon_ns.load(Ordering::Relaxed),
        )
    }
}

/// How long to sleep before the agent has work, at capture-clock time `now_ns`: `None`
/// when it has work now (wait for publishes instead).
pub fn nap(due_ns: u64, horizon_ns: u64, now_ns: u64) -> Option<Duration> {
    let ahead = due_ns.checked_sub(now_ns).filter(|&a| a > 0)?;
    (ahead <= horizon_ns).then(|| Duration::from_nanos(ahead))
}

/// Whether a frame captured at `capture_ts_ns` is worth waking the agent for.
pub fn wanted(capture_ts_ns: u64, due_ns: u64, horizon_ns: u64) -> bool {
    // A frame far before the due time means the capture clock went backwards: the
    // agent's gates start over on it.
    capture_ts_ns >= due_ns || capture_ts_ns.saturating_add(horizon_ns) < due_ns
}

/// The waiting thread of one ring; stops when dropped.
#[derive(Debug)]
pub struct RingWaiter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long one futex wait lasts before the stop flag is checked again.
const WAIT_SLICE: Duration = Duration::from_millis(200);

impl RingWaiter {
    /// Starts waiting on the agent's reader. Frames captured before `due` do not wake.
    pub fn start(
        reader: Arc<RingReader>,
        due: Arc<Due>,
    ) -> std::io::Result<(Self, watch::Receiver<Wake>)> {
        let (tx, rx) = watch::channel(Wake::default());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = reader.name().to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("ring-wait-{name}"))
            .spawn(move || {
                let mut last = reader.header().write_seq;
                while !flag.load(Ordering::Relaxed) {
                    let (at, horizon) = due.get();
                    let napping = nap(at, horizon, UnixNanos::now().get());
                    // A closed (or truncated) ring is reported by the wait below at once.
                    if let Some(d) = napping.filter(|_| reader.state() != RingState::Closed) {
                        // Nothing to do before `at`: sleep through the publishes.
                        std::thread::sleep(d.min(WAIT_SLICE));
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                    // A truncated ring (ReadError::Truncated) ends this reader like a
                    // closed one: the agent drops its mapping and reopens the ring.
                    let outcome = reader
                        .try_wait_for_publish(last, WAIT_SLICE)
                        .unwrap_or_else(|e| {
                            tracing::warn!(ring = %name, "{e}");
                            WaitOutcome::Closed
                        });
                    match outcome {
                        WaitOutcome::Published(seq) => {
                            last = seq;
                            // Read again: the agent may have moved it since (it
                            // handled the previous wake meanwhile).
                            let (at, horizon) = due.get();
                            // A frame that cannot be read (torn, truncated) is passed
                            // on: the agent decides.
                            let frame = reader.latest();
                            if frame.is_some_and(|f| !wanted(f.capture_ts_ns, at, horizon)) {
                                continue;
                            }
                            if tx
                                .send(Wake {
                                    frame,
                                    closed: false,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        WaitOutcome::TimedOut => {
                            if tx.is_closed() {
                                return;
                            }
                        }
                        WaitOutcome::Closed => {
                            let _ = tx.send(Wake {
                                frame: None,
                                closed: true,
                            });
                            return;
                        }
                    }
                }
            })?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            rx,
        ))
    }
}

impl Drop for RingWaiter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not joined: the thread notices the flag within one wait slice, and joining
        // here would block the async task that drops it.
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn sleeps_until_due_then_waits_for_publishes() {
        let h = 10_000 * MS;
        assert_eq!(nap(0, h, 5_000 * MS), None);
        assert_eq!(
            nap(5_200 * MS, h, 5_000 * MS),
            Some(Duration::from_millis(200))
        );
        assert_eq!(nap(5_200 * MS, h, 5_200 * MS), None);
        assert_eq!(nap(5_200 * MS, h, 5_300 * MS), None);
        // Too far ahead: the clock jumped; do not sleep on it.
        assert_eq!(nap(60_000 * MS, h, 5_000 * MS), None);
    }

    #[test]
    fn only_due_frames_wake_the_agent() {
        let h = 1_000 * MS;
        assert!(wanted(5_000 * MS, 0, h));
        assert!(!wanted(5_190 * MS, 5_200 * MS, h));
        assert!(wanted(5_200 * MS, 5_200 * MS, h));
        assert!(wanted(5_240 * MS, 5_200 * MS, h));
        // Far behind the due time: the capture clock went backwards.
        assert!(wanted(1_000 * MS, 5_200 * MS, h));
    }
}
