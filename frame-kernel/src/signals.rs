//! SIGTERM/SIGINT → a stop flag that the decode loop, the pacing and backoff sleeps and
//! FFmpeg's interrupt callback all watch, so a stop request aborts even a blocked read.
//! A second signal while stopping exits at once (the next start replaces the ring).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap and _exit.
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
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
