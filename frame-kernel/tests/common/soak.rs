//! Soak sampling: anonymous memory and open descriptors of running processes, read from
//! `/proc`, and the "flat after warm-up" check. One implementation for the soak tests of
//! `frame-kernel` and `core-agent` (core-agent's test harness includes this file).
//!
//! Why anonymous RSS (`RssAnon`) and not `VmRSS`: a leak of heap or FFmpeg buffers is
//! anonymous memory, while `VmRSS` also counts file-backed pages (the binary, shared
//! libraries, the video file read through the page cache, the ring's shared mapping as
//! pages get touched) that come and go with the kernel's page cache and say nothing about
//! a leak. Both are recorded and printed.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// Since the series started.
    pub at: Duration,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `RssAnon`, KiB.
    pub anon_kib: u64,
    /// Entries in `/proc/<pid>/fd`.
    pub fds: usize,
}

/// `VmRSS` and `RssAnon` (KiB) and the descriptor count of `pid`, or `None` when the
/// process is gone.
pub fn read_proc(pid: u32) -> Option<(u64, u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let rss = field("VmRSS:")?;
    let anon = field("RssAnon:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, anon, fds))
}

/// The readings of one process over a soak run.
#[derive(Debug, Clone)]
pub struct Series {
    /// Name for messages (`frame-kernel`, `model-server`, ...).
    pub name: String,
    /// The process.
    pub pid: u32,
    /// Readings in time order.
    pub samples: Vec<ProcSample>,
}

/// What a series did after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    /// Median `RssAnon` of the first readings after warm-up, KiB.
    pub anon_start_kib: u64,
    /// Median `RssAnon` of the last readings, KiB.
    pub anon_end_kib: u64,
    /// Median `VmRSS` of the first readings after warm-up, KiB.
    pub rss_start_kib: u64,
    /// Median `VmRSS` of the last readings, KiB.
    pub rss_end_kib: u64,
    /// Descriptors at the first reading after warm-up.
    pub fds_start: usize,
    /// Descriptors at the last reading.
    pub fds_end: usize,
    /// Most descriptors seen after warm-up.
    pub fds_max: usize,
    /// Time between the two windows' first readings.
    pub span: Duration,
}

impl Drift {
    /// Growth of `RssAnon` between the windows, KiB (negative: it shrank).
    pub fn anon_growth_kib(&self) -> i64 {
        self.anon_end_kib as i64 - self.anon_start_kib as i64
    }
}

/// Readings per comparison window: medians of this many, so that one reading taken
/// while a frame buffer was briefly allocated does not decide.
const WINDOW: usize = 5;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

impl Series {
    /// An empty series for `pid`.
    pub fn new(name: impl Into<String>, pid: u32) -> Series {
        Series {
            name: name.into(),
            pid,
            samples: Vec::new(),
        }
    }

    /// Takes one reading at `at`; `false` if the process is gone.
    pub fn record(&mut self, at: Duration) -> bool {
        match read_proc(self.pid) {
            Some((rss_kib, anon_kib, fds)) => {
                self.samples.push(ProcSample {
                    at,
                    rss_kib,
                    anon_kib,
                    fds,
                });
                true
            }
            None => false,
        }
    }

    /// Compares the first readings at or after `warmup` with the last ones.
    pub fn drift(&self, warmup: Duration) -> Drift {
        let after: Vec<&ProcSample> = self.samples.iter().filter(|s| s.at >= warmup).collect();
        assert!(
            after.len() >= 2 * WINDOW,
            "{}: only {} readings after the {warmup:?} warm-up",
            self.name,
            after.len()
        );
        let first = &after[..WINDOW];
        let last = &after[after.len() - WINDOW..];
        Drift {
            anon_start_kib: median(first.iter().map(|s| s.anon_kib).collect()),
            anon_end_kib: median(last.iter().map(|s| s.anon_kib).collect()),
            rss_start_kib: median(first.iter().map(|s| s.rss_kib).collect()),
            rss_end_kib: median(last.iter().map(|s| s.rss_kib).collect()),
            fds_start: first[0].fds,
            fds_end: last[WINDOW - 1].fds,
            fds_max: after.iter().map(|s| s.fds).max().unwrap_or(0),
            span: last[0].at.saturating_sub(first[0].at),
        }
    }

    /// Prints the drift (a `MEASURED` line for the report) and asserts that anonymous
    /// memory grew by less than `max_growth_kib` and that the descriptor count came
    /// back to where it was, never more than `fd_slack` above it.
    pub fn assert_flat(&self, warmup: Duration, max_growth_kib: i64, fd_slack: usize) -> Drift {
        let d = self.drift(warmup);
        println!(
            "MEASURED soak {} (pid {}): RssAnon {} -> {} KiB ({:+} KiB over {:.0} s), \
             VmRSS {} -> {} KiB, fds {} -> {} (max {})",
            self.name,
            self.pid,
            d.anon_start_kib,
            d.anon_end_kib,
            d.anon_growth_kib(),
            d.span.as_secs_f64(),
            d.rss_start_kib,
            d.rss_end_kib,
            d.fds_start,
            d.fds_end,
            d.fds_max
        );
        assert!(
            d.anon_growth_kib() < max_growth_kib,
            "{}: anonymous memory grew {} KiB in {:.0} s after warm-up (bound {max_growth_kib} KiB): \
             a leak; readings {:?}",
            self.name,
            d.anon_growth_kib(),
            d.span.as_secs_f64(),
            self.samples
        );
        assert!(
            d.fds_end <= d.fds_start && d.fds_max <= d.fds_start + fd_slack,
            "{}: descriptors {} -> {} (max {}): a descriptor leak; readings {:?}",
            self.name,
            d.fds_start,
            d.fds_end,
            d.fds_max,
            self.samples
        );
        d
    }
}

/// Samples every series each `every` until `total` has passed since `start`, calling
/// `check` after each round (to assert that the system still works). Panics if a
/// process disappears.
pub fn run_soak(
    series: &mut [Series],
    start: Instant,
    total: Duration,
    every: Duration,
    mut check: impl FnMut(Duration),
) {
    let mut next = start;
    while start.elapsed() < total {
        let at = start.elapsed();
        for s in series.iter_mut() {
            assert!(s.record(at), "{} (pid {}) is gone at {at:?}", s.name, s.pid);
        }
        check(at);
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}
