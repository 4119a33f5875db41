//! The register of the sinks' health: per sink, what it wrote and lost (by reason), and
//! whether its last write failed (see the policy in [`crate::sinks`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Free space (bytes available to the agent) at which a sink that failed for want of
/// space counts as writable again without a write.
pub const MIN_FREE: u64 = 64 * 1024;
/// How often a sink degraded for want of space looks at its filesystem's free space.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Result records (`[[outputs]]`: a `jsonl` file, standard output).
    Results,
    /// Analytics events (`events.jsonl`).
    Events,
    /// Closed counts intervals (`counts-YYYY-MM-DD.csv`).
    Counts,
    /// Event clips (MP4 files).
    Clips,
}

impl SinkKind {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Results => "results",
            SinkKind::Events => "events",
            SinkKind::Counts => "counts",
            SinkKind::Clips => "clips",
        }
    }
}

/// Why items were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// The filesystem is full or the quota is used up (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// Any other write error (`EIO`, a closed pipe, a file that cannot be created).
    Io,
    /// The item could not be encoded (never degrades the sink).
    Encode,
}

impl LossReason {
    const ALL: [LossReason; 3] = [LossReason::NoSpace, LossReason::Io, LossReason::Encode];

    /// The reason of an I/O error.
    pub fn of(e: &std::io::Error) -> LossReason {
        Self::of_errno(e.raw_os_error())
    }

    /// The reason of an OS error number.
    pub fn of_errno(errno: Option<i32>) -> LossReason {
        match errno {
            Some(libc::ENOSPC | libc::EDQUOT) => LossReason::NoSpace,
            _ => LossReason::Io,
        }
    }

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::NoSpace => "no_space",
            LossReason::Io => "io",
            LossReason::Encode => "encode",
        }
    }

    fn index(self) -> usize {
        match self {
            LossReason::NoSpace => 0,
            LossReason::Io => 1,
            LossReason::Encode => 2,
        }
    }
}

#[derive(Debug)]
struct Degraded {
    reason: LossReason,
    message: String,
    since_unix_ms: u64,
    /// Items lost since it degraded.
    lost: u64,
    last_probe: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    kind: SinkKind,
    name: String,
    written: AtomicU64,
    failures: AtomicU64,
    lost: [AtomicU64; 3],
    /// Mirrors `state.is_some()`, so a healthy sink's write takes no lock.
    is_degraded: AtomicBool,
    state: Mutex<Option<Degraded>>,
}

/// One sink's counters and state in the register; cheap to clone.
#[derive(Debug, Clone)]
pub struct SinkHandle(Arc<Entry>);

impl SinkHandle {
    /// A handle in no register (tests, a sink nobody reports on).
    pub fn detached(kind: SinkKind, name: impl Into<String>) -> SinkHandle {
        SinkHandle(Arc::new(Entry {
            kind,
            name: name.into(),
            written: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            lost: Default::default(),
            is_degraded: AtomicBool::new(false),
            state: Mutex::new(None),
        }))
    }

    /// The sink's name (`jsonl:/var/lib/framebus/results.jsonl`).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// What the sink writes.
    pub fn kind(&self) -> SinkKind {
        self.0.kind
    }

    /// `n` items written: a degraded sink is healthy again.
    pub fn wrote(&self, n: u64) {
        self.0.written.fetch_add(n, Ordering::Relaxed);
        if self.0.is_degraded.load(Ordering::Relaxed) {
            self.recover("writes succeed again");
        }
    }

    /// A write failed: `kept` items of it were written whole, `lost` were not.
    /// Degrades the sink (except for [`LossReason::Encode`]); the first failure of a
    /// healthy sink is logged, later ones only counted.
    pub fn failed(&self, kept: u64, lost: u64, reason: LossReason, message: &str) {
        let e = &self.0;
        e.written.fetch_add(kept, Ordering::Relaxed);
        e.lost[reason.index()].fetch_add(lost, Ordering::Relaxed);
        e.failures.fetch_add(1, Ordering::Relaxed);
        if reason == LossReason::Encode {
            tracing::warn!(sink = %e.name, "item not written: {message}");
            return;
        }
        let mut st = lock(&e.state);
        match st.as_mut() {
            Some(d) => {
                d.lost += lost;
                d.reason = reason;
                if d.message != message {
                    d.message = message.to_owned();
                }
            }
            None => {
                tracing::warn!(
                    sink = %e.name,
                    lost,
                    "output degraded: {message} (further failures are counted in /metrics, not logged)"
                );
                *st = Some(Degraded {
                    reason,
                    message: message.to_owned(),
                    since_unix_ms: crate::clock::UnixNanos::now().get() / 1_000_000,
                    lost,
                    last_probe: None,
                });
                e.is_degraded.store(true, Ordering::Relaxed);
            }
        }
    }

