//! CPU and memory of the agent and its children, read from `/proc` for the page's
//! System panel (the status API reports pids, not usage).

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, which Linux fixes at
/// 100 in its user ABI on every architecture this runs on.
const TICKS_PER_S: f64 = 100.0;

/// One process's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcUsage {
    /// `agent`, `camera <id>` or `model <id>`.
    pub name: String,
    /// Pid.
    pub pid: u32,
    /// CPU since the previous sample, percent of one core; `None` on the first.
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
}

/// User + system CPU ticks from the text of `/proc/<pid>/stat`.
pub fn parse_ticks(stat: &str) -> Option<u64> {
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split at the
    // last ") ". Fields after it start at field 3 (state); utime, stime are 14, 15.
    let rest = stat.rsplit_once(") ")?.1;
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory in bytes from the text of `/proc/<pid>/status` (`VmRSS:  123 kB`).
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Keeps the previous sample of each pid to turn tick counters into percentages.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: HashMap<u32, (u64, Instant)>,
}

impl CpuSampler {
    /// CPU percent of `pid` since its previous sample, given its `ticks` now at `now`.
    pub fn percent(&mut self, pid: u32, ticks: u64, now: Instant) -> Option<f64> {
        let prev = self.last.insert(pid, (ticks, now));
        let (t0, at) = prev?;
        let dt = now.checked_duration_since(at)?.as_secs_f64();
        (dt > 0.0).then(|| ticks.saturating_sub(t0) as f64 / TICKS_PER_S / dt * 100.0)
    }

    /// Forgets pids not in `alive` (processes that ended).
    pub fn retain(&mut self, alive: &[u32]) {
        self.last.retain(|p, _| alive.contains(p));
    }

    /// Samples each `(name, pid)` from `/proc`, `now` being the time of the sample.
    pub fn sample(&mut self, procs: &[(String, u32)], now: Instant) -> Vec<ProcUsage> {
        let out = procs
            .iter()
            .map(|(name, pid)| {
                let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| parse_ticks(&s));
                ProcUsage {
                    name: name.clone(),
                    pid: *pid,
                    cpu_percent: ticks.and_then(|t| self.percent(*pid, t, now)),
                    rss_bytes: std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|s| parse_rss(&s)),
                }
            })
            .collect();
        let alive: Vec<u32> = procs.iter().map(|(_, p)| *p).collect();
        self.retain(&alive);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (frame kernel) (x)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 1000 1000000 500";
        assert_eq!(parse_ticks(stat), Some(300));
        assert_eq!(parse_ticks("garbage"), None);
        assert_eq!(parse_ticks("1 (x) S 1 2"), None);
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    2048 kB\nThreads: 3\n";
        assert_eq!(parse_rss(status), Some(2048 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }

    #[test]
    fn cpu_percent_is_ticks_over_wall_time() {
        let mut s = CpuSampler::default();
        let t0 = Instant::now();
        assert_eq!(s.percent(7, 1000, t0), None, "no previous sample");
        // 50 ticks = 0.5 s of CPU over 2 s of wall time: 25 %.
        assert_eq!(s.percent(7, 1050, t0 + Duration::from_secs(2)), Some(25.0));
        s.retain(&[]);
        assert_eq!(s.percent(7, 2000, t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let mut s = CpuSampler::default();
        let u = s.sample(&[("agent".into(), me)], Instant::now());
        assert_eq!(u[0].pid, me);
        assert!(u[0].rss_bytes.is_some_and(|b| b > 0), "{u:?}");
    }
}
