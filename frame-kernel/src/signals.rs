//! SIGTERM/SIGINT → a stop flag that the decode loop, the pacing and backoff sleeps and
//! FFmpeg's interrupt callback all watch, so a stop request aborts even a blocked read.
//! A second signal while stopping exits at once (the next start replaces the ring), but
//! only when it comes at least 500 ms after the first: when the agent dies,
//! `PR_SET_PDEATHSIG` fires once for every agent thread the kernel is re-parented through
//! while the agent's threads exit, a burst of SIGTERMs within milliseconds that must not
//! skip the clean stop (which removes the ring).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
/// CLOCK_MONOTONIC ns of the first signal (0: none yet).
static FIRST_NS: AtomicU64 = AtomicU64::new(0);
/// A repeated signal closer than this to the first is the same request.
const REPEAT_AFTER_NS: u64 = 500_000_000;

/// True when a signal at `now` forces an exit, given the first signal's time.
fn forces_exit(first_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(first_ns) >= REPEAT_AFTER_NS
}

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only async-signal-safe work here: atomics, clock_gettime and _exit.
    // rustix reads the vDSO clock: no allocation, no lock, safe in a signal handler.
    let now = proto_schema::time::MonoNanos::now().get().max(1);
    if !STOP.swap(true, Ordering::SeqCst) {
        FIRST_NS.store(now, Ordering::SeqCst);
        return;
    }
    let first = FIRST_NS.load(Ordering::SeqCst);
    if first != 0 && forces_exit(first, now) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(proto_schema::exit::EXIT_INTERRUPTED) };
    }
}

/// Installs the handlers and returns the flag they raise.
pub fn install() -> io::Result<&'static AtomicBool> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
        // is an `extern "C" fn(c_int)` that only touches an atomic (see `on_signal`).
        // SA_RESTART keeps unrelated blocking syscalls (FFmpeg's I/O) from failing with
        // EINTR; the flag is what interrupts them, through the interrupt callback.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_signals_is_one_stop_request() {
        let first = 10_000_000_000;
        assert!(!forces_exit(first, first));
        assert!(!forces_exit(first, first + 3_000_000)); // pdeath burst: 3 ms later
        assert!(forces_exit(first, first + REPEAT_AFTER_NS));
        assert!(forces_exit(first, first + 2_000_000_000)); // an operator's second ^C
        assert!(proto_schema::time::MonoNanos::now().get() > 0);
    }
}