    fn recover(&self, why: &str) {
        let e = &self.0;
        let mut st = lock(&e.state);
        if let Some(d) = st.take() {
            e.is_degraded.store(false, Ordering::Relaxed);
            let secs = (crate::clock::UnixNanos::now().get() / 1_000_000)
                .saturating_sub(d.since_unix_ms) as f64
                / 1000.0;
            tracing::info!(
                sink = %e.name,
                lost = d.lost,
                "output recovered ({why}) after {secs:.1} s degraded"
            );
        }
    }

    /// Whether the sink is degraded now.
    pub fn is_degraded(&self) -> bool {
        self.0.is_degraded.load(Ordering::Relaxed)
    }

    /// For a sink degraded for want of space and idle: once per [`PROBE_EVERY`], looks
    /// at the free space of the filesystem holding `path` and clears the state when it
    /// has [`MIN_FREE`] bytes. `true` if it cleared it.
    pub fn recover_if_space(&self, path: &Path) -> bool {
        if !self.is_degraded() {
            return false;
        }
        {
            let mut st = lock(&self.0.state);
            let Some(d) = st.as_mut() else {
                return false;
            };
            if d.reason != LossReason::NoSpace
                || d.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY)
            {
                return false;
            }
            d.last_probe = Some(Instant::now());
        }
        if free_bytes(path).is_some_and(|b| b >= MIN_FREE) {
            self.recover("space available again");
            return true;
        }
        false
    }

    fn report(&self) -> SinkReport {
        let e = &self.0;
        let st = lock(&e.state);
        SinkReport {
            sink: e.name.clone(),
            kind: e.kind,
            state: if st.is_some() { "degraded" } else { "ok" },
            reason: st.as_ref().map(|d| d.message.clone()),
            since_unix_ms: st.as_ref().map(|d| d.since_unix_ms),
            written: e.written.load(Ordering::Relaxed),
            lost: e.lost.iter().map(|l| l.load(Ordering::Relaxed)).sum(),
            failures: e.failures.load(Ordering::Relaxed),
        }
    }

    /// Items lost for `reason` in all.
    pub fn lost(&self, reason: LossReason) -> u64 {
        self.0.lost[reason.index()].load(Ordering::Relaxed)
    }
}

/// Bytes available to an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// One sink in `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// The sink's name (`jsonl:<path>`, `events:<path>`, `counts:<dir>`, `clips:<dir>`,
    /// `stdout`).
    pub sink: String,
    /// What it writes.
    pub kind: SinkKind,
    /// `ok`, or `degraded` while its writes fail.
    pub state: &'static str,
    /// While degraded: the last failure (path and OS error, e.g. `No space left on
    /// device (os error 28)`).
    pub reason: Option<String>,
    /// While degraded: since when, Unix ms.
    pub since_unix_ms: Option<u64>,
    /// Items written (lines, clips).
    pub written: u64,
    /// Items lost in all (every reason).
    pub lost: u64,
    /// Failed writes.
    pub failures: u64,
}

/// Every file sink of the agent, for `GET /health` and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkHealth {
    sinks: Mutex<Vec<SinkHandle>>,
}

impl SinkHealth {
    /// The handle of the sink `name` of `kind`, added on first use.
    pub fn register(&self, kind: SinkKind, name: impl Into<String>) -> SinkHandle {
        let name = name.into();
        let mut sinks = lock(&self.sinks);
        if let Some(h) = sinks.iter().find(|h| h.kind() == kind && h.name() == name) {
            return h.clone();
        }
        let h = SinkHandle::detached(kind, name);
        sinks.push(h.clone());
        h
    }

    fn handles(&self) -> Vec<SinkHandle> {
        lock(&self.sinks).clone()
    }

