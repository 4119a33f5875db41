//! Child processes that never outlive their test: [`ChildGuard`] kills and reaps on drop,
//! and [`Lines`] keeps (and echoes) a child's output lines.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends `sig` to `pid` (no-op on a pid of 0, which would mean our own process group).
pub fn signal(pid: u32, sig: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) takes no pointers; the pid is one of our children.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `child` until it exits or `limit` passes.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// A child process that is stopped and reaped when the guard drops: `SIGTERM` and up to
/// `grace` for a clean exit (when a grace period is set), then `SIGKILL`, then `wait`.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    grace: Duration,
}

impl ChildGuard {
    /// Guards `child`; on drop it is killed at once (see [`ChildGuard::grace`]).
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            grace: Duration::ZERO,
        }
    }

    /// On drop, send `SIGTERM` first and allow `grace` for a clean exit.
    pub fn grace(mut self, grace: Duration) -> ChildGuard {
        self.grace = grace;
        self
    }

    /// The process id, or 0 once the child was reaped or released.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the guard still holds a child.
    pub fn is_held(&self) -> bool {
        self.child.is_some()
    }

    /// The child (for its pipes). Panics after [`ChildGuard::release`] or a reaping call.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the guarded child was already reaped")
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: libc::c_int) {
        signal(self.id(), sig);
    }

    /// The exit status if the child has exited (it is then reaped and released).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten();
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Waits up to `limit` for the child to exit by itself; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let st = wait_timeout(self.child.as_mut()?, limit);
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// `SIGTERM` and wait up to `limit`; `None` (after a `SIGKILL` and reaping) when the
    /// child did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let st = self.wait_timeout(limit);
        if st.is_none() {
            self.kill();
        }
        st
    }

    /// `SIGKILL` and reap (a vanished process, as from `kill -9`).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = c.kill();
        c.wait().ok()
    }

    /// Gives the child up without stopping it.
    pub fn release(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if !self.grace.is_zero() {
            // A stopped (SIGSTOP) child ignores SIGTERM until continued.
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGTERM);
            if self.wait_timeout(self.grace).is_some() {
                return;
            }
        }
        self.kill();
    }
}

/// Lines of a child's output, kept and echoed to stderr with a prefix.
#[derive(Debug, Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collects the lines of `stream` on a thread, echoing each with `prefix`.
    pub fn pump(&self, stream: impl Read + Send + 'static, prefix: impl Into<String>) {
        let lines = self.0.clone();
        let prefix = prefix.into();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("{prefix}{line}");
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }
}

/// Polls `f` every 100 ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn alive(pid: u32) -> bool {
        // A reaped child's /proc entry is gone.
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn drop_kills_and_reaps() {
        let guard = ChildGuard::new(sleeper());
        let pid = guard.id();
        assert!(alive(pid));
        drop(guard);
        assert!(!alive(pid), "pid {pid} survived its guard");
    }

    #[test]
    fn drop_with_grace_terminates_a_stopped_child() {
        let guard = ChildGuard::new(sleeper()).grace(Duration::from_secs(5));
        let pid = guard.id();
        guard.signal(libc::SIGSTOP);
        drop(guard);
        assert!(!alive(pid), "pid {pid} survived its guard");
    }

    #[test]
    fn terminate_reports_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut guard = ChildGuard::new(sleeper());
        let st = guard
            .terminate(Duration::from_secs(5))
            .expect("sleep exits on SIGTERM");
        assert_eq!(st.signal(), Some(libc::SIGTERM));
        assert!(!guard.is_held());
        assert_eq!(guard.id(), 0);
    }

    #[test]
    fn lines_collects_output() {
        let mut c = Command::new("printf")
            .arg("a\\nREADY 5\\n")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::default();
        lines.pump(c.stdout.take().unwrap(), "[printf] ");
        c.wait().unwrap();
        let got = wait_for(Duration::from_secs(5), "both lines", || {
            (lines.all().len() == 2).then(|| lines.all())
        });
        assert_eq!(got, ["a", "READY 5"]);
        assert_eq!(lines.find("READY").as_deref(), Some("READY 5"));
    }
}
