//! Publish notification through a futex on the header's 32-bit `notify` word.
//!
//! Shared (not `FUTEX_PRIVATE`) futexes are keyed by the underlying page, so a writer and
//! readers in different processes, each with its own mapping, meet on the same word.
//! Readers only *read* the word (their mapping is `PROT_READ`); only the writer changes
//! it. Why a futex rather than an eventfd or socket: see `docs/ring-format.md`.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

/// Wakes every thread of every process waiting on `word`. One syscall; cheap when no
/// one waits (the kernel finds an empty hash bucket).
pub(crate) fn wake_all(word: &AtomicU32) {
    // An error here can only mean a bad address, impossible for a live mapping; a lost
    // wake-up would be bounded by the readers' timeouts anyway.
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// Outcome of one [`wait_while`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The word changed (or a wake-up arrived): re-check the ring.
    Changed,
    /// `deadline` passed with the word still at `expected`.
    TimedOut,
    /// The kernel could not access the word (EFAULT): the page behind it is gone, i.e.
    /// the ring file was truncated. The caller touches the word (so the truncation
    /// guard in `shm.rs` takes over) and reports the ring as truncated.
    Fault,
}

/// Sleeps while `word == expected`, until woken or `deadline`. Signals and spurious
/// wake-ups are absorbed by re-waiting for the remaining time.
pub(crate) fn wait_while(word: &AtomicU32, expected: u32, deadline: Instant) -> Wake {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Wake::TimedOut;
        }
        let ts = timespec(remaining);
        match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
            // Woken by FUTEX_WAKE, or the value differed already (EAGAIN).
            Ok(()) | Err(Errno::AGAIN) => return Wake::Changed,
            Err(Errno::TIMEDOUT) => return Wake::TimedOut,
            Err(Errno::INTR) => continue,
            Err(Errno::FAULT) => return Wake::Fault,
            // Anything else (ENOSYS, ...) means no futex support: fall back to a
            // short sleep so the caller re-checks; never a busy spin.
            Err(_) => {
                std::thread::sleep(remaining.min(Duration::from_millis(1)));
                return Wake::Changed;
            }
        }
    }
}

fn timespec(d: Duration) -> futex::Timespec {
    futex::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn times_out_when_unchanged() {
        let word = AtomicU32::new(5);
        let start = Instant::now();
        let out = wait_while(&word, 5, start + Duration::from_millis(20));
        assert_eq!(out, Wake::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn returns_at_once_when_value_differs() {
        let word = AtomicU32::new(6);
        let out = wait_while(&word, 5, Instant::now() + Duration::from_secs(10));
        assert_eq!(out, Wake::Changed);
    }

    #[test]
    fn wakes_on_change() {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&word);
        let waiter = std::thread::spawn(move || {
            wait_while(&w2, 0, Instant::now() + Duration::from_secs(10))
        });
        std::thread::sleep(Duration::from_millis(20));
        word.fetch_add(1, Ordering::Release);
        wake_all(&word);
        assert_eq!(waiter.join().unwrap(), Wake::Changed);
    }
}