    /// Every sink's report, in registration order.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.handles().iter().map(SinkHandle::report).collect()
    }

    /// Whether any sink is degraded.
    pub fn any_degraded(&self) -> bool {
        self.handles().iter().any(SinkHandle::is_degraded)
    }

    /// Items the sinks of `kind` lost, summed over sinks and reasons.
    pub fn lost_of(&self, kind: SinkKind) -> u64 {
        self.handles()
            .iter()
            .filter(|h| h.kind() == kind)
            .map(|h| LossReason::ALL.iter().map(|r| h.lost(*r)).sum::<u64>())
            .sum()
    }

    /// Appends the sink families to a Prometheus text exposition.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let handles = self.handles();
        let l = crate::metrics::prom_label;
        let _ = writeln!(out, "# HELP framebus_sink_written_total Items written by a file sink (lines; clips for clips).\n# TYPE framebus_sink_written_total counter");
        for h in &handles {
            let _ = writeln!(
                out,
                "framebus_sink_written_total{{sink=\"{}\",kind=\"{}\"}} {}",
                l(h.name()),
                h.kind().as_str(),
                h.0.written.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP framebus_sink_dropped_total Items a sink could not write and dropped (whole lines; the file keeps no partial one), by reason.\n# TYPE framebus_sink_dropped_total counter");
        for h in &handles {
            for r in LossReason::ALL {
                let _ = writeln!(
                    out,
                    "framebus_sink_dropped_total{{sink=\"{}\",kind=\"{}\",reason=\"{}\"}} {}",
                    l(h.name()),
                    h.kind().as_str(),
                    r.as_str(),
                    h.lost(r)
                );
            }
        }
        let _ = writeln!(out, "# HELP framebus_sink_write_errors_total Failed writes of a sink.\n# TYPE framebus_sink_write_errors_total counter");
        for h in &handles {
            let _ = writeln!(
                out,
                "framebus_sink_write_errors_total{{sink=\"{}\",kind=\"{}\"}} {}",
                l(h.name()),
                h.kind().as_str(),
                h.0.failures.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP framebus_sink_degraded 1 while the sink's writes fail (GET /health says why).\n# TYPE framebus_sink_degraded gauge");
        for h in &handles {
            let _ = writeln!(
                out,
                "framebus_sink_degraded{{sink=\"{}\",kind=\"{}\"}} {}",
                l(h.name()),
                h.kind().as_str(),
                u8::from(h.is_degraded())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_degrades_and_a_write_recovers() {
        let reg = SinkHealth::default();
        let h = reg.register(SinkKind::Events, "events:/x/events.jsonl");
        assert!(!reg.any_degraded());
        h.wrote(3);
        h.failed(
            1,
            4,
            LossReason::NoSpace,
            "No space left on device (os error 28)",
        );
        h.failed(
            0,
            2,
            LossReason::NoSpace,
            "No space left on device (os error 28)",
        );
        assert!(reg.any_degraded());
        let r = &reg.reports()[0];
        assert_eq!(
            (r.state, r.written, r.lost, r.failures),
            ("degraded", 4, 6, 2)
        );
        assert!(r.reason.as_deref().unwrap().contains("No space"), "{r:?}");
        assert_eq!(reg.lost_of(SinkKind::Events), 6);
        assert_eq!(reg.lost_of(SinkKind::Results), 0);
        h.wrote(1);
        assert!(!reg.any_degraded());
        let r = &reg.reports()[0];
        assert_eq!((r.state, r.reason.clone(), r.lost), ("ok", None, 6));
    }

    #[test]
    fn encode_errors_are_counted_without_degrading() {
        let reg = SinkHealth::default();
        let h = reg.register(SinkKind::Results, "stdout");
        h.failed(0, 1, LossReason::Encode, "bad float");
        assert!(!reg.any_degraded());
        assert_eq!(h.lost(LossReason::Encode), 1);
    }

    #[test]
    fn one_entry_per_name_and_labels_in_metrics() {
        let reg = SinkHealth::default();
        let a = reg.register(SinkKind::Counts, "counts:/x");
        let b = reg.register(SinkKind::Counts, "counts:/x");
        a.failed(0, 2, LossReason::Io, "Input/output error (os error 5)");
        assert!(b.is_degraded());
        let mut text = String::new();
        reg.prometheus(&mut text);
        assert!(
            text.contains(
                "framebus_sink_dropped_total{sink=\"counts:/x\",kind=\"counts\",reason=\"io\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("framebus_sink_degraded{sink=\"counts:/x\",kind=\"counts\"} 1"));
        assert_eq!(reg.reports().len(), 1);
    }

    #[test]
    fn a_quiet_sink_out_of_space_recovers_when_there_is_space() {
        let dir = tempfile::tempdir().unwrap();
        let h = SinkHandle::detached(SinkKind::Clips, "clips:/x");
        h.failed(0, 1, LossReason::Io, "Input/output error (os error 5)");
        // Not for want of space: only a write clears it.
        assert!(!h.recover_if_space(dir.path()));
        h.failed(
            0,
            1,
            LossReason::NoSpace,
            "No space left on device (os error 28)",
        );
        // The temp dir's filesystem has room (64 KiB at least).
        assert!(h.recover_if_space(dir.path()));
        assert!(!h.is_degraded());
    }
}
